"""VectorQuantizer: shapes, straight-through gradients, exact lookup, EMA, deferral, state dict, revival, errors."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from medvq.quantizers import ActivationReport, QuantizerOutput, VectorQuantizer

# (spatial shape, update rule) pairs: 1D, 2D and 3D maps from one parameter list
SHAPES = [(8,), (4, 5), (2, 3, 4)]
CASES = [(s, u) for s in SHAPES for u in ("gradient", "ema")]


@pytest.mark.parametrize("spatial,update", CASES)
def test_shapes_and_dtypes(spatial, update):
    vq = VectorQuantizer(16, 4, codebook_update=update)
    z = torch.randn(3, 4, *spatial)
    out = vq(z)
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == z.shape
    assert out.indices.shape == (3, *spatial)
    assert out.indices.dtype == torch.int64
    assert out.loss.ndim == 0 and out.perplexity.ndim == 0
    assert 1.0 <= float(out.perplexity) <= 16.0


@pytest.mark.parametrize("spatial,update", CASES)
def test_quantized_values_are_codes(spatial, update):
    vq = VectorQuantizer(16, 4, codebook_update=update, embedding_init="normal").eval()
    z = torch.randn(2, 4, *spatial)
    out = vq(z)
    expected = vq.codebook[out.indices].movedim(-1, 1)  # (B, *S, D) -> (B, D, *S)
    torch.testing.assert_close(out.quantized, expected)
    torch.testing.assert_close(vq.lookup(out.indices), expected)


@pytest.mark.parametrize("spatial", SHAPES)
def test_straight_through_gradient_reaches_z(spatial):
    vq = VectorQuantizer(16, 4, embedding_init="normal")
    z = torch.randn(2, 4, *spatial, requires_grad=True)
    weights = torch.randn(2, 4, *spatial)
    out = vq(z)
    (out.quantized * weights).sum().backward()
    # the straight-through estimator passes d(quantized) unchanged to z
    torch.testing.assert_close(z.grad, weights)


def test_loss_terms_and_codebook_gradient():
    vq = VectorQuantizer(8, 3, commitment_cost=0.25, embedding_init="normal")
    z = torch.randn(4, 3, 5, requires_grad=True)
    out = vq(z)
    q = vq.codebook[out.indices].movedim(-1, 1).detach()
    mse = F.mse_loss(z.detach(), q)
    torch.testing.assert_close(out.loss, (1 + 0.25) * mse)  # codebook term + beta * commitment term
    out.loss.backward()
    assert vq.weight.grad is not None and vq.weight.grad.abs().sum() > 0
    # commitment term pulls z towards its code: gradient = 2 * beta * (z - q) / numel
    torch.testing.assert_close(z.grad, 2 * 0.25 * (z.detach() - q) / z.numel())


def test_hand_computed_nearest_codes():
    vq = VectorQuantizer(3, 2, embedding_init="normal").eval()
    vq.weight.data = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, -5.0]])
    # latents as (B=1, D=2, L=4): (1, 1) -> 0, (9, 1) -> 1, (0, -4) -> 2, (6, 0) -> 1 (6 is closer to 10 than to 0)
    z = torch.tensor([[[1.0, 9.0, 0.0, 6.0], [1.0, 1.0, -4.0, 0.0]]])
    assert vq(z).indices.tolist() == [[0, 1, 2, 1]]


def test_normalized_lookup_is_cosine():
    vq = VectorQuantizer(2, 2, normalize=True, embedding_init="normal").eval()
    vq.weight.data = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    z = torch.tensor([[[100.0, 0.1], [1.0, 0.2]]])  # (B=1, D=2, L=2): directions ~(1, 0.01) and ~(0.1, 0.2)
    out = vq(z)
    assert out.indices.tolist() == [[0, 1]]
    torch.testing.assert_close(out.quantized.norm(dim=1), torch.ones(1, 2))
    torch.testing.assert_close(vq.codebook.norm(dim=1), torch.ones(2))


def test_ema_with_decay_zero_gives_batch_means():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, codebook_update="ema", decay=0.0, embedding_init="normal")
    vq.weight.data = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [50.0, 50.0]])
    z = torch.cat([torch.randn(2, 6) * 0.5, torch.randn(2, 6) * 0.5 + 5, torch.randn(2, 6) * 0.5 + 5], 0)
    z = torch.stack([z[:2], z[2:4]], 0)  # (B=2, D=2, L=6)
    before = vq.weight.detach().clone()
    out = vq(z)
    flat = z.movedim(1, -1).reshape(-1, 2)
    idx = out.indices.flatten()
    for k in range(4):
        members = flat[idx == k]
        if len(members):
            torch.testing.assert_close(vq.weight[k], members.mean(0), rtol=1e-4, atol=1e-4)
        else:  # an unassigned code has no batch mean and keeps its value
            torch.testing.assert_close(vq.weight[k], before[k])
    assert (idx == 3).sum() == 0
    # EMA: the loss is the commitment term only, measured against the updated codes
    q = vq.weight[out.indices].movedim(-1, 1).detach()
    torch.testing.assert_close(out.loss, 0.25 * F.mse_loss(z, q))


def test_ema_decay_zero_is_exact_with_a_large_codebook():
    """No Laplace smoothing: with K=8192 codes and 64 latents the codes are the batch means to float precision."""
    torch.manual_seed(0)
    vq = VectorQuantizer(8192, 4, codebook_update="ema", decay=0.0, embedding_init="normal")
    z = torch.randn(4, 4, 16)
    out = vq(z)
    flat, idx = z.movedim(1, -1).reshape(-1, 4), out.indices.flatten()
    for k in idx.unique():
        torch.testing.assert_close(vq.weight[k], flat[idx == k].mean(0), rtol=1e-6, atol=1e-6)


def test_ema_update_in_bfloat16():
    vq = VectorQuantizer(16, 4, codebook_update="ema", embedding_init="normal").to(torch.bfloat16)
    out = vq(torch.randn(2, 4, 6, dtype=torch.bfloat16))
    assert out.quantized.dtype == torch.bfloat16 and vq.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("source,target", [("gradient", "ema"), ("ema", "gradient")])
def test_state_dict_moves_between_update_rules(source, target):
    torch.manual_seed(0)
    trained = VectorQuantizer(32, 4, codebook_update=source, active=False)
    trained.activate(torch.randn(300, 4) * 5)
    loaded = VectorQuantizer(32, 4, codebook_update=target, active=False, decay=0.5)
    loaded.load_state_dict(trained.state_dict())  # strict
    assert loaded.active
    torch.testing.assert_close(loaded.codebook, trained.codebook)
    before = loaded.codebook.detach().clone()
    loaded(torch.randn(2, 4, 8) * 5)  # one training step must move codes towards the data, not to a stale init
    moved = (loaded.codebook.detach() - before).norm(dim=1)
    assert float(loaded.codebook.detach().norm(dim=1).mean()) > 0.5 * float(before.norm(dim=1).mean())
    assert float(moved.max()) < 10


def test_ema_does_not_update_in_eval_mode():
    vq = VectorQuantizer(8, 2, codebook_update="ema", decay=0.0, embedding_init="normal").eval()
    before = vq.weight.detach().clone()
    vq(torch.randn(2, 2, 10))
    torch.testing.assert_close(vq.weight, before)


@pytest.mark.parametrize("spatial", SHAPES)
def test_inactive_is_pass_through(spatial):
    vq = VectorQuantizer(16, 4, active=False, embedding_init="normal")
    z = torch.randn(2, 4, *spatial, requires_grad=True)
    out = vq(z)
    assert out.quantized is z
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()  # the zero loss reaches the codebook (DDP needs a gradient for every parameter)
    assert vq.weight.grad is not None and float(vq.weight.grad.abs().sum()) == 0.0
    # indices are still the nearest codes, so coverage can be watched before the switch
    active = VectorQuantizer(16, 4, embedding_init="normal")
    active.load_state_dict({**vq.state_dict(), "active_flag": torch.tensor(True)})
    assert torch.equal(out.indices, active(z).indices)


def test_inactive_ema_codebook_is_frozen():
    vq = VectorQuantizer(8, 2, codebook_update="ema", decay=0.0, active=False, dead_code_threshold=1)
    before = vq.weight.detach().clone()
    for _ in range(3):
        vq(torch.randn(2, 2, 10))
    torch.testing.assert_close(vq.weight, before)


@pytest.mark.parametrize("init", ["kmeans", "samples"])
@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_activate_and_state_dict_round_trip(init, update):
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 4, codebook_update=update, active=False)
    samples = torch.randn(500, 4) * 3
    report = vq.activate(samples, init=init, seed=1)
    assert isinstance(report, ActivationReport)
    assert vq.active and report.num_samples == 500 and report.init == init
    assert (report.inertia is not None) == (init == "kmeans")
    assert 0 < report.usage <= 1
    if init == "samples":  # every code is one of the samples
        d = (vq.codebook.detach()[:, None, :] - samples[None]).abs().sum(-1).min(1).values  # (K,) exact L1
        assert float(d.max()) == 0.0
    # save / load with weights_only=True: the active flag and the codebook survive
    buffer = io.BytesIO()
    torch.save(vq.state_dict(), buffer)
    buffer.seek(0)
    restored = VectorQuantizer(32, 4, codebook_update=update, active=False)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.active is True
    torch.testing.assert_close(restored.codebook, vq.codebook)
    z = torch.randn(2, 4, 7)
    assert torch.equal(restored.eval()(z).indices, vq.eval()(z).indices)


def test_activate_is_deterministic_for_a_seed():
    samples = torch.randn(400, 3)
    a, b = VectorQuantizer(16, 3, active=False), VectorQuantizer(16, 3, active=False)
    a.activate(samples, seed=3)
    b.activate(samples, seed=3)
    torch.testing.assert_close(a.codebook, b.codebook)


def test_activate_kmeans_spreads_codes_over_the_latents():
    """k-means on well-spread latents gives a codebook as wide as the data; the random init does not."""
    torch.manual_seed(0)
    latents = torch.randn(2000, 4) * 5
    vq = VectorQuantizer(64, 4, active=False)
    random_spread = vq.codebook.var(0).sum()
    vq.activate(latents)
    assert vq.codebook.var(0).sum() > 100 * random_spread
    assert vq.codebook.var(0).sum() > 0.5 * latents.var(0).sum()


def test_dead_code_revival_is_observable():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 2, dead_code_threshold=2, embedding_init="normal")
    vq.weight.data[4:] += 1000.0  # four codes far away from any latent: never used
    z = torch.randn(2, 2, 16)
    vq(z)
    assert vq.num_revived == 0  # unused for one step only
    vq(z)
    assert vq.num_revived == 4 and int(vq.total_revived) == 4
    # revived codes are current latents
    flat = z.movedim(1, -1).reshape(-1, 2)
    assert float((vq.weight[4:].detach()[:, None] - flat[None]).abs().sum(-1).min(1).values.max()) == 0.0
    assert "total_revived" in vq.state_dict()


def test_revival_is_off_by_default():
    vq = VectorQuantizer(8, 2, embedding_init="normal")
    vq.weight.data[4:] += 1000.0
    for _ in range(5):
        vq(torch.randn(2, 2, 16))
    assert vq.num_revived == 0 and float(vq.weight[4:].detach().min()) > 900


def test_chunked_forward_equals_unchunked():
    torch.manual_seed(0)
    small = VectorQuantizer(300, 8, chunk_size=300 * 7, embedding_init="normal").eval()  # 7 rows per block
    large = VectorQuantizer(300, 8, chunk_size=2**30, embedding_init="normal").eval()
    large.load_state_dict(small.state_dict())
    z = torch.randn(3, 8, 11, 13)
    a, b = small(z), large(z)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.quantized, b.quantized)


def test_autocast_keeps_float32_search():
    vq = VectorQuantizer(16, 4, embedding_init="normal")
    z = torch.randn(2, 4, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z.bfloat16())
    assert out.quantized.dtype == torch.bfloat16
    assert torch.equal(out.indices, vq(z).indices)


# ---------------------------------------------------------------------------------------------- error messages
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_embeddings": 0, "embedding_dim": 4}, "num_embeddings must be an integer >= 1"),
        ({"num_embeddings": 8, "embedding_dim": 0}, "embedding_dim must be an integer >= 1"),
        ({"num_embeddings": 8, "embedding_dim": 4, "codebook_update": "adam"}, "codebook_update must be one of"),
        ({"num_embeddings": 8, "embedding_dim": 4, "decay": 1.0}, "decay must be in"),
        ({"num_embeddings": 8, "embedding_dim": 4, "embedding_init": "zeros"}, "embedding_init must be one of"),
        ({"num_embeddings": 8, "embedding_dim": 4, "dead_code_threshold": -1}, "dead_code_threshold must be"),
        ({"num_embeddings": 8, "embedding_dim": 4, "commitment_cost": -0.1}, "commitment_cost must be >= 0"),
        ({"num_embeddings": 8, "embedding_dim": 4, "epsilon": 0.0}, "epsilon must be > 0"),
        ({"num_embeddings": 8, "embedding_dim": 4, "chunk_size": 0}, "chunk_size must be >= 1"),
        ({"num_embeddings": 8, "embedding_dim": 4, "kmeans_iterations": -1}, "kmeans_iterations must be >= 0"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(**kwargs)


def test_forward_errors():
    vq = VectorQuantizer(8, 4)
    with pytest.raises(ValueError, match="z has 3 channels .* embedding_dim is 4"):
        vq(torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match="floating tensor z, got dtype torch.int64"):
        vq(torch.ones(2, 4, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="expects a torch.Tensor"):
        vq([[1.0]])
    with pytest.raises(ValueError, match="at least one spatial dim"):
        vq(torch.randn(2, 4))
    z = torch.randn(2, 4, 5)
    z[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        vq(z)
    z[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        vq(z)


def test_activate_errors():
    vq = VectorQuantizer(64, 4, active=False)
    with pytest.raises(ValueError, match="at least num_embeddings=64 latent samples, got N=10"):
        vq.activate(torch.randn(10, 4))
    with pytest.raises(ValueError, match="init must be one of"):
        vq.activate(torch.randn(100, 4), init="random")
    with pytest.raises(ValueError, match=r"samples must have shape \(N, 4\)"):
        vq.activate(torch.randn(100, 5))
    with pytest.raises(TypeError, match="floating tensor"):
        vq.activate(torch.ones(100, 4, dtype=torch.int32))
    bad = torch.randn(100, 4)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        vq.activate(bad)
    assert vq.active is False  # a failed activation leaves the quantizer untouched


def test_lookup_errors():
    vq = VectorQuantizer(8, 2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 8\)"):
        vq.lookup(torch.tensor([[9]]))
    with pytest.raises(TypeError, match="integer tensor"):
        vq.lookup(torch.tensor([[1.0]]))
