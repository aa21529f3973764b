"""Validation engine of a tokenizer: reconstructions, token indices and latents of every batch.

MONAI's ``SupervisedEvaluator`` returns only the network's prediction; coverage metrics also need the token indices
and the continuous latents, so this evaluator runs ``forward(x, return_output=True)`` and returns all of them as
batch-first tensors (no decollation): PSNR/SSIM handlers read ``pred``/``image``, ``CodebookCoverage`` reads
``indices``/``latents``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import Evaluator
from monai.engines.utils import default_prepare_batch
from monai.inferers import Inferer, SimpleInferer
from monai.utils.enums import StrEnum
from torch import nn

from medvq.utils.distributed import unwrap_model

__all__ = ["TokenizerEvalKeys", "TokenizerEvaluator"]


class TokenizerEvalKeys(StrEnum):
    """Keys of the dict a :class:`TokenizerEvaluator` iteration returns (``engine.state.output``)."""

    IMAGE = "image"  # (B, C, *spatial) input in [-1, 1]
    PRED = "pred"  # (B, C, *spatial) reconstruction, clamped to [-1, 1]
    INDICES = "indices"  # (B, *tokens) int64; multi-scale: (B, L) token sequence, coarse scale first
    LATENTS = "latents"  # (B, D, *tokens) continuous encoder latents; multi-scale: (B * L, D) matched residuals


class TokenizerEvaluator(Evaluator):
    """Run a tokenizer over a validation set in eval mode, without gradients.

    Args:
        device: evaluation device.
        val_data_loader: iterable of batches (dicts with ``image_key``).
        network: the tokenizer (possibly DDP-wrapped; the inner module is used).
        image_key: key of the images in a batch. Default ``"image"``.
        amp: autocast with bfloat16 during the forward pass. Default False.
        epoch_length, non_blocking, prepare_batch: as MONAI's ``Evaluator``.
        key_val_metric, additional_metrics, val_handlers: MONAI metric dicts and handlers.
        inferer: MONAI inferer that runs the tokenizer; it is called as ``inferer(images, tokenizer,
            return_output=True)`` and must return the tokenizer's full output. Default ``SimpleInferer()``.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        network: nn.Module,
        image_key: str = "image",
        amp: bool = False,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        key_val_metric: dict | None = None,
        additional_metrics: dict | None = None,
        val_handlers: Sequence | None = None,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            val_handlers=val_handlers,
            amp=False,  # this evaluator owns its autocast (device-agnostic, bf16)
            decollate=False,
        )
        self.network = network
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.image_key = image_key
        self.use_amp = bool(amp)
        self.autocast_device = torch.device(device).type

    def _iteration(self, engine: TokenizerEvaluator, batchdata: dict[str, Any]) -> dict[str, torch.Tensor]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        images = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[0]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        tokenizer = unwrap_model(engine.network)
        was_training = tokenizer.training
        tokenizer.eval()
        try:
            with torch.no_grad(), torch.autocast(engine.autocast_device, dtype=torch.bfloat16, enabled=engine.use_amp):
                output = engine.inferer(images, tokenizer, return_output=True)
        finally:
            tokenizer.train(was_training)
        indices, latents = output.quantizer.indices, output.latents.float()
        if isinstance(indices, (list, tuple)):
            # multi-scale quantizer: one (B, L) token sequence, and the residual each token was matched against
            # (coverage and shrinkage then compare the codebook with what it quantizes, as for one scale)
            quantizer = tokenizer.quantizer
            with torch.no_grad():
                latents = quantizer.collect_residuals(latents)  # (B * L, D), image by image
            indices = quantizer.flatten_indices(indices)  # (B, L)
        return {
            TokenizerEvalKeys.IMAGE: images.float(),
            TokenizerEvalKeys.PRED: output.reconstruction.float().clamp(-1.0, 1.0),
            TokenizerEvalKeys.INDICES: indices,
            TokenizerEvalKeys.LATENTS: latents,
        }
