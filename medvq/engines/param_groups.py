"""Optimizer parameter groups of a tokenizer: the codebook may learn at its own rate.

Why: after a deferred switch the k-means codebook is already where the residuals are; a codebook that learns at the
autoencoder's rate drifts with the shrinking residuals (docs/results.md), and a codebook learning rate of 0 keeps the
born codebook as it is while the encoder and phi adapt to it (the frozen-codebook idea of VQGAN-LC, Zhu et al. 2024,
without its pre-trained features). MONAI and Ignite have no helper for per-parameter learning rates.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medvq.utils.distributed import unwrap_model

__all__ = ["tokenizer_parameter_groups"]


def tokenizer_parameter_groups(network: nn.Module, lr: float, codebook_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Two Adam groups: every parameter but the codebook at ``lr``, the codebook at ``lr * codebook_lr_scale``.

    Args:
        network: a tokenizer whose ``quantizer.codebook`` is a parameter's value (:class:`~medvq.networks.VQGANTokenizer`
            or :class:`~medvq.networks.MultiScaleVQGANTokenizer`), possibly DDP-wrapped.
        lr: the tokenizer's learning rate (> 0).
        codebook_lr_scale: factor on ``lr`` for the codebook, >= 0; 0 freezes the codebook (the born one under the
            deferred schedule). Default 1 (one rate for all, as VAR and taming).

    Returns:
        ``[{"params": others, "lr": lr}, {"params": [codebook], "lr": lr * codebook_lr_scale}]`` (schedulers such as
        ``LinearLR`` scale each group from its own ``lr``).
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}.")
    if not codebook_lr_scale >= 0:
        raise ValueError(f"codebook_lr_scale must be >= 0 (0 freezes the codebook), got {codebook_lr_scale!r}.")
    model = unwrap_model(network)
    quantizer = model.quantizer
    codes = getattr(quantizer, "codes", quantizer)  # a multi-scale quantizer keeps its codebook in .codes
    codebook = codes.weight
    others = [p for p in model.parameters() if p is not codebook]
    return [{"params": others, "lr": float(lr)}, {"params": [codebook], "lr": float(lr) * float(codebook_lr_scale)}]
