"""The deferred-quantization switch as an Ignite handler.

At ``start`` (iterations or epochs) it runs the current encoder over the training data, collects ``num_samples``
latent vectors, and calls ``quantizer.activate(samples, init=...)``: the codebook is born from the mature encoder's
latents (k-means) and quantization starts ("Early Quantization Shrinks Codebook", arXiv 2603.17052). A multi-scale
quantizer (one with ``collect_residuals``) gets the exact residual pyramid of those latents instead: the vectors its
codes will quantize. With ``start=0`` it fires before the first iteration, on the untrained encoder: the ``kmeans_at_start`` baseline.

It fires exactly once. Whether it has fired is the quantizer's ``active`` flag, which lives in the network's state
dict: a run resumed from a checkpoint saved after the switch never fires again, and one resumed from before the switch
fires when it reaches ``start`` (or at once, if it is already past it) — never skipped, never repeated.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from medvq.utils.distributed import all_reduce_sum_, rank, unwrap_model, world_size

if TYPE_CHECKING:
    from medvq.quantizers import ActivationReport

__all__ = ["DeferredQuantizationHandler"]

_UNITS = ("iterations", "epochs")



class DeferredQuantizationHandler:
    """Switch a tokenizer's quantizer on at ``start``, with a codebook born from the current encoder's latents.

    Args:
        network: the tokenizer (possibly DDP-wrapped) exposing ``encode(images) -> (B, D, *spatial)`` latents and a
            ``quantizer`` with ``active`` and ``activate(samples, init, seed)``
            (:class:`medvq.quantizers.VectorQuantizer`).
        start: when to switch, in ``unit``; 0 switches before the first iteration (``kmeans_at_start``); None never
            switches (the ``standard`` schedule, which quantizes from step 0 with a random codebook).
        unit: ``"iterations"`` (checked after every iteration) or ``"epochs"`` (after every epoch).
        num_samples: latent vectors handed to k-means (over all ranks). Must be >= the codebook size. Default 65536.
        init: ``"kmeans"`` (default) or ``"samples"``, see ``VectorQuantizer.activate``.
        seed: seed of the sample subset and of k-means.
        data_loader: where the latents come from; default the engine's training data loader.
        image_key: key of the images in a batch. Default ``"image"``.
        max_batches: stop collecting after this many batches per rank; default: one pass over ``data_loader``.

    After the switch, ``engine.state.deferred_switch`` holds a dict (iteration, epoch, num_samples, init, inertia,
    seconds, usage), which is also logged.
    """

    def __init__(
        self,
        network: nn.Module,
        start: int | None,
        unit: str = "iterations",
        num_samples: int = 65536,
        init: str = "kmeans",
        seed: int = 0,
        data_loader: Iterable | None = None,
        image_key: str = "image",
        max_batches: int | None = None,
    ) -> None:
        if unit not in _UNITS:
            raise ValueError(f"unit must be one of {_UNITS}, got {unit!r}.")
        if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
            raise ValueError(f"start must be an integer >= 0 ({unit}) or None, got {start!r}.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples!r}.")
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {max_batches!r}.")
        if init not in ("kmeans", "samples"):
            raise ValueError(f"init must be 'kmeans' or 'samples', got {init!r}.")
        self.network = network
        self.start = start
        self.unit = unit
        self.num_samples = int(num_samples)
        self.init = init
        self.seed = int(seed)
        self.data_loader = data_loader
        self.image_key = image_key
        self.max_batches = max_batches
        self.logger = logging.getLogger(__name__)

    @property
    def fired(self) -> bool:
        """True once quantization is on (read from the quantizer, so it survives checkpoints)."""
        return bool(unwrap_model(self.network).quantizer.active)

    def attach(self, engine: Engine) -> None:
        """Register the switch on ``engine`` (STARTED for ``start=0``, then per iteration or per epoch)."""
        if self.start is None:
            return
        engine.add_event_handler(Events.STARTED, self)  # start=0, or a resumed run already past start
        event = Events.ITERATION_COMPLETED if self.unit == "iterations" else Events.EPOCH_COMPLETED
        engine.add_event_handler(event, self)

    def __call__(self, engine: Engine) -> None:
        if self.fired:
            return
        progress = engine.state.iteration if self.unit == "iterations" else engine.state.epoch
        if progress < self.start:
            return
        self.switch(engine)

    # ------------------------------------------------------------------------------------------------ the switch
    @torch.no_grad()
    def collect_latents(self, engine: Engine) -> torch.Tensor:
        """``(n, D)`` latents of the current encoder over this rank's share of the data (n <= num_samples / ranks)."""
        tokenizer = unwrap_model(self.network)
        loader = self.data_loader if self.data_loader is not None else engine.data_loader
        device = engine.state.device if getattr(engine.state, "device", None) is not None else next(
            tokenizer.parameters()).device
        per_rank = math.ceil(self.num_samples / world_size())
        # latents kept per image: an even share of the pass, so that every image contributes (spatially
        # neighbouring latents are correlated; many images beat many positions of a few images)
        try:
            num_images = len(loader.dataset)  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            num_images = None
        generator = torch.Generator().manual_seed(self.seed + 7919 * rank())  # a different subset per rank
        was_training = tokenizer.training
        tokenizer.eval()
        chunks, collected, batches = [], 0, 0
        try:
            for batch in loader:
                images = batch[self.image_key] if isinstance(batch, dict) else batch[0]
                images = images.as_tensor() if hasattr(images, "as_tensor") else images
                latents = tokenizer.encode(images.to(device).float())  # (B, D, *spatial)
                if hasattr(tokenizer.quantizer, "collect_residuals"):
                    # multi-scale quantizer: its codes quantize the residual pyramid, not the latents themselves
                    flat = tokenizer.quantizer.collect_residuals(latents)  # (B * T, D), image by image
                    flat = flat.view(latents.shape[0], -1, latents.shape[1])  # (B, T = sum_k n_k, D)
                else:
                    flat = latents.movedim(1, -1).reshape(latents.shape[0], -1, latents.shape[1])  # (B, T, D)
                if num_images:
                    keep = min(flat.shape[1], max(1, math.ceil(2 * per_rank / num_images)))
                    pick = torch.rand(flat.shape[:2], generator=generator).argsort(dim=1)[:, :keep]  # (B, keep)
                    flat = torch.gather(flat, 1, pick.to(flat.device)[..., None].expand(-1, -1, flat.shape[2]))
                flat = flat.reshape(-1, flat.shape[-1]).float()  # (B * keep, D)
                chunks.append(flat)
                collected += flat.shape[0]
                batches += 1
                if self.max_batches is not None and batches >= self.max_batches:
                    break
                if num_images is None and collected >= per_rank:
                    break
        finally:
            tokenizer.train(was_training)
        if not chunks:
            raise RuntimeError("the deferred-quantization switch found no batches in its data loader.")
        samples = torch.cat(chunks)
        if samples.shape[0] > per_rank:
            subset = torch.randperm(samples.shape[0], generator=generator)[:per_rank]
            samples = samples[subset.to(samples.device)]
        return samples

    def switch(self, engine: Engine) -> ActivationReport:
        """Collect latents and activate the quantizer now (called by the handler at ``start``)."""
        quantizer = unwrap_model(self.network).quantizer
        started = time.perf_counter()
        samples = self.collect_latents(engine)
        total = all_reduce_sum_(torch.tensor([samples.shape[0]], device=samples.device)).item()
        if total < quantizer.num_embeddings:
            raise ValueError(
                f"the deferred-quantization switch collected {total} latents but the codebook has "
                f"{quantizer.num_embeddings} codes: raise num_samples, use more data or larger images, or a smaller "
                "num_embeddings."
            )
        report = quantizer.activate(samples, init=self.init, seed=self.seed)
        info: dict[str, Any] = {
            "iteration": engine.state.iteration,
            "epoch": engine.state.epoch,
            "num_samples": report.num_samples,
            "init": report.init,
            "inertia": report.inertia,
            "kmeans_seconds": report.seconds,
            "collect_seconds": time.perf_counter() - started - report.seconds,
            "usage": report.usage,
        }
        engine.state.deferred_switch = info
        self.logger.info(
            "deferred quantization: codebook of %d codes born at iteration %d (epoch %d) from %d latents by %s in "
            "%.1f s (collecting %.1f s); usage on those latents %.3f",
            quantizer.num_embeddings, info["iteration"], info["epoch"], info["num_samples"], info["init"],
            info["kmeans_seconds"], info["collect_seconds"], info["usage"],
        )
        return report

