"""The deferred-quantization switch as an Ignite handler.

At ``start`` (iterations or epochs) it runs the current encoder over the training data, collects ``num_samples``
latent vectors, and calls ``quantizer.activate(samples, init=...)``: the codebook is born from the mature encoder's
latents (k-means) and quantization starts ("Early Quantization Shrinks Codebook", arXiv 2603.17052). A multi-scale
quantizer (one with ``collect_residuals``) gets the exact residual pyramid of those latents instead: the vectors its
codes will quantize. With ``start=0`` it fires before the first iteration, on the untrained encoder: the ``kmeans_at_start`` baseline.

At the switch the optimizer state of the quantizer's parameters (the codebook and, multi-scale, the phi convolutions)
is dropped, so the quantized phase starts them with a fresh optimizer: before activation they received gradients of
exactly 0, which advance Adam's step counter while its moments stay 0, and the first updates after the switch would
then be several times a fresh Adam's and move the k-means codebook right after it is born. Latents are collected
under the engine's autocast (``TokenizerTrainer.autocast``) so the codebook is born from the latents training will
quantize (bf16 changes a few percent of the tokens otherwise). Under DDP each rank collects its share of
``num_samples`` from the images its sampler gives it, so all ranks together collect ``num_samples``.

``start="auto"`` picks the switch point from the encoder itself, the rule of "Continuous First, Discrete Later"
(arXiv 2605.06870): every ``auto_every`` (``unit``) it measures the effective dimension of the latents of a fixed
probe of training images (:func:`medvq.metrics.effective_dimension`, exp-entropy of the normalised covariance
spectrum), and switches once it has not grown by more than ``auto_tolerance`` (relative) over its best value for
``auto_patience`` checks in a row, no earlier than ``auto_min`` and at the latest at ``auto_max``. The chosen step,
the measured curve and the rule's settings go into ``engine.state.deferred_switch``, ``run_info.json``
(``run_info_dir``) and TensorBoard (``summary_writer``: ``switch/latent_effective_dim`` per check,
``switch/iteration`` once). A resumed run restarts the patience count (the curve is not checkpointed).

It fires exactly once. Whether it has fired is the quantizer's ``active`` flag, which lives in the network's state
dict: a run resumed from a checkpoint saved after the switch never fires again, and one resumed from before the switch
fires when it reaches ``start`` (or at once, if it is already past it) — never skipped, never repeated.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.optim import Optimizer

from medvq.utils.distributed import all_reduce_sum_, broadcast_, rank, unwrap_model, world_size

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
        optimizer: the optimizer whose state of the quantizer's parameters is reset at the switch; default the
            engine's ``optimizer`` attribute (MONAI trainers have one). Give it when the engine has none (a plain
            Ignite engine); without either, the handler warns that stale state is kept.
        auto_every: with ``start="auto"``, measure every this many ``unit``. Default 1.
        auto_patience: checks in a row without growth before the switch. Default 2.
        auto_tolerance: growth below ``auto_tolerance * best`` counts as none. Default 0.02.
        auto_min, auto_max: earliest and latest switch (``unit``); ``auto_max`` None means no latest. Default 1, None.
        auto_probe_images: training images (the first ones of ``data_loader``) whose latents are measured. Default 64.
        summary_writer: optional TensorBoard ``SummaryWriter`` for the switch scalars.
        run_info_dir: optional folder whose ``run_info.json`` gets a ``"switch"`` entry (rank 0 only).
        warmup_iterations: after the switch, scale every learning rate of the optimizer by ``i / N`` for the first
            ``N`` optimizer steps (``i = 1 .. N``), on top of any scheduler (through the optimizer's step hooks, which
            restore the scheduler's rate after each step). The decoder suddenly sees quantized latents at the switch,
            and full-rate steps then move the encoder's residuals away from the codes just born. 0 (default) = none.
            A run resumed inside the warm-up continues it where it stopped (see ``freeze_encoder_iterations``).
        freeze_encoder_iterations: after the switch, leave everything before the decoder (the tokenizer's
            ``encoder``, ``quant_conv`` and the quantizer's trainable parameters) unchanged by the next ``N`` optimizer
            steps (their gradients are dropped before each step, so Adam neither moves them nor updates their
            moments), so that the latents keep the distribution the codebook was born from while the decoder learns
            to read the quantized latents. An EMA codebook still follows its assigned latents. 0 (default) = none,
            -1 = until the run ends. Not applied with ``start=0`` (kmeans_at_start): that encoder has not trained
            yet, and freezing it would keep it untrained. A run resumed after the switch freezes again for the steps
            that are left: the switch's iteration is read back from ``run_info.json`` (``run_info_dir``); without it,
            ``-1`` still freezes and a count ``N`` is skipped with a warning (docs/results.md measures the recipe on
            the multi-scale tokenizer).

    After the switch, ``engine.state.deferred_switch`` holds a dict (iteration, epoch, num_samples, init, inertia,
    seconds, usage, reset_parameters, freeze_encoder_iterations and warmup_iterations as applied), which is also
    logged.
    """

    def __init__(
        self,
        network: nn.Module,
        start: int | str | None,
        unit: str = "iterations",
        num_samples: int = 65536,
        init: str = "kmeans",
        seed: int = 0,
        data_loader: Iterable | None = None,
        image_key: str = "image",
        max_batches: int | None = None,
        optimizer: Optimizer | None = None,
        auto_every: int = 1,
        auto_patience: int = 2,
        auto_tolerance: float = 0.02,
        auto_min: int = 1,
        auto_max: int | None = None,
        auto_probe_images: int = 64,
        summary_writer: Any = None,
        run_info_dir: str | None = None,
        warmup_iterations: int = 0,
        freeze_encoder_iterations: int = 0,
    ) -> None:
        if unit not in _UNITS:
            raise ValueError(f"unit must be one of {_UNITS}, got {unit!r}.")
        if start is not None and start != "auto" and (isinstance(start, bool) or not isinstance(start, int)
                                                      or start < 0):
            raise ValueError(f"start must be an integer >= 0 ({unit}), 'auto' or None, got {start!r}.")
        for name, value in (("auto_every", auto_every), ("auto_patience", auto_patience), ("auto_min", auto_min),
                            ("auto_probe_images", auto_probe_images)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if auto_max is not None and (isinstance(auto_max, bool) or not isinstance(auto_max, int)
                                     or auto_max < auto_min):
            raise ValueError(f"auto_max must be None or an integer >= auto_min ({auto_min}), got {auto_max!r}.")
        if isinstance(warmup_iterations, bool) or not isinstance(warmup_iterations, int) or warmup_iterations < 0:
            raise ValueError(f"warmup_iterations must be an integer >= 0 (0 = none), got {warmup_iterations!r}.")
        if (isinstance(freeze_encoder_iterations, bool) or not isinstance(freeze_encoder_iterations, int)
                or freeze_encoder_iterations < -1):
            raise ValueError("freeze_encoder_iterations must be an integer >= -1 (0 = none, -1 = until the run ends), "
                             f"got {freeze_encoder_iterations!r}.")
        if not 0 <= auto_tolerance < 1:
            raise ValueError(f"auto_tolerance must be in [0, 1), got {auto_tolerance!r}.")
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
        self.optimizer = optimizer
        self.auto_every = auto_every
        self.auto_patience = auto_patience
        self.auto_tolerance = float(auto_tolerance)
        self.auto_min = auto_min
        self.auto_max = auto_max
        self.auto_probe_images = auto_probe_images
        self.summary_writer = summary_writer
        self.run_info_dir = run_info_dir
        self.warmup_iterations = warmup_iterations
        self.freeze_encoder_iterations = freeze_encoder_iterations
        self._warmup_hooks: list[Any] = []
        self._freeze_hooks: list[Any] = []
        self.curve: list[tuple[int, int, float]] = []  # (iteration, progress in unit, effective dimension)
        self._probe: torch.Tensor | None = None
        self._best = -math.inf
        self._stalled = 0
        self.logger = logging.getLogger(__name__)

    @property
    def effective_freeze_iterations(self) -> int:
        """``freeze_encoder_iterations`` as applied: 0 for ``start=0`` (kmeans_at_start), whose encoder has not
        trained when the switch fires."""
        return 0 if self.start == 0 else self.freeze_encoder_iterations

    @property
    def fired(self) -> bool:
        """True once quantization is on (read from the quantizer, so it survives checkpoints)."""
        return bool(unwrap_model(self.network).quantizer.active)

    def attach(self, engine: Engine) -> None:
        """Register the switch on ``engine`` (STARTED for ``start=0``, then per iteration or per epoch).

        Raises:
            ValueError: the switch cannot fire with quantized training left in the engine's run (``max_epochs`` and,
                in iterations, ``epoch_length``): checked here when the engine knows them (MONAI trainers), else
                when the run starts.
        """
        if self.start is None:
            return
        self.check_reachable(engine)
        engine.add_event_handler(Events.STARTED, self.check_reachable)  # a plain Ignite engine knows its run now
        engine.add_event_handler(Events.STARTED, self)  # start=0, or a resumed run already past start
        engine.add_event_handler(Events.STARTED, self._resume_after_switch)  # a run resumed after the switch
        event = Events.ITERATION_COMPLETED if self.unit == "iterations" else Events.EPOCH_COMPLETED
        engine.add_event_handler(event, self)
        engine.add_event_handler(Events.COMPLETED, self._warn_if_never_fired)

    def check_reachable(self, engine: Engine) -> None:
        """Raise if the switch cannot fire before the last iteration / epoch of ``engine``'s run.

        The switch fires at the end of iteration / epoch ``start`` (``>= start``), so quantized training follows
        only when ``start`` is below the run's length; a switch at the end of the very last one would save a
        codebook that was never trained with, so that is an error too. ``"auto"`` needs ``auto_min`` and, when
        given, ``auto_max`` below the run's length. Does nothing while the run's length is unknown, for ``start=0``
        and for a quantizer that is already active.
        """
        max_epochs = getattr(engine.state, "max_epochs", None)
        epoch_length = getattr(engine.state, "epoch_length", None)
        if self.start in (None, 0) or self.fired or not max_epochs:
            return
        if self.unit == "epochs":
            total, length = max_epochs, f"the run has {max_epochs} epochs"
        elif epoch_length:
            total = max_epochs * epoch_length
            length = f"the run has {total} iterations ({max_epochs} epochs of {epoch_length})"
        else:
            return
        last = "a switch at the end of the last one would leave no quantized training"
        if self.start == "auto":
            if self.auto_min >= total:
                raise ValueError(f"deferred quantization: start='auto' with auto_min={self.auto_min} ({self.unit}) "
                                 f"cannot switch before training ends: {length}, and {last}; lower auto_min below "
                                 f"{total} or train longer.")
            if self.auto_max is not None and self.auto_max >= total:
                raise ValueError(f"deferred quantization: auto_max={self.auto_max} ({self.unit}) is not within the run "
                                 f"({length}; {last}), so the switch is not guaranteed; lower auto_max below {total}.")
        elif self.start >= total:
            raise ValueError(f"deferred quantization: start={self.start} ({self.unit}) is never reached with quantized "
                             f"training left: {length}, and {last}; use a start below {total}, train longer, or "
                             "start=None (standard) / 0 (kmeans_at_start).")

    def _warn_if_never_fired(self, engine: Engine) -> None:
        if not self.fired and rank() == 0:
            self.logger.warning(
                "deferred quantization: the run ended at iteration %d without the switch (start=%r %s): the "
                "tokenizer was never quantized.", engine.state.iteration, self.start, self.unit)

    def __call__(self, engine: Engine) -> None:
        if self.fired:
            return
        progress = engine.state.iteration if self.unit == "iterations" else engine.state.epoch
        if self.start == "auto":
            if progress < 1 or progress % self.auto_every:
                return  # STARTED (progress 0) and the steps between checks
            if not self._auto_says_switch(engine, progress):
                return
        elif progress < self.start:
            return
        self.switch(engine)

    def _images(self, batch: Any) -> torch.Tensor:
        """The image tensor of a batch (a dict keyed by ``image_key`` or a sequence), MetaTensor unwrapped."""
        images = batch[self.image_key] if isinstance(batch, dict) else batch[0]
        return images.as_tensor() if hasattr(images, "as_tensor") else images

    # ------------------------------------------------------------------------------------------- the auto rule
    @torch.no_grad()
    def latent_effective_dimension(self, engine: Engine) -> float:
        """Effective dimension of the current encoder's latents of the probe images (the first
        ``auto_probe_images`` of the data loader, fixed at the first call)."""
        from medvq.metrics.coverage import effective_dimension  # metrics imports quantizers: import late

        tokenizer = unwrap_model(self.network)
        device = next(tokenizer.parameters()).device
        if self._probe is None:
            loader = self.data_loader if self.data_loader is not None else engine.data_loader
            parts, count = [], 0
            for batch in loader:
                images = self._images(batch)
                parts.append(images.detach().float().cpu())
                count += images.shape[0]
                if count >= self.auto_probe_images:
                    break
            self._probe = torch.cat(parts)[: self.auto_probe_images]
        autocast = engine.autocast() if callable(getattr(engine, "autocast", None)) else nullcontext()
        was_training = tokenizer.training
        tokenizer.eval()
        try:
            latents = []
            for chunk in self._probe.split(16):
                with autocast:
                    z = tokenizer.encode(chunk.to(device))  # (b, D, *spatial)
                latents.append(z.float().movedim(1, -1).reshape(-1, z.shape[1]))  # (b * prod(spatial), D)
        finally:
            tokenizer.train(was_training)
        return effective_dimension(torch.cat(latents))

    def _auto_says_switch(self, engine: Engine, progress: int) -> bool:
        dim = self.latent_effective_dimension(engine)
        self.curve.append((int(engine.state.iteration), int(progress), dim))
        if self.summary_writer is not None and rank() == 0:
            self.summary_writer.add_scalar("switch/latent_effective_dim", dim, engine.state.iteration)
        grew = dim > self._best * (1.0 + self.auto_tolerance)
        self._best = max(self._best, dim)
        self._stalled = 0 if grew else self._stalled + 1
        decide = (self.auto_max is not None and progress >= self.auto_max) or (
            progress >= self.auto_min and self._stalled >= self.auto_patience)
        # rank 0 decides for all: ranks see different probe images, and every rank must enter the switch together
        flag = broadcast_(torch.tensor([float(decide)], device=next(unwrap_model(self.network).parameters()).device))
        return bool(flag.item() > 0)

    # ------------------------------------------------------------------------------------------------ the switch
    def _rank_quota(self) -> int:
        """This rank's share of ``num_samples``: the shares of all ranks add up to exactly ``num_samples``."""
        size, me = world_size(), rank()
        return self.num_samples // size + int(me < self.num_samples % size)

    def _images_per_pass(self, loader: Iterable) -> int | None:
        """Images this rank sees in one collection pass (its sampler's share, whole batches, ``max_batches``)."""
        try:
            sampler = getattr(loader, "sampler", None)
            # under a DistributedSampler len(sampler) is this rank's share; len(dataset) would be all ranks' images
            count = len(sampler) if sampler is not None else len(loader.dataset)  # type: ignore[attr-defined,arg-type]
        except (AttributeError, TypeError):
            return None
        batch_size = getattr(loader, "batch_size", None)
        if batch_size:
            if getattr(loader, "drop_last", False):
                count = (count // batch_size) * batch_size
            if self.max_batches is not None:
                count = min(count, self.max_batches * batch_size)
        return count or None

    @torch.no_grad()
    def collect_latents(self, engine: Engine) -> torch.Tensor:
        """``(n, D)`` latents of the current encoder over this rank's share of the data (n <= this rank's quota of
        ``num_samples``; the quotas of all ranks add up to ``num_samples``)."""
        tokenizer = unwrap_model(self.network)
        loader = self.data_loader if self.data_loader is not None else engine.data_loader
        device = engine.state.device if getattr(engine.state, "device", None) is not None else next(
            tokenizer.parameters()).device
        quota = self._rank_quota()
        # latents kept per image: an even share of the pass (twice the quota, subsampled below), so that every image
        # contributes (spatially neighbouring latents are correlated; many images beat many positions of a few)
        num_images = self._images_per_pass(loader)
        generator = torch.Generator().manual_seed(self.seed + 7919 * rank())  # a different subset per rank
        # the latents training quantizes: under the trainer's autocast when it has one (bf16 changes tokens)
        autocast = engine.autocast() if callable(getattr(engine, "autocast", None)) else nullcontext()
        was_training = tokenizer.training
        tokenizer.eval()
        reset_norms = getattr(tokenizer.quantizer, "reset_residual_norms", None)
        if callable(reset_norms):  # a multi-scale normalize=True quantizer: magnitudes from this pass only
            reset_norms()
        chunks, collected, batches = [], 0, 0
        try:
            for batch in loader:
                images = self._images(batch)
                with autocast:
                    latents = tokenizer.encode(images.to(device).float())  # (B, D, *spatial)
                latents = latents.float()  # as the quantizer's forward sees them (it computes in float32)
                if hasattr(tokenizer.quantizer, "collect_residuals"):
                    # multi-scale quantizer: its codes quantize the residual pyramid, not the latents themselves
                    flat = tokenizer.quantizer.collect_residuals(latents)  # (B * T, D), image by image
                    flat = flat.view(latents.shape[0], -1, latents.shape[1])  # (B, T = sum_k n_k, D)
                else:
                    flat = latents.movedim(1, -1).reshape(latents.shape[0], -1, latents.shape[1])  # (B, T, D)
                if num_images:
                    keep = min(flat.shape[1], max(1, math.ceil(2 * quota / num_images)))
                    pick = torch.rand(flat.shape[:2], generator=generator).argsort(dim=1)[:, :keep]  # (B, keep)
                    flat = torch.gather(flat, 1, pick.to(flat.device)[..., None].expand(-1, -1, flat.shape[2]))
                flat = flat.reshape(-1, flat.shape[-1]).float()  # (B * keep, D)
                chunks.append(flat)
                collected += flat.shape[0]
                batches += 1
                if self.max_batches is not None and batches >= self.max_batches:
                    break
                if num_images is None and collected >= quota:
                    break
        finally:
            tokenizer.train(was_training)
        if not chunks:
            raise RuntimeError("the deferred-quantization switch found no batches in its data loader.")
        samples = torch.cat(chunks)
        if samples.shape[0] > quota:
            subset = torch.randperm(samples.shape[0], generator=generator)[:quota]
            samples = samples[subset.to(samples.device)]
        return samples

    def _resume_after_switch(self, engine: Engine) -> None:
        """Re-install the post-switch warm-up and encoder freeze in a run resumed after the switch (the quantizer is
        active at STARTED and the engine is past iteration 0), for the optimizer steps that are left of them."""
        if not self.fired or not engine.state.iteration or (self.warmup_iterations == 0
                                                             and self.effective_freeze_iterations == 0):
            return
        if self._warmup_hooks or self._freeze_hooks:
            return  # already installed in this process (the switch fired in this run)
        optimizer = self.optimizer if self.optimizer is not None else getattr(engine, "optimizer", None)
        done = self._steps_since_switch(engine)
        freeze = self.effective_freeze_iterations
        counted = [name for name, n in (("encoder freeze", freeze), ("warm-up", self.warmup_iterations)) if n > 0]
        if done is None and counted:
            self.logger.warning(
                "deferred quantization: resumed after the switch, but its iteration is not in run_info.json "
                "(run_info_dir=%r), so the post-switch %s is not resumed.", self.run_info_dir, " and ".join(counted))
        if freeze == -1 or (freeze > 0 and done is not None and done < freeze):
            self._start_encoder_freeze(optimizer, done=done or 0)
            self.logger.info("deferred quantization: resumed after the switch; the encoder stays frozen %s.",
                             "to the end" if freeze == -1 else f"for {freeze - done} more steps")
        if self.warmup_iterations > 0 and done is not None and done < self.warmup_iterations:
            self._start_warmup(optimizer, done=done)
            self.logger.info("deferred quantization: resumed %d steps after the switch; the warm-up goes on for "
                             "%d more steps.", done, self.warmup_iterations - done)

    def _steps_since_switch(self, engine: Engine) -> int | None:
        """Optimizer steps taken since the switch (one per iteration), from the switch's iteration in run_info.json;
        None when it is not recorded."""
        if self.run_info_dir is None:
            return None
        from medvq.report.run_info import read_run_info  # report imports engines: import late

        switch = read_run_info(self.run_info_dir).get("switch")
        if not isinstance(switch, dict) or not isinstance(switch.get("iteration"), int):
            return None
        return max(0, int(engine.state.iteration) - switch["iteration"])

    def _start_warmup(self, optimizer: Optimizer | None, done: int = 0) -> None:
        """Install the warm-up hooks; ``done``: warm-up steps already taken (a resumed run)."""
        if optimizer is None:
            self.logger.warning("deferred quantization: no optimizer for the post-switch warm-up (pass optimizer=).")
            return
        steps, saved = [done], []

        def before(opt: Optimizer, args: Any, kwargs: Any) -> None:
            steps[0] += 1
            factor = min(1.0, steps[0] / self.warmup_iterations)
            saved[:] = [group["lr"] for group in opt.param_groups]
            for group in opt.param_groups:
                group["lr"] = group["lr"] * factor

        def after(opt: Optimizer, args: Any, kwargs: Any) -> None:
            for group, lr in zip(opt.param_groups, saved):
                group["lr"] = lr  # what the scheduler set, for the scheduler's next step
            if steps[0] >= self.warmup_iterations:
                for hook in self._warmup_hooks:
                    hook.remove()
                self._warmup_hooks.clear()

        self._warmup_hooks = [optimizer.register_step_pre_hook(before), optimizer.register_step_post_hook(after)]

    def _start_encoder_freeze(self, optimizer: Optimizer | None, done: int = 0) -> None:
        """Install the freeze hooks; ``done``: frozen steps already taken (a resumed run)."""
        if optimizer is None:
            self.logger.warning("deferred quantization: no optimizer for the post-switch encoder freeze (pass optimizer=).")
            return
        tokenizer = unwrap_model(self.network)
        frozen = [p for name in ("encoder", "quant_conv", "quantizer") if hasattr(tokenizer, name)
                  for p in getattr(tokenizer, name).parameters()]
        steps = [done]

        def before(opt: Optimizer, args: Any, kwargs: Any) -> None:
            for p in frozen:
                p.grad = None  # Adam (and any torch optimizer) skips a parameter without a gradient

        def after(opt: Optimizer, args: Any, kwargs: Any) -> None:
            steps[0] += 1
            if 0 < self.effective_freeze_iterations <= steps[0]:  # -1: never released
                for hook in self._freeze_hooks:
                    hook.remove()
                self._freeze_hooks.clear()

        self._freeze_hooks = [optimizer.register_step_pre_hook(before), optimizer.register_step_post_hook(after)]

    def reset_optimizer_state(self, engine: Engine) -> int:
        """Drop the optimizer state of the quantizer's parameters (they start the quantized phase as with a fresh
        optimizer); returns the number of parameters reset."""
        optimizer = self.optimizer if self.optimizer is not None else getattr(engine, "optimizer", None)
        params = list(unwrap_model(self.network).quantizer.parameters())
        if optimizer is None:
            if params:
                self.logger.warning(
                    "deferred quantization: no optimizer to reset (pass optimizer= to DeferredQuantizationHandler); "
                    "the quantizer's parameters keep the optimizer state of the continuous phase.")
            return 0
        reset = 0
        for p in params:
            if optimizer.state.pop(p, None) is not None:
                reset += 1
        return reset

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
        reset = self.reset_optimizer_state(engine)
        optimizer = self.optimizer if self.optimizer is not None else getattr(engine, "optimizer", None)
        if self.warmup_iterations > 0:
            self._start_warmup(optimizer)
        if self.effective_freeze_iterations != 0:
            self._start_encoder_freeze(optimizer)
        elif self.freeze_encoder_iterations != 0:
            self.logger.info("deferred quantization: kmeans_at_start (start=0): the encoder is not frozen "
                             "(freeze_encoder_iterations=%d applies to switches after training began).",
                             self.freeze_encoder_iterations)
        info: dict[str, Any] = {
            "iteration": engine.state.iteration,
            "epoch": engine.state.epoch,
            "num_samples": report.num_samples,
            "init": report.init,
            "inertia": report.inertia,
            "kmeans_seconds": report.seconds,
            "collect_seconds": time.perf_counter() - started - report.seconds,
            "usage": report.usage,
            "reset_parameters": reset,
            "freeze_encoder_iterations": self.effective_freeze_iterations,
            "warmup_iterations": self.warmup_iterations,
            "rule": "auto" if self.start == "auto" else "fixed",
        }
        if self.start == "auto":
            info["auto"] = {"every": self.auto_every, "patience": self.auto_patience,
                            "tolerance": self.auto_tolerance, "min": self.auto_min, "max": self.auto_max,
                            "unit": self.unit, "probe_images": self.auto_probe_images,
                            "curve": [{"iteration": i, self.unit: p, "latent_effective_dim": d}
                                      for i, p, d in self.curve]}
        engine.state.deferred_switch = info
        if rank() == 0:
            if self.summary_writer is not None:
                self.summary_writer.add_scalar("switch/iteration", info["iteration"], info["iteration"])
            if self.run_info_dir is not None:
                from medvq.report.run_info import update_run_info  # report imports engines: import late

                update_run_info(self.run_info_dir, switch=info)
        log = self.logger.info if rank() == 0 else self.logger.debug  # one line per run, not one per DDP rank
        log(
            "deferred quantization: codebook of %d codes born at iteration %d (epoch %d) from %d latents by %s in "
            "%.1f s (collecting %.1f s); usage on those latents %.3f; fresh optimizer state for %d quantizer parameters",
            quantizer.num_embeddings, info["iteration"], info["epoch"], info["num_samples"], info["init"],
            info["kmeans_seconds"], info["collect_seconds"], info["usage"], reset,
        )
        return report

