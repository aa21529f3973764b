"""Tokenizer losses: reconstruction (+ optional perceptual) and the VQGAN adversarial terms."""

from medvq.losses.adversarial import (
    adaptive_adversarial_weight,
    build_discriminator,
    discriminator_loss,
    generator_loss,
)
from medvq.losses.next_scale import NextScaleLoss
from medvq.losses.reconstruction import ReconstructionLoss, ReconstructionTerms, build_perceptual_loss

__all__ = [
    "NextScaleLoss",
    "ReconstructionLoss",
    "ReconstructionTerms",
    "adaptive_adversarial_weight",
    "build_discriminator",
    "build_perceptual_loss",
    "discriminator_loss",
    "generator_loss",
]
