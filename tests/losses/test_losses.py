"""Reconstruction terms, VQGAN adversarial losses on MONAI's PatchDiscriminator, VQGAN's adaptive weight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvq.losses import (
    ReconstructionLoss,
    adaptive_adversarial_weight,
    build_discriminator,
    build_perceptual_loss,
    discriminator_loss,
    generator_loss,
)


def test_reconstruction_terms_are_weighted_means():
    x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    terms = ReconstructionLoss(l1_weight=2.0, l2_weight=0.5)(x, y)
    torch.testing.assert_close(terms.l1, 2.0 * F.l1_loss(x, y))
    torch.testing.assert_close(terms.l2, 0.5 * F.mse_loss(x, y))
    torch.testing.assert_close(terms.total, terms.l1 + terms.l2)
    assert float(terms.perceptual) == 0.0


def test_reconstruction_errors():
    with pytest.raises(ValueError, match="l2_weight must be >= 0"):
        ReconstructionLoss(l2_weight=-1)
    with pytest.raises(ValueError, match="at least one of"):
        ReconstructionLoss(l1_weight=0)
    with pytest.raises(ValueError, match="must have the same shape"):
        ReconstructionLoss()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_missing_perceptual_weights_names_file_and_key(tmp_path):
    missing = tmp_path / "resnet50.pth"
    with pytest.raises(FileNotFoundError, match=r"resnet50\.pth.*'perceptual_weights'.*'perceptual_weight' to 0"):
        build_perceptual_loss(2, missing)
    with pytest.raises(FileNotFoundError, match="perceptual_weights"):
        ReconstructionLoss(perceptual_weight=0.1, perceptual_weights=None)


@pytest.mark.parametrize("spatial_dims,size", [(2, 32), (3, 16)])
def test_hinge_losses_by_hand(spatial_dims, size):
    disc = build_discriminator(spatial_dims, in_channels=1, channels=8, num_layers=2)
    logits = disc(torch.randn(2, 1, *([size] * spatial_dims)))[-1]
    real, fake = logits, -logits
    expected_d = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    torch.testing.assert_close(discriminator_loss([real], [fake], "hinge"), expected_d)
    torch.testing.assert_close(generator_loss([fake], "hinge"), -fake.mean())


def test_least_squares_losses_by_hand():
    real, fake = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    torch.testing.assert_close(discriminator_loss(real, fake, "least_squares"),
                               0.5 * (((real - 1) ** 2).mean() + (fake**2).mean()))
    torch.testing.assert_close(generator_loss(fake, "least_squares"), ((fake - 1) ** 2).mean())
    with pytest.raises(ValueError, match="adversarial criterion must be one of"):
        generator_loss(fake, "wasserstein")


def test_adaptive_weight_is_the_gradient_norm_ratio():
    layer = torch.nn.Parameter(torch.randn(4, 4))
    x = torch.randn(3, 4)
    out = x @ layer
    rec = out.square().mean()
    adv = 3.0 * out.mean()
    weight = adaptive_adversarial_weight(rec, adv, layer, delta=0.0)
    g_rec = torch.autograd.grad(rec, layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, layer)[0]
    torch.testing.assert_close(weight, g_rec.norm() / g_adv.norm())
    assert not weight.requires_grad
