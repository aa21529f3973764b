"""VQGAN adversarial terms: a PatchGAN discriminator (MONAI), hinge / least-squares losses (MONAI), adaptive weight.

The adaptive weight is VQGAN's (Esser et al. 2021, eq. 7, taming-transformers ``calculate_adaptive_weight``):
``lambda = ||grad_L(L_rec)|| / (||grad_L(L_gan)|| + delta)`` at the decoder's last layer ``L``, clamped to
``[0, 1e4]`` and detached, so the adversarial gradient never swamps the reconstruction gradient at the output.

Why not MONAI's ``PatchAdversarialLoss``: it squashes the logits before the loss (``tanh`` for hinge, a leaky ReLU for
least squares), so its "hinge" is ``relu(1 - tanh(D(x)))``, which never reaches 0 and is not VQGAN's loss. The terms
here are the plain ones of taming-transformers ``vqperceptual.py``: hinge ``relu(1 - D(x)) + relu(1 + D(x_hat))``
(generator ``-D(x_hat)``), least squares ``(D(x) - 1)^2 + D(x_hat)^2`` (generator ``(D(x_hat) - 1)^2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import nn

__all__ = ["build_discriminator", "generator_loss", "discriminator_loss", "adaptive_adversarial_weight"]

_CRITERIA = ("hinge", "least_squares")


def build_discriminator(
    spatial_dims: int = 2, in_channels: int = 3, channels: int = 64, num_layers: int = 3, norm: str = "BATCH"
) -> PatchDiscriminator:
    """MONAI's PatchGAN discriminator with VQGAN's sizes (64 base channels, 3 layers, LeakyReLU 0.2).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: channels of the first layer, doubled per layer. Default 64.
        num_layers: strided layers. Default 3 (70x70 receptive field in 2D).
        norm: normalisation of MONAI's ``Convolution`` blocks. Default ``"BATCH"`` (as VQGAN).
    """
    return PatchDiscriminator(
        spatial_dims=spatial_dims, num_layers_d=num_layers, channels=channels, in_channels=in_channels,
        out_channels=1, norm=norm,
    )


def _check(criterion: str) -> None:
    if criterion not in _CRITERIA:
        raise ValueError(f"adversarial criterion must be one of {_CRITERIA}, got {criterion!r}.")


def _logits(discriminator_output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    # MONAI's PatchDiscriminator returns the list of intermediate features; the last element is the logit map
    return discriminator_output[-1] if isinstance(discriminator_output, (list, tuple)) else discriminator_output


def generator_loss(fake_output: torch.Tensor | list[torch.Tensor], criterion: str = "hinge") -> torch.Tensor:
    """Adversarial loss of the generator: hinge ``-mean(D(x_hat))``, least squares ``mean((D(x_hat) - 1)^2)``."""
    _check(criterion)
    fake = _logits(fake_output).float()
    return -fake.mean() if criterion == "hinge" else (fake - 1).square().mean()


def discriminator_loss(
    real_output: torch.Tensor | list[torch.Tensor], fake_output: torch.Tensor | list[torch.Tensor], criterion: str = "hinge"
) -> torch.Tensor:
    """``0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat))))`` (hinge) or ``0.5 * (mean((D(x) - 1)^2) +
    mean(D(x_hat)^2))`` (least squares)."""
    _check(criterion)
    real, fake = _logits(real_output).float(), _logits(fake_output).float()
    if criterion == "hinge":
        return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    return 0.5 * ((real - 1).square().mean() + fake.square().mean())


def adaptive_adversarial_weight(
    reconstruction_loss: torch.Tensor, adversarial_loss: torch.Tensor, last_layer: nn.Parameter, delta: float = 1e-4,
    max_weight: float = 1e4,
) -> torch.Tensor:
    """VQGAN's ``||grad_L(L_rec)|| / (||grad_L(L_gan)|| + delta)`` at ``last_layer``, clamped and detached.

    Both losses must still hold their graphs (the gradients are taken with ``retain_graph=True``).
    """
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (adv_grad.float().norm() + delta)
    return weight.clamp(0.0, max_weight).detach()
