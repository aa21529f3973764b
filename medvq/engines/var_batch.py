"""Prepare-batch of the stage-2 (VAR) trainer: a batch -> teacher-forcing input, target tokens and the condition.

MONAI's ``SupervisedTrainer`` calls ``prepare_batch(batch, device, non_blocking)`` and then
``inferer(inputs, network, *args)`` and ``loss_function(pred, targets)``; this class returns
``(x, tokens, (condition,), {})`` so the VAR transformer is called as ``network(x, condition)`` and the loss compares
its ``(B, L, V)`` logits with the ``(B, L)`` token sequence.

The tokens come from one of two places, chosen per batch by what the batch holds:

1. ``tokens_key`` (``(B, L)`` int64, coarse scale first): tokens pre-computed once by
   :func:`medvq.data.tokenize_datalist` with the frozen stage-1 tokenizer (the default of the ``odir_var`` bundle:
   ``benchmarks/var_prepare_batch.py`` measures it faster, since the encoder never runs during stage 2);
2. ``image_key``: images tokenized on the fly by the frozen tokenizer (needed when random augmentation must reach the
   tokens).

Either way the teacher-forcing input is computed here from the tokens with the tokenizer's quantizer
(:meth:`~medvq.quantizers.MultiScaleResidualQuantizer.teacher_forcing_input`), so the transformer learns from exactly
the inputs it will see when sampling.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.engines.utils import PrepareBatch
from torch import nn

from medvq.utils.distributed import unwrap_model

__all__ = ["VARPrepareBatch", "condition_matrix"]


def condition_matrix(condition: Any, num_conditions: int | None, key: str = "label") -> torch.Tensor:
    """A batch's conditions as the ``(B, C)`` float matrix the generator takes.

    ``(B, C)`` vectors (ODIR's multi-hot labels) pass as they are; with ``num_conditions``, ``(B,)`` class indices
    (integers, or integral floats as :func:`medvq.data.tokenize_datalist` stores them) are one-hot encoded.

    Raises:
        ValueError: indices outside ``[0, num_conditions)`` or not integral, or another shape (the message names
            ``key``).
    """
    if isinstance(condition, torch.Tensor) and condition.ndim == 1 and num_conditions is not None:
        index = condition.long()
        if not torch.equal(index.to(condition.dtype), condition) or index.min() < 0 or index.max() >= num_conditions:
            raise ValueError(
                f"class-index condition {key!r} must hold integers in [0, {num_conditions}) (num_conditions), got "
                f"{condition.tolist()[:8]}."
            )
        return torch.nn.functional.one_hot(index, num_conditions).float()
    if not isinstance(condition, torch.Tensor) or condition.ndim != 2:
        raise ValueError(
            f"condition {key!r} must be a (B, num_conditions) tensor{' or (B,) class indices' if num_conditions else ''}"
            f", got {type(condition).__name__}{tuple(condition.shape) if isinstance(condition, torch.Tensor) else ''}"
            " (a list of floats per item collates to a list of tensors: add EnsureTyped(keys='label') to the "
            "transforms)."
        )
    return condition


class VARPrepareBatch(PrepareBatch):
    """``batch -> (x (B, L - n_0, D), tokens (B, L), (condition (B, C),), {})`` for ``SupervisedTrainer``.

    Args:
        tokenizer: the trained stage-1 :class:`~medvq.networks.MultiScaleVQGANTokenizer` (frozen here: eval mode, no
            gradients; it must already be on the training device).
        condition_key: key of the ``(B, C)`` multi-hot condition (ODIR's 8 labels; one-hot for single-class data).
            Default ``"label"`` (the ODIR datalists' key).
        tokens_key: key of pre-computed ``(B, L)`` token sequences. Default ``"tokens"``.
        image_key: key of images to tokenize when a batch holds no ``tokens_key``. Default ``"image"``.
        num_conditions: the generator's number of conditions C, for class-index labels: a ``(B,)`` integer (or
            integral float) condition is one-hot encoded to ``(B, C)``; with ``num_conditions=1`` a batch without
            ``condition_key`` is one class (an unconditional generator with a null embedding for guidance).
            Default None: conditions must be ``(B, C)`` vectors (ODIR's multi-hot labels).

    Raises:
        TypeError: ``tokenizer`` is not multi-scale.
        ValueError: its quantizer is not active (saved before the deferred switch).

    Raises (when called):
        KeyError: the batch holds neither tokens nor images, or no condition (the message lists its keys).
        ValueError: tokens of the wrong length, or a condition that is not a ``(B, C)`` tensor.
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        condition_key: str = "label",
        tokens_key: str = "tokens",
        image_key: str = "image",
        num_conditions: int | None = None,
    ) -> None:
        if num_conditions is not None and (isinstance(num_conditions, bool) or not isinstance(num_conditions, int)
                                           or num_conditions < 1):
            raise ValueError(f"num_conditions must be None or an integer >= 1, got {num_conditions!r}.")
        inner = unwrap_model(tokenizer)
        if not hasattr(getattr(inner, "quantizer", None), "teacher_forcing_input"):
            raise TypeError(
                f"tokenizer must be a multi-scale tokenizer (e.g. medvq.networks.MultiScaleVQGANTokenizer) whose "
                f"quantizer has teacher_forcing_input, got {type(inner).__name__}."
            )
        if not bool(inner.quantizer.active):
            raise ValueError(
                "the tokenizer's quantizer is not active (its checkpoint was saved before the deferred switch): its "
                "tokens would index an untrained codebook. Train stage 1 past quantize_start, or load a later "
                "checkpoint (--tokenizer_checkpoint)."
            )
        self.tokenizer = inner.requires_grad_(False)
        self.condition_key = condition_key
        self.tokens_key = tokens_key
        self.image_key = image_key
        self.num_conditions = num_conditions

    def _condition(self, batchdata: dict[str, Any]) -> torch.Tensor:
        """The ``(B, C)`` float condition of a batch (module doc: vectors, class indices, or one class)."""
        if self.condition_key not in batchdata:
            if self.num_conditions == 1:
                first = batchdata.get(self.tokens_key, batchdata.get(self.image_key))
                if first is not None:
                    return torch.ones(len(first), 1)
            raise KeyError(f"the batch has no condition {self.condition_key!r} (condition_key); keys: "
                           f"{sorted(batchdata)}.")
        return condition_matrix(batchdata[self.condition_key], self.num_conditions, self.condition_key)

    @property
    def quantizer(self) -> nn.Module:
        return self.tokenizer.quantizer

    @torch.no_grad()
    def tokens_of(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token sequences of images (frozen tokenizer, eval mode, float32)."""
        self.tokenizer.eval()
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        return self.quantizer.flatten_indices(self.tokenizer.encode_to_indices(images.float()))

    def __call__(
        self, batchdata: dict[str, Any], device: str | torch.device | None = None, non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor], dict]:
        condition = self._condition(batchdata).to(device=device, dtype=torch.float32, non_blocking=non_blocking)
        if self.tokens_key in batchdata:
            tokens = torch.as_tensor(batchdata[self.tokens_key]).to(device=device, non_blocking=non_blocking).long()
        elif self.image_key in batchdata:
            tokens = self.tokens_of(batchdata[self.image_key].to(device=device, non_blocking=non_blocking))
        else:
            raise KeyError(f"the batch holds neither {self.tokens_key!r} (pre-computed tokens) nor "
                           f"{self.image_key!r} (images to tokenize); keys: {sorted(batchdata)}.")
        total = sum(self.quantizer.scale_lengths)
        if tokens.ndim != 2 or tokens.shape[1] != total:
            raise ValueError(f"tokens must be (B, {total}) sequences for the tokenizer's scales "
                             f"{self.quantizer.scales}, got {tuple(tokens.shape)}.")
        with torch.no_grad():
            x = self.quantizer.teacher_forcing_input(self.quantizer.unflatten_indices(tokens))  # (B, L - n_0, D)
        return x.float(), tokens, (condition,), {}
