"""Evaluation engine of a next-scale generator: for every real batch, generate as many images with the same
conditions.

Each iteration takes a batch of real images and their condition vectors, tokenizes the real images with the frozen
tokenizer, and samples one image per real image with the same condition (so the generated set has the real set's label
mix, as class-conditional g-FID requires). It returns batch-first tensors (no decollation):

- ``image``: real images in [-1, 1]; ``pred``: generated images in [-1, 1] -> :class:`~medvq.metrics.FID` reads
  ``(pred, image)`` for g-FID;
- ``tokens``: generated ``(B, L)`` token sequences and ``real_tokens``: the real images' tokens ->
  :class:`~medvq.metrics.ScaleCoverage` / :class:`~medvq.metrics.CodebookCoverage` (generated-token perplexity is the
  paper's ODIR number);
- ``label``: the conditions.

Every batch is sampled with its own seeded ``torch.Generator`` (``seed + iteration``), so an evaluation is repeatable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import Evaluator
from monai.engines.utils import default_prepare_batch
from monai.utils.enums import StrEnum
from torch import nn

from medvq.engines.var_batch import condition_matrix
from medvq.networks.var_sampling import sample_var
from medvq.utils.distributed import rank, unwrap_model

__all__ = ["GeneratorEvalKeys", "GeneratorEvaluator"]


class GeneratorEvalKeys(StrEnum):
    """Keys of the dict a :class:`GeneratorEvaluator` iteration returns."""

    IMAGE = "image"  # (B, C, *spatial) real images in [-1, 1]
    PRED = "pred"  # (B, C, *spatial) generated images in [-1, 1]
    TOKENS = "tokens"  # (B, L) generated token sequences
    REAL_TOKENS = "real_tokens"  # (B, L) token sequences of the real images
    LABEL = "label"  # (B, num_conditions) conditions


class GeneratorEvaluator(Evaluator):
    """Generate one image per real image, with its condition, and return both sets for the metrics.

    Args:
        device: evaluation device.
        val_data_loader: batches of real images (``image_key``) and conditions (``condition_key``, ``(B, C)``, or
            ``(B,)`` class indices, one-hot encoded to the generator's ``num_conditions``).
        generator: the :class:`~medvq.networks.VARTransformer` (possibly DDP-wrapped).
        tokenizer: the :class:`~medvq.networks.MultiScaleVQGANTokenizer` it was trained on.
        image_key: key of the real images. Default ``"image"``.
        condition_key: key of the conditions. Default ``"label"``.
        guidance, guidance_ramp, top_k, top_p, temperature, use_kv_cache: sampling settings of
            :func:`~medvq.networks.sample_var`. Defaults: VAR's FID settings (guidance 2.5 = VAR's cfg 1.5, linear
            ramp, top-k 900, top-p 0.96).
        seed: base seed; batch ``i`` is sampled with ``seed + i`` (+ a rank offset under DDP).
        epoch_length, non_blocking, prepare_batch, key_val_metric, additional_metrics, val_handlers: as MONAI's
            ``Evaluator``.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        generator: nn.Module,
        tokenizer: nn.Module,
        image_key: str = "image",
        condition_key: str = "label",
        guidance: float = 2.5,
        guidance_ramp: str = "linear",
        top_k: int = 900,
        top_p: float = 0.96,
        temperature: float = 1.0,
        use_kv_cache: bool = True,
        seed: int = 0,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        key_val_metric: dict | None = None,
        additional_metrics: dict | None = None,
        val_handlers: Sequence | None = None,
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
            amp=False,
            decollate=False,
        )
        self.generator = generator
        self.tokenizer = tokenizer
        self.image_key = image_key
        self.condition_key = condition_key
        self.sampling = {"guidance": float(guidance), "guidance_ramp": guidance_ramp, "top_k": int(top_k),
                         "top_p": float(top_p), "temperature": float(temperature), "use_kv_cache": bool(use_kv_cache)}
        self.seed = int(seed)

    def _iteration(self, engine: GeneratorEvaluator, batchdata: dict[str, Any]) -> dict[str, torch.Tensor]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        for key in (engine.image_key, engine.condition_key):
            if key not in batchdata:
                raise KeyError(f"the evaluation batch has no {key!r}; keys: {sorted(batchdata)}.")
        device = engine.state.device
        images = batchdata[engine.image_key]
        images = (images.as_tensor() if hasattr(images, "as_tensor") else images).to(device).float()
        var, tokenizer = unwrap_model(engine.generator), unwrap_model(engine.tokenizer)
        # (B, C) vectors, or (B,) class indices one-hot encoded for the generator's conditions
        condition = condition_matrix(torch.as_tensor(batchdata[engine.condition_key]),
                                     getattr(var, "num_conditions", None), engine.condition_key).to(device).float()
        modes = (var.training, tokenizer.training)
        var.eval()
        tokenizer.eval()
        quantizer = tokenizer.quantizer
        # seed per batch (and rank): repeatable evaluations, different draws on every batch
        rng = torch.Generator(device=device).manual_seed(engine.seed + engine.state.iteration + 1_000_003 * rank())
        try:
            with torch.no_grad():
                real_tokens = quantizer.flatten_indices(tokenizer.encode_to_indices(images))
                maps = sample_var(var, quantizer, condition, num_samples=images.shape[0], generator=rng,
                                  **engine.sampling)
                generated = tokenizer.decode_indices(maps).float().clamp(-1.0, 1.0)
        finally:
            var.train(modes[0])
            tokenizer.train(modes[1])
        return {
            GeneratorEvalKeys.IMAGE: images,
            GeneratorEvalKeys.PRED: generated,
            GeneratorEvalKeys.TOKENS: quantizer.flatten_indices(maps),
            GeneratorEvalKeys.REAL_TOKENS: real_tokens,
            GeneratorEvalKeys.LABEL: condition,
        }
