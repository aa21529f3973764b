"""Reconstruction loss of a tokenizer: L1 (+ optional L2) plus an optional perceptual term from local weights.

The perceptual term is MONAI's :class:`monai.losses.PerceptualLoss` with a torchvision ResNet-50 whose weights come
from a local file (``pretrained_path``): clinical machines are often offline, so nothing is downloaded. Configs that
must run offline set ``perceptual_weight`` to 0, which builds no network at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ReconstructionTerms", "ReconstructionLoss", "build_perceptual_loss"]


class ReconstructionTerms(NamedTuple):
    """Weighted terms of :class:`ReconstructionLoss` (each a scalar tensor; ``total`` is their sum)."""

    total: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor
    perceptual: torch.Tensor


def build_perceptual_loss(
    spatial_dims: int, weights_path: str | Path | None, state_dict_key: str | None = None
) -> nn.Module:
    """MONAI's ``PerceptualLoss`` (torchvision ResNet-50 features) with weights read from a local file.

    Args:
        spatial_dims: 2, or 3 (then the 2.5D "fake 3D" slices of MONAI's implementation are used).
        weights_path: local file with the ResNet-50 state dict (config key ``perceptual_weights``).
        state_dict_key: key of the state dict inside the file, if nested.

    Raises:
        FileNotFoundError: ``weights_path`` is empty or missing; the message names the file and the config keys.
        ImportError: torchvision is not installed (MONAI's ResNet-50 perceptual network needs it).
    """
    if not weights_path or not Path(weights_path).is_file():
        raise FileNotFoundError(
            f"perceptual loss weights not found: {weights_path!r}. Set the config key 'perceptual_weights' to a local "
            "torchvision ResNet-50 state-dict file (e.g. resnet50 ImageNet weights saved with torch.save), or set "
            "'perceptual_weight' to 0 to train without the perceptual term. medvq never downloads weights."
        )
    try:
        import torchvision  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the perceptual loss needs torchvision (MONAI's ResNet-50 perceptual network); install a torchvision "
            "that matches your torch, or set 'perceptual_weight' to 0."
        ) from error
    from monai.losses import PerceptualLoss

    return PerceptualLoss(
        spatial_dims=spatial_dims,
        network_type="resnet50",
        is_fake_3d=spatial_dims == 3,
        pretrained=True,
        pretrained_path=str(weights_path),
        pretrained_state_dict_key=state_dict_key,
    )


class ReconstructionLoss(nn.Module):
    """``l1_weight * |x - x_hat| + l2_weight * (x - x_hat)^2 + perceptual_weight * P(x_hat, x)``, means over elements.

    Args:
        spatial_dims: 2 or 3, used by the perceptual network.
        l1_weight: weight of the mean absolute error. Default 1.0 (VQGAN).
        l2_weight: weight of the mean squared error. Default 0.0.
        perceptual_weight: weight of the perceptual term. Default 0.0 (no network is built).
        perceptual_weights: local weights file of the perceptual network; required when ``perceptual_weight > 0``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        l1_weight: float = 1.0,
        l2_weight: float = 0.0,
        perceptual_weight: float = 0.0,
        perceptual_weights: str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("l1_weight", l1_weight), ("l2_weight", l2_weight), ("perceptual_weight", perceptual_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")
        if l1_weight + l2_weight + perceptual_weight == 0:
            raise ValueError("at least one of l1_weight, l2_weight, perceptual_weight must be > 0.")
        self.l1_weight, self.l2_weight, self.perceptual_weight = float(l1_weight), float(l2_weight), float(perceptual_weight)
        self.perceptual = (
            build_perceptual_loss(spatial_dims, perceptual_weights) if perceptual_weight > 0 else None
        )
        if self.perceptual is not None:
            self.perceptual.requires_grad_(False)

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> ReconstructionTerms:
        """Weighted terms for a reconstruction and its target of the same shape ``(B, C, *spatial)``."""
        if reconstruction.shape != target.shape:
            raise ValueError(
                f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} must have the same shape."
            )
        zero = reconstruction.new_zeros((), dtype=torch.float32)
        rec, tgt = reconstruction.float(), target.float()
        l1 = self.l1_weight * F.l1_loss(rec, tgt) if self.l1_weight else zero
        l2 = self.l2_weight * F.mse_loss(rec, tgt) if self.l2_weight else zero
        perceptual = self.perceptual_weight * self.perceptual(rec, tgt).mean() if self.perceptual is not None else zero
        return ReconstructionTerms(l1 + l2 + perceptual, l1, l2, perceptual)
