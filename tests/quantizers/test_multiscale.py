"""MultiScaleResidualQuantizer: shapes, exact reconstruction, straight-through, deferral, state dict, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from medvq.quantizers import ActivationReport, MultiScaleQuantizerOutput, MultiScaleResidualQuantizer

# (spatial_dims, scales) pairs: 2D and 3D, ints and per-axis tuples, from one parameter list
CASES = [
    (2, (1, 2, 4)),
    (2, ((1, 1), (1, 2), (2, 3), (3, 5))),
    (3, (1, 2, 3)),
    (3, ((1, 1, 1), (1, 2, 2), (2, 3, 4))),
]


def _last(scales, spatial_dims):
    s = scales[-1]
    return (s,) * spatial_dims if isinstance(s, int) else tuple(s)


def _make(spatial_dims, scales, **kwargs):
    kwargs.setdefault("phi_shared", 2)
    return MultiScaleResidualQuantizer(num_embeddings=16, embedding_dim=3, scales=scales, spatial_dims=spatial_dims,
                                       **kwargs)


@pytest.mark.parametrize("spatial_dims,scales", CASES)
def test_shapes_and_statistics(spatial_dims, scales):
    msq = _make(spatial_dims, scales)
    z = torch.randn(2, 3, *_last(scales, spatial_dims))
    out = msq(z)
    assert isinstance(out, MultiScaleQuantizerOutput)
    assert out.quantized.shape == z.shape
    assert [tuple(i.shape) for i in out.indices] == [(2, *s) for s in msq.scales]
    assert all(i.dtype == torch.int64 for i in out.indices)
    assert out.loss.ndim == 0 and out.perplexity.ndim == 0
    assert out.per_scale_perplexity.shape == (len(scales),) and out.per_scale_usage.shape == (len(scales),)
    # scale 0 of a (1, ..., 1) map: 2 tokens hit at most 2 of the 16 codes
    assert float(out.per_scale_usage[0]) <= 2 / 16
    assert 1.0 <= float(out.perplexity) <= 16.0
    # the output is f_hat, which is what the token maps decode to
    torch.testing.assert_close(out.quantized, msq.indices_to_latent(out.indices))
    assert [i.equal(j) for i, j in zip(msq.latent_to_indices(z), out.indices)] == [True] * len(scales)


@pytest.mark.parametrize("ratio", [0.0, 0.5])
@pytest.mark.parametrize("spatial_dims,scales", CASES)
def test_codebook_of_the_residuals_reconstructs_exactly(spatial_dims, scales, ratio):
    # the exact residuals of z at every scale (what an inactive quantizer collects) become the codebook: each
    # residual then has a code at distance 0, so the quantized cascade is the exact one and f_hat == z
    msq = _make(spatial_dims, scales, phi_residual_ratio=ratio, active=False)
    z = torch.randn(1, 3, *_last(scales, spatial_dims))
    residuals = msq.collect_residuals(z)
    big = MultiScaleResidualQuantizer(num_embeddings=residuals.shape[0], embedding_dim=3, scales=scales,
                                      spatial_dims=spatial_dims, phi_shared=2, phi_residual_ratio=ratio,
                                      active=False)
    big.phis.load_state_dict(msq.phis.state_dict())  # the same phi that produced the residuals
    big.activate(residuals, init="samples")
    out = big(z)
    if ratio == 0.0:
        torch.testing.assert_close(out.quantized, z, atol=1e-5, rtol=0)
    # with phi the tokens are still exact, but f_hat is not z: as in VAR, phi also refines the last scale, so even a
    # perfect codebook leaves r_last - phi(r_last)
    for idx, r in zip(out.indices, residuals.split([s.numel() for s in out.indices])):
        assert big.codebook[idx.flatten()].equal(r)  # every token is its own residual, bit for bit
    # VAR's loss averages the error of every running sum, so only the last-scale term vanishes
    assert float(out.loss.detach()) > 0


@pytest.mark.parametrize("spatial_dims,scales", CASES)
def test_straight_through_gradients(spatial_dims, scales):
    msq = _make(spatial_dims, scales)
    z = torch.randn(2, 3, *_last(scales, spatial_dims), requires_grad=True)
    out = msq(z)
    (out.quantized.sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert msq.codebook.grad is not None and msq.codebook.grad.abs().sum() > 0
    assert all(p.grad is not None for p in msq.phis.parameters())
    # the quantized output alone passes the identity gradient to z
    z.grad = None
    msq(z).quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))


@pytest.mark.parametrize("spatial_dims,scales", CASES)
def test_inactive_pass_through(spatial_dims, scales):
    msq = _make(spatial_dims, scales, active=False)
    z = torch.randn(2, 3, *_last(scales, spatial_dims), requires_grad=True)
    out = msq(z)
    assert out.quantized is z and float(out.loss.detach()) == 0.0
    assert [tuple(i.shape) for i in out.indices] == [(2, *s) for s in msq.scales]
    out.loss.backward()  # touches every parameter (DDP), with zero gradients
    assert msq.codebook.grad is not None and float(msq.codebook.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("spatial_dims,scales", CASES)
def test_activate_and_state_dict_round_trip(spatial_dims, scales):
    msq = _make(spatial_dims, scales, active=False)
    z = torch.randn(4, 3, *_last(scales, spatial_dims))
    samples = msq.collect_residuals(z)
    assert samples.shape == (4 * sum(torch.Size(s).numel() for s in msq.scales), 3)
    report = msq.activate(samples, init="kmeans", seed=0)
    assert isinstance(report, ActivationReport) and msq.active and report.usage > 0
    buffer = io.BytesIO()
    torch.save(msq.state_dict(), buffer)
    buffer.seek(0)
    restored = _make(spatial_dims, scales, active=False)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.active
    expected, got = msq(z), restored(z)
    torch.testing.assert_close(got.quantized, expected.quantized)
    assert all(a.equal(b) for a, b in zip(got.indices, expected.indices))
    # an active quantizer collects the residuals of its own cascade: as many rows as before
    assert msq.collect_residuals(z).shape == samples.shape


def test_phi_sharing_matches_var():
    # VAR's PhiPartiallyShared(4) over the 10 default scales: argmin |ticks - si / 9| (ties at 2/9 and 7/9 resolved
    # by float rounding exactly as in VAR's models/quant.py)
    msq = MultiScaleResidualQuantizer(num_embeddings=8, embedding_dim=2)
    assert msq.phi_index == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)
    assert msq.scales[-1] == (16, 16) and len(msq.phis) == 4
    # no phi at all is VAR's quant_resi = 0 (an identity), not phi_shared = 0
    assert len(MultiScaleResidualQuantizer(num_embeddings=8, embedding_dim=2, phi_residual_ratio=0.0).phis) == 0


def _var_phi_index(share: int, num_scales: int) -> tuple[int, ...]:
    """VAR's models/quant.py, written from its definition: share_quant_resi K > 0 -> PhiPartiallyShared with K
    phis, 0 -> PhiNonShared with one phi per scale; ticks linspace(1/(3K), 1 - 1/(3K), K) if K == 4 else
    linspace(1/(2K), 1 - 1/(2K), K); scale si takes argmin |ticks - si / (SN - 1)|."""
    k = share if share > 0 else num_scales
    ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)
    return tuple(int(np.argmin(np.abs(ticks - si / (num_scales - 1)))) for si in range(num_scales))


@pytest.mark.parametrize("share", [0, 1, 2, 3, 4, 5, 6])
def test_phi_ticks_match_var_for_every_sharing(share):
    msq = MultiScaleResidualQuantizer(num_embeddings=8, embedding_dim=2, phi_shared=share)
    assert msq.phi_index == _var_phi_index(share, 10)
    assert len(msq.phis) == (share if share > 0 else 10)
    if share == 3:  # where the old rule (1/(3K) margins for every K) differed
        assert msq.phi_index == (0, 0, 0, 0, 1, 1, 1, 2, 2, 2)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"scales": (1, 4, 2)}, "scales must be increasing"),
        ({"scales": (2, 2)}, "scales must be increasing"),
        ({"scales": ((1, 2, 3),)}, "scales entries must be ints >= 1 or tuples of 2 ints"),
        ({"scales": ()}, "scales must be a non-empty sequence"),
        ({"spatial_dims": 1}, "spatial_dims must be 2 or 3"),
        ({"phi_shared": -1}, "phi_shared must be an integer >= 0"),
        ({"phi_residual_ratio": 1.5}, "phi_residual_ratio must be in"),
        ({"num_embeddings": 0}, "num_embeddings must be an integer >= 1"),
    ],
)
def test_constructor_errors(kwargs, message):
    args = {"num_embeddings": 8, "embedding_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        MultiScaleResidualQuantizer(**args)


def test_forward_and_activate_errors():
    msq = MultiScaleResidualQuantizer(num_embeddings=4, embedding_dim=2, scales=(1, 2))
    with pytest.raises(ValueError, match=r"spatial shape \(3, 3\) must equal the last of scales, \(2, 2\)"):
        msq(torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="embedding_dim=2"):
        msq(torch.randn(1, 5, 2, 2))
    with pytest.raises(ValueError, match="init must be one of"):
        msq.activate(torch.randn(8, 2), init="pca")
    with pytest.raises(ValueError, match="indices must hold one token map per scale"):
        msq.indices_to_latent([torch.zeros(1, 1, 1, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"indices\[1\] must have shape \(1, 2, 2\)"):
        msq.indices_to_latent([torch.zeros(1, 1, 1, dtype=torch.long), torch.zeros(1, 3, 3, dtype=torch.long)])


@pytest.mark.parametrize("spatial_dims,scales", CASES)
def test_token_sequence_and_teacher_forcing_input(spatial_dims, scales):
    msq = _make(spatial_dims, scales)
    z = torch.randn(2, 3, *_last(scales, spatial_dims))
    indices = msq.latent_to_indices(z)
    tokens = msq.flatten_indices(indices)
    assert tokens.shape == (2, sum(msq.scale_lengths))
    assert all(a.equal(b) for a, b in zip(msq.unflatten_indices(tokens), indices))
    # the teacher-forcing input of scale k+1 is the running sum after scale k, area-pooled to scale k+1 (VAR)
    x = msq.teacher_forcing_input(indices)
    assert x.shape == (2, sum(msq.scale_lengths[1:]), 3)
    f_hat, steps = None, []
    for k in range(msq.num_scales):
        f_hat, nxt = msq.next_scale_input(k, f_hat, indices[k])
        steps.append(nxt)
    torch.testing.assert_close(torch.cat(steps[:-1], dim=1), x)
    torch.testing.assert_close(f_hat, msq.indices_to_latent(indices))  # the last step completes f_hat
    # by hand, scale 1's input: phi_0(up(codes of scale 0)) pooled to scale 1
    up = torch.nn.functional.interpolate(msq.codes.lookup(indices[0]), size=msq.scales[-1],
                                         mode="bicubic" if spatial_dims == 2 else "trilinear")
    first = torch.nn.functional.adaptive_avg_pool2d(msq.phis[msq.phi_index[0]](up), msq.scales[1]) \
        if spatial_dims == 2 else torch.nn.functional.adaptive_avg_pool3d(msq.phis[msq.phi_index[0]](up), msq.scales[1])
    torch.testing.assert_close(x[:, : msq.scale_lengths[1]], first.flatten(2).transpose(1, 2))


def test_collect_residuals_is_image_major():
    msq = _make(2, (1, 2, 4), active=False)
    z = torch.randn(3, 3, 4, 4)
    all_rows = msq.collect_residuals(z).view(3, -1, 3)  # (B, L, D)
    for b in range(3):
        torch.testing.assert_close(all_rows[b], msq.collect_residuals(z[b: b + 1]))


def test_token_sequence_errors():
    msq = _make(2, (1, 2, 4))
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, 21\)"):
        msq.unflatten_indices(torch.zeros(2, 20, dtype=torch.long))
    with pytest.raises(ValueError, match="one token map per scale"):
        msq.teacher_forcing_input([torch.zeros(1, 1, 1, dtype=torch.long)])


def test_commitment_final_commits_the_encoder_to_the_final_sum_only():
    torch.manual_seed(0)
    z = torch.randn(2, 3, 4, 4)
    losses = {}
    for commitment in ("all", "final"):
        torch.manual_seed(1)
        msq = _make(2, (1, 2, 4), commitment=commitment)
        zz = z.clone().requires_grad_(True)
        out = msq(zz)
        out.loss.backward()
        losses[commitment] = (out.loss.detach(), zz.grad.clone(), [p.grad.clone() for p in msq.parameters()])
    # codebook and phi get the same gradient (the codebook term is shared); only the encoder term differs
    for a, b in zip(losses["all"][2], losses["final"][2]):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(losses["all"][1], losses["final"][1])
    # by hand: the encoder term of "final" is beta * ||sg(f_hat) - z||^2 of the last running sum
    torch.manual_seed(1)
    msq = _make(2, (1, 2, 4), commitment="final")
    zz = z.clone().requires_grad_(True)
    f_hat = msq(zz).quantized.detach()
    (0.25 * torch.nn.functional.mse_loss(f_hat, zz)).backward()
    torch.testing.assert_close(zz.grad, losses["final"][1])
    with pytest.raises(ValueError, match="commitment must be 'all' \\(VAR\\) or 'final', got 'some'"):
        _make(2, (1, 2, 4), commitment="some")


def test_next_scale_input_errors():
    msq = _make(2, (1, 2, 4))
    idx = torch.zeros(1, 1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"k must be a scale index in \[0, 3\), got 3"):
        msq.next_scale_input(3, None, idx)
    with pytest.raises(ValueError, match=r"indices of scale 1 must have shape \(B, \*\(2, 2\)\), got \(1, 1, 1\)"):
        msq.next_scale_input(1, torch.zeros(1, 3, 4, 4), idx)
    with pytest.raises(ValueError, match="f_hat must be None at the first scale"):
        msq.next_scale_input(0, torch.zeros(1, 3, 4, 4), idx)


def test_dead_codes_are_revived_from_the_residuals():
    torch.manual_seed(0)
    msq = _make(2, (1, 2, 4), dead_code_threshold=2)
    with torch.no_grad():
        msq.codes.weight.data[8:] = 1e3  # codes 8..15 are far from every residual: never used
    z = torch.randn(4, 3, 4, 4)
    msq.train()
    msq(z)
    assert msq.codes.num_revived == 0 and int(msq.codes.unused_steps[8:].min()) == 1
    with torch.no_grad():
        residuals = torch.cat(msq._cascade(z, use_codebook=True).residuals)  # what the next step quantizes
    out = msq(z)  # a second step without use: the far codes come back as residuals of this batch
    assert msq.codes.num_revived >= 8 and int(msq.codes.total_revived) == msq.codes.num_revived
    for code in msq.codes.weight.detach()[8:]:
        assert (residuals - code).abs().amax(dim=1).min() == 0  # every revived code is one of the residuals
    assert out.loss.requires_grad  # the step's graph is intact
    msq.eval()
    before = int(msq.codes.total_revived)
    msq(z)
    assert int(msq.codes.total_revived) == before  # no bookkeeping in eval mode


def test_ema_codebook_with_decay_zero_becomes_the_mean_of_its_residuals():
    # VQ-VAE EMA with decay 0: each code used this step becomes the mean of the residuals (at any scale) assigned
    # to it; unused codes keep their value. The assignment is the cascade's, with the codes before the update
    torch.manual_seed(0)
    msq = MultiScaleResidualQuantizer(num_embeddings=8, embedding_dim=3, scales=(1, 2, 4), phi_shared=2,
                                      codebook_update="ema", decay=0.0, active=False)
    z = torch.randn(2, 3, 4, 4)
    msq.activate(msq.collect_residuals(z)[:20] * 0.5, init="samples")
    before = msq.codebook.detach().clone()
    residuals = msq.collect_residuals(z)  # active: the residuals of its own cascade, image by image
    indices = msq.latent_to_indices(z)
    flat_idx = torch.cat([i.flatten() for i in indices])
    ordered = torch.cat([r for r in msq._cascade(z, use_codebook=True).residuals])  # scale by scale, as flat_idx
    msq.train()
    out = msq(z)
    assert not msq.codes.weight.requires_grad and out.loss.requires_grad  # phi still learns by gradient
    for k in range(8):
        mask = flat_idx == k
        expected = ordered[mask].mean(0) if mask.any() else before[k]
        torch.testing.assert_close(msq.codebook[k], expected)
    assert residuals.shape == ordered.shape


# ---------------------------------------------------------------- VQGAN-LC's projection, per-scale revival (issue #9)
def test_projected_codebook_is_born_as_the_centroids_and_learns_through_the_projection_only():
    torch.manual_seed(0)
    msq = _make(2, (1, 2, 4), active=False, codebook_projection=True)
    z = torch.randn(4, 3, 4, 4)
    with torch.no_grad():  # a projection moved before the switch is reset by activate
        msq.projection.weight.mul_(2.0)
    msq.activate(msq.collect_residuals(z))
    torch.testing.assert_close(msq.codebook, msq.codes.weight, rtol=0, atol=0)  # identity at the switch
    assert not msq.codes.weight.requires_grad  # the table is frozen
    msq.train()
    msq(z).loss.backward()
    assert msq.codes.weight.grad is None
    assert msq.projection.weight.grad.abs().sum() > 0 and msq.projection.bias.grad.abs().sum() > 0
    # every lookup path reads the projected codes
    with torch.no_grad():
        msq.projection.weight.copy_(torch.tensor([[0.5, 0.1, 0.0], [0.0, 1.5, 0.2], [0.3, 0.0, 0.9]]))
        msq.projection.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    expected = msq.codes.weight @ msq.projection.weight.T + msq.projection.bias
    torch.testing.assert_close(msq.codebook, expected)
    indices = msq.latent_to_indices(z)
    plain = _make(2, (1, 2, 4))
    plain.load_state_dict(msq.state_dict())  # folded: the same codes in a plain quantizer
    torch.testing.assert_close(plain.codebook, expected)
    torch.testing.assert_close(plain.indices_to_latent(indices), msq.indices_to_latent(indices))
    torch.testing.assert_close(plain.teacher_forcing_input(indices), msq.teacher_forcing_input(indices))
    assert [i.equal(j) for i, j in zip(plain.latent_to_indices(z), indices)] == [True] * 3
    # and a plain checkpoint into a projected quantizer: identity projection, the same codes
    back = _make(2, (1, 2, 4), codebook_projection=True)
    back.load_state_dict(plain.state_dict())
    torch.testing.assert_close(back.codebook, plain.codebook)


def test_projected_codebook_revives_into_the_table_so_the_projected_code_is_the_residual():
    torch.manual_seed(0)
    msq = _make(2, (1, 2, 4), dead_code_threshold=1, codebook_projection=True)
    with torch.no_grad():
        msq.codes.weight.data[8:] = 1e3
        msq.projection.weight.copy_(torch.eye(3) * 2.0 + 0.1)
        msq.projection.bias.fill_(0.5)
    z = torch.randn(4, 3, 4, 4)
    with torch.no_grad():
        residuals = torch.cat(msq._cascade(z, use_codebook=True).residuals)
    msq.train()
    msq(z)
    assert msq.codes.num_revived >= 8
    for code in msq.codebook.detach()[8:]:
        assert (residuals - code).abs().amax(dim=1).min() < 1e-5  # projected back: each one a residual


def test_per_scale_revival_gives_every_scale_the_same_share_of_the_draws():
    # scales (1, 2, 4), one image: 1 + 4 + 16 residual rows. Pooled draws take the one coarsest row 1/21 of the
    # time, per-scale draws 1/3 of the time
    shares = {}
    for revival in ("pooled", "per_scale"):
        torch.manual_seed(0)
        msq = MultiScaleResidualQuantizer(num_embeddings=600, embedding_dim=3, scales=(1, 2, 4), phi_shared=2,
                                          dead_code_threshold=1, revival=revival)
        z = torch.randn(1, 3, 4, 4)
        with torch.no_grad():
            coarsest = msq._cascade(z, use_codebook=True).residuals[0]  # (1, D)
        msq.train()
        msq(z)
        revived = msq.codes.num_revived
        assert revived >= 580  # at most 21 codes are used
        from_coarsest = int((msq.codebook.detach() - coarsest).abs().amax(dim=1).eq(0).sum())
        shares[revival] = from_coarsest / revived
    assert shares["pooled"] < 0.1, shares
    assert 0.25 < shares["per_scale"] < 0.42, shares


def test_projection_and_revival_argument_errors():
    with pytest.raises(ValueError, match="codebook_projection=True .* needs codebook_update='gradient'"):
        MultiScaleResidualQuantizer(8, 2, scales=(1, 2), codebook_projection=True, codebook_update="ema")
    with pytest.raises(ValueError, match="revival must be one of"):
        MultiScaleResidualQuantizer(8, 2, scales=(1, 2), revival="scale")
    with pytest.raises(TypeError, match="codebook_projection must be True or False"):
        MultiScaleResidualQuantizer(8, 2, scales=(1, 2), codebook_projection="yes")


def test_normalized_codes_are_unit_directions_scaled_by_one_learned_magnitude_per_scale():
    torch.manual_seed(0)
    msq = _make(2, (1, 2, 4), active=False, normalize=True)
    z = torch.randn(4, 3, 4, 4)
    msq.collect_residuals(torch.randn(4, 3, 4, 4) * 50)  # forgotten by the reset below
    msq.reset_residual_norms()
    exact = msq._cascade(z, use_codebook=False).residuals  # the residuals collect_residuals records
    msq.activate(msq.collect_residuals(z))
    torch.testing.assert_close(msq.code_magnitude.detach(), torch.stack([r.norm(dim=1).mean() for r in exact]))
    torch.testing.assert_close(msq.codebook.norm(dim=1), torch.ones(16))
    # the lookup is by direction: scaling a latent does not change its first scale's code
    big = msq.latent_to_indices(z * 100.0)[0]
    assert big.equal(msq.latent_to_indices(z)[0])
    # scale k's code is m_k times the unit code, in the forward pass and in every lookup path
    msq.train()
    out = msq(z)
    out.loss.backward()
    assert msq.code_magnitude.grad.abs().min() > 0
    torch.testing.assert_close(msq.indices_to_latent(out.indices), out.quantized.detach())
    first = msq._refine(0, (msq.codebook[out.indices[0].flatten()] * msq.code_magnitude[0]).view(4, 1, 1, 3)
                        .movedim(-1, 1))
    f_hat, _ = msq.next_scale_input(0, None, out.indices[0])
    torch.testing.assert_close(f_hat, first)
    # the magnitudes are in the state dict
    again = _make(2, (1, 2, 4), normalize=True)
    again.load_state_dict(msq.state_dict())
    torch.testing.assert_close(again.indices_to_latent(out.indices), msq.indices_to_latent(out.indices))


def test_normalized_codes_errors():
    with pytest.raises(ValueError, match="normalize=True and codebook_projection=True cannot be combined"):
        MultiScaleResidualQuantizer(8, 2, scales=(1, 2), normalize=True, codebook_projection=True)
    with pytest.raises(TypeError, match="normalize must be True or False"):
        MultiScaleResidualQuantizer(8, 2, scales=(1, 2), normalize=1)


def test_folded_projections_give_the_same_codes_to_key_matching_copies():
    from medvq.quantizers import fold_codebook_projections

    torch.manual_seed(0)
    msq = _make(2, (1, 2, 4), codebook_projection=True)
    with torch.no_grad():
        msq.projection.weight.copy_(torch.eye(3) * 1.5 + 0.2)
        msq.projection.bias.fill_(-0.3)
    state = {"quantizer." + k: v for k, v in msq.state_dict().items()}
    folded = fold_codebook_projections(state)
    assert torch.equal(folded["quantizer.projection.weight"], torch.eye(3))
    assert not torch.equal(state["quantizer.projection.weight"], torch.eye(3))  # the input is left alone
    # a plain quantizer that copies matching keys only (what copy_model_state does) gets the projected codes
    plain = _make(2, (1, 2, 4))
    plain.codes.weight.data.copy_(folded["quantizer.codes.weight"])
    torch.testing.assert_close(plain.codebook, msq.codebook)
    again = _make(2, (1, 2, 4), codebook_projection=True)
    again.load_state_dict({k.removeprefix("quantizer."): v for k, v in folded.items()})
    torch.testing.assert_close(again.codebook, msq.codebook)
    plain_state = {"quantizer." + k: v for k, v in plain.state_dict().items()}
    assert fold_codebook_projections(plain_state) is plain_state  # nothing to fold: the same object
    module_state = msq.state_dict()
    assert fold_codebook_projections(module_state)._metadata == module_state._metadata  # torch's versions kept
