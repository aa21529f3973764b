"""Coverage metrics: hand-computed functional forms, error messages, and CodebookCoverage over a whole Ignite run."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError

from medvq.metrics import (
    DISTANCE_CHUNK_SIZE,
    CodebookCoverage,
    code_usage,
    dead_codes,
    mean_code_distance,
    perplexity_from_counts,
    shrinkage,
    trace_covariance,
)
from medvq.quantizers import VectorQuantizer
from medvq.quantizers.search import DEFAULT_CHUNK_SIZE

# three codes at distances 3 (e0-e1), 4 (e0-e2) and 5 (e1-e2): a 3-4-5 triangle
TRIANGLE = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
# four points whose per-dimension unbiased variances are 4/3 and 16/3: trace(cov) = 20/3
SQUARE = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
SPATIAL = [(4, 5), (2, 3, 4)]  # 2D and 3D latent maps from one parameter list


# ---------------------------------------------------------------------------------------------- functional forms
def test_usage_and_dead_codes_by_hand():
    counts = torch.tensor([3, 0, 1, 0])
    assert code_usage(counts) == 0.5
    assert dead_codes(counts) == 2
    assert code_usage(torch.tensor([0, 0, 0])) == 0.0 and dead_codes(torch.tensor([0, 0, 0])) == 3


@pytest.mark.parametrize(
    "counts,expected",
    [
        (torch.full((8,), 5), 8.0),  # uniform over K codes: K
        (torch.tensor([7, 0, 0, 0]), 1.0),  # one code takes everything: 1
        (torch.tensor([1, 1, 2]), 2**1.5),  # p = (1/4, 1/4, 1/2): H = 1.5 ln 2
        (torch.tensor([0, 0]), 1.0),  # no counts: defined as 1
    ],
)
def test_perplexity_by_hand(counts, expected):
    assert float(perplexity_from_counts(counts)) == pytest.approx(expected, rel=1e-6)


def test_perplexity_is_exp_entropy():
    counts = torch.tensor([5.0, 1.0, 0.0, 2.0, 2.0])
    p = counts[counts > 0] / counts.sum()
    assert float(perplexity_from_counts(counts)) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-6)


def test_mean_code_distance_by_hand():
    assert mean_code_distance(TRIANGLE) == pytest.approx(4.0)  # (3 + 4 + 5) / 3
    assert mean_code_distance(TRIANGLE, mask=torch.tensor([True, True, False])) == pytest.approx(3.0)
    assert mean_code_distance(TRIANGLE, mask=torch.tensor([0, 2, 1])) == pytest.approx(5.0)  # non-zero = selected
    assert math.isnan(mean_code_distance(TRIANGLE, mask=torch.tensor([True, False, False])))


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_chunked_mean_code_distance_equals_unchunked(chunk_size):
    codebook = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    expected = float(torch.pdist(codebook.double()).mean())
    assert mean_code_distance(codebook, chunk_size=chunk_size) == pytest.approx(expected, rel=1e-9)
    assert mean_code_distance(codebook, chunk_size=10**9) == pytest.approx(expected, rel=1e-9)


def test_distance_chunk_size_matches_search_default():
    assert DISTANCE_CHUNK_SIZE == DEFAULT_CHUNK_SIZE


def test_trace_covariance_and_shrinkage_by_hand():
    assert trace_covariance(SQUARE) == pytest.approx(20 / 3)
    # a codebook spread exactly like the latents: no shrinkage
    assert shrinkage(SQUARE, SQUARE) == pytest.approx(1.0)
    assert shrinkage(SQUARE, 20 / 3) == pytest.approx(1.0)
    assert shrinkage(SQUARE, torch.tensor(20 / 3)) == pytest.approx(1.0)
    # codes at half the latents' spread: variances scale by 1/4
    assert shrinkage(0.5 * SQUARE, SQUARE) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: code_usage(torch.ones(2, 2)), ValueError, r"counts must be a 1-D tensor"),
        (lambda: dead_codes([1, 2]), ValueError, r"counts must be a 1-D tensor"),
        (lambda: code_usage(torch.zeros(0)), ValueError, r"counts is empty"),
        (lambda: dead_codes(torch.tensor([1, -1])), ValueError, r"counts must be non-negative"),
        (lambda: mean_code_distance(torch.zeros(3)), ValueError, r"codebook must have shape \(K, D\)"),
        (lambda: mean_code_distance(TRIANGLE, mask=torch.ones(2, dtype=torch.bool)), ValueError, r"mask must have"),
        (lambda: trace_covariance(torch.zeros(1, 3)), ValueError, r"needs \(N, D\) with N >= 2"),
        (lambda: shrinkage(SQUARE, 0.0), ValueError, r"trace\(cov\(latents\)\) must be > 0"),
    ],
)
def test_functional_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------- CodebookCoverage
def _batches(spatial, num_batches=3, codes_per_batch=4, dim=3, offset=5.0):
    """Batch b uses only codes [4b, 4b + 4) (each equally often), with latents shifted away from 0."""
    g = torch.Generator().manual_seed(1)
    batches = []
    for b in range(num_batches):
        indices = torch.arange(codes_per_batch).repeat(math.prod(spatial) * 2 // codes_per_batch + 1)
        indices = (indices[: 2 * math.prod(spatial)] + codes_per_batch * b).reshape(2, *spatial)  # (B=2, *S)
        latents = torch.randn(2, dim, *spatial, generator=g) * (b + 1) + offset  # (B, D, *S)
        batches.append((indices, latents))
    return batches


def _run(metric, batches, max_epochs=1):
    engine = Engine(lambda engine, batch: batch)  # the "evaluator" output is the batch itself
    metric.attach(engine, "coverage")
    engine.run(batches, max_epochs=max_epochs)
    return engine


@pytest.mark.parametrize("spatial", SPATIAL)
def test_engine_run_equals_functional_forms_on_concatenated_data(spatial):
    codebook = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    batches = _batches(spatial)
    engine = _run(CodebookCoverage(codebook, prefix="val_"), batches)
    metrics = engine.state.metrics

    indices = torch.cat([i.reshape(-1) for i, _ in batches])  # (N,)
    latents = torch.cat([z.movedim(1, -1).reshape(-1, 3) for _, z in batches])  # (B, D, *S) -> (N, D)
    counts = torch.bincount(indices, minlength=16)
    assert metrics["val_num_latents"] == indices.numel()
    assert metrics["val_usage"] == code_usage(counts) == 0.75  # 3 batches x 4 codes of 16
    assert metrics["val_dead_codes"] == dead_codes(counts) == 4
    assert metrics["val_perplexity"] == pytest.approx(float(perplexity_from_counts(counts)), rel=1e-6)
    assert metrics["val_perplexity"] == pytest.approx(12.0, rel=1e-6)  # 12 codes used equally often
    assert metrics["val_code_distance"] == pytest.approx(mean_code_distance(codebook))
    assert metrics["val_code_distance_used"] == pytest.approx(mean_code_distance(codebook, mask=counts > 0))
    # streaming moments: shrinkage = trace(cov(codebook)) / trace(cov(all latents)), exactly
    expected_shrinkage = trace_covariance(codebook) / trace_covariance(latents)
    assert metrics["val_shrinkage"] == pytest.approx(expected_shrinkage, rel=1e-9)


def test_whole_set_perplexity_exceeds_mean_of_per_batch_perplexities():
    batches = _batches((4, 5))
    codebook = torch.randn(16, 3)
    engine = _run(CodebookCoverage(codebook), batches)
    per_batch = [float(perplexity_from_counts(torch.bincount(i.reshape(-1), minlength=16))) for i, _ in batches]
    # each batch sees 4 codes, the set sees 12: averaging per-batch numbers measures batch diversity
    assert sum(per_batch) / len(per_batch) == pytest.approx(4.0, rel=1e-6)
    assert engine.state.metrics["perplexity"] == pytest.approx(12.0, rel=1e-6)


def test_streaming_trace_covariance_equals_concatenated():
    # a codebook with trace(cov) = 1 (per-dimension variances 1/2) makes shrinkage = 1 / trace(cov(latents))
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert trace_covariance(codebook) == pytest.approx(1.0)
    batches = _batches((3, 4), dim=2, offset=5.0)  # latents far from 0: the S2 - S1^2 / n form must still hold
    metric = CodebookCoverage(codebook)
    for indices, latents in batches:
        metric.update({"indices": indices % 2, "latents": latents})
    latents = torch.cat([z.movedim(1, -1).reshape(-1, 2) for _, z in batches])  # (B, D, *S) -> (N, D)
    assert 1.0 / metric.compute()["shrinkage"] == pytest.approx(trace_covariance(latents), rel=1e-9)


def test_dict_keys_land_in_engine_state_metrics_and_reset_each_epoch():
    batches = _batches((2, 2))
    engine = _run(CodebookCoverage(torch.randn(16, 3), prefix="val_"), batches, max_epochs=2)
    keys = {"usage", "perplexity", "code_distance", "code_distance_used", "dead_codes", "num_latents", "shrinkage",
            "codebook_effective_dim", "latent_effective_dim"}
    assert {"val_" + k for k in keys} <= set(engine.state.metrics)
    assert set(engine.state.metrics["coverage"]) == {"val_" + k for k in keys}  # also the dict under its name
    assert all(isinstance(v, (int, float)) for k, v in engine.state.metrics.items() if k != "coverage")
    assert engine.state.metrics["val_num_latents"] == 3 * 2 * 4  # one epoch's latents: reset at each epoch


def test_indices_only_has_no_shrinkage_key():
    metric = CodebookCoverage(TRIANGLE)
    metric.update(torch.tensor([[0, 1], [1, 1]]))
    metric.update((torch.tensor([2]),))
    metric.update({"indices": torch.tensor([2], dtype=torch.int32)})
    result = metric.compute()
    assert "shrinkage" not in result
    assert result["num_latents"] == 6 and result["usage"] == 1.0 and result["code_distance"] == pytest.approx(4.0)
    assert result["perplexity"] == pytest.approx(float(perplexity_from_counts(torch.tensor([1, 3, 2]))), rel=1e-6)


def test_shrinkage_nan_when_undefined():
    metric = CodebookCoverage(SQUARE)
    metric.update((torch.tensor([0]), torch.ones(1, 2)))  # one latent: no variance
    assert math.isnan(metric.compute()["shrinkage"])
    metric.update((torch.tensor([1]), torch.ones(1, 2)))  # two equal latents: zero spread
    assert math.isnan(metric.compute()["shrinkage"])


@pytest.mark.parametrize("spatial", SPATIAL)
def test_reads_the_quantizer_codebook_at_compute_time(spatial):
    vq = VectorQuantizer(8, 3, embedding_init="normal").eval()
    metric = CodebookCoverage(vq)
    assert metric.num_embeddings == 8
    z = torch.randn(2, 3, *spatial)
    out = vq(z)
    metric.update({"indices": out.indices, "latents": z})
    before = metric.compute()
    assert before["code_distance"] == pytest.approx(mean_code_distance(vq.codebook))
    with torch.no_grad():
        vq.weight.mul_(2.0)  # the codebook moves after the updates
    after = metric.compute()
    assert after["code_distance"] == pytest.approx(2 * before["code_distance"])
    assert after["shrinkage"] == pytest.approx(4 * before["shrinkage"])


def test_callable_codebook_and_num_embeddings():
    metric = CodebookCoverage(lambda: TRIANGLE, num_embeddings=3)
    metric.update(torch.tensor([0, 1]))
    assert metric.compute()["code_distance_used"] == pytest.approx(3.0)
    assert CodebookCoverage(lambda: TRIANGLE).num_embeddings == 3  # read once when not given


def test_failed_update_accumulates_nothing():
    metric = CodebookCoverage(TRIANGLE)
    metric.update(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\)"):
        metric.update(torch.tensor([2, 3]))
    with pytest.raises(ValueError, match=r"give one latent per index"):
        metric.update((torch.tensor([2, 2]), torch.randn(3, 2)))
    result = metric.compute()
    assert result["num_latents"] == 2 and "shrinkage" not in result


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"codebook": 3}, TypeError, r"codebook must be a \(K, D\) tensor"),
        ({"codebook": torch.zeros(4)}, ValueError, r"codebook must have shape \(K, D\)"),
        ({"codebook": TRIANGLE, "num_embeddings": 4}, ValueError, r"num_embeddings is 4 but the codebook tensor has 3"),
        ({"codebook": TRIANGLE, "num_embeddings": 0}, ValueError, r"num_embeddings must be an integer >= 1"),
        ({"codebook": TRIANGLE, "prefix": 1}, TypeError, r"prefix must be a string"),
        ({"codebook": TRIANGLE, "chunk_size": 0}, ValueError, r"chunk_size must be an integer >= 1"),
        ({"codebook": lambda: [[0.0]]}, TypeError, r"codebook must provide a \(K, D\) tensor"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        CodebookCoverage(**kwargs)


@pytest.mark.parametrize(
    "output,error,match",
    [
        (torch.tensor([0.0, 1.0]), TypeError, r"indices must be an integer tensor"),
        (torch.tensor([True]), TypeError, r"indices must be an integer tensor"),
        ([1, 2], TypeError, r"indices must be a tensor"),
        (torch.tensor([-1, 0]), ValueError, r"in \[0, 3\) \(num_embeddings\), got values in \[-1, 0\]"),
        (torch.tensor([[0, 3]]), ValueError, r"indices must lie in \[0, 3\)"),
        ({"latents": torch.randn(2, 2)}, ValueError, r"output as a mapping must have key 'indices'"),
        ((torch.tensor([0]),) * 4, TypeError, r"got tuple of length 4 \(use output_transform"),
        ("indices", TypeError, r"output must be an indices tensor"),
        ((torch.tensor([0, 1]), torch.tensor([1, 2])), TypeError, r"latents must be a floating tensor"),
        ((torch.tensor([0, 1]), torch.randn(2)), ValueError, r"latents must have shape \(B, D, \*spatial\)"),
        ((torch.zeros(2, 4, 4, dtype=torch.long), torch.randn(2, 4, 4, 2)), ValueError, r"give one latent per index"),
    ],
)
def test_update_errors(output, error, match):
    with pytest.raises(error, match=match):
        CodebookCoverage(TRIANGLE).update(output)


def test_latent_dimension_must_stay_the_same():
    metric = CodebookCoverage(TRIANGLE)
    metric.update((torch.tensor([0]), torch.randn(1, 2)))
    with pytest.raises(ValueError, match=r"latents have dimension 3 but earlier latents had 2"):
        metric.update((torch.tensor([0]), torch.randn(1, 3)))


def test_compute_errors():
    mismatch = CodebookCoverage(torch.zeros(3, 1))
    mismatch.update((torch.tensor([0]), torch.randn(1, 2)))
    with pytest.raises(ValueError, match=r"latents have dimension 2 but the codebook has 1"):
        mismatch.compute()
    with pytest.raises(NotComputableError, match=r"at least one index \(update\) before compute"):
        CodebookCoverage(TRIANGLE).compute()
    empty = CodebookCoverage(TRIANGLE)
    empty.update(torch.zeros(0, dtype=torch.long))  # an update without indices is still nothing to measure
    with pytest.raises(NotComputableError, match=r"at least one index"):
        empty.compute()
    table = TRIANGLE.clone()
    shrinking = CodebookCoverage(lambda: table)
    shrinking.update(torch.tensor([0]))
    table = TRIANGLE[:2]
    with pytest.raises(ValueError, match=r"codebook has 2 codes at compute time but num_embeddings is 3"):
        shrinking.compute()


def test_coverage_accepts_a_tokenizer_and_rejects_a_module_without_codebook():
    from medvq.metrics import CodebookCoverage
    from medvq.quantizers import VectorQuantizer

    class Tokenizer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quantizer = VectorQuantizer(12, 3)

    assert CodebookCoverage(Tokenizer()).num_embeddings == 12
    with pytest.raises(TypeError, match="Linear module without a `codebook` attribute"):
        CodebookCoverage(torch.nn.Linear(2, 2))


def test_effective_dimension_by_hand():
    from medvq.metrics import covariance_from_moments, effective_dimension

    # eigenvalues 1, 1, 0.01 -> p = (1, 1, 0.01) / 2.01, exp(H(p)) computed by hand
    cov = torch.diag(torch.tensor([1.0, 1.0, 0.01], dtype=torch.float64))
    p = torch.tensor([1.0, 1.0, 0.01], dtype=torch.float64) / 2.01
    assert effective_dimension(cov, is_covariance=True) == pytest.approx(float((-(p * p.log()).sum()).exp()), rel=1e-12)
    assert effective_dimension(torch.eye(4, dtype=torch.float64), is_covariance=True) == pytest.approx(4.0)
    # points on a line have dimension 1, whatever their scale; an isotropic cloud has about D
    line = torch.linspace(-3, 3, 50)[:, None] * torch.tensor([[1.0, 2.0, -1.0]])
    assert effective_dimension(line) == pytest.approx(1.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    cloud = torch.randn(20000, 5, generator=g, dtype=torch.float64)
    assert effective_dimension(cloud) == pytest.approx(5.0, abs=0.02)
    assert effective_dimension(cloud * 1e-3) == pytest.approx(effective_dimension(cloud), rel=1e-9)
    # the streaming form equals torch.cov
    n, total, gram = cloud.shape[0], cloud.sum(0), cloud.T @ cloud
    torch.testing.assert_close(covariance_from_moments(n, total, gram), torch.cov(cloud.T))
    assert math.isnan(effective_dimension(torch.zeros(3, 3, dtype=torch.float64), is_covariance=True))
    with pytest.raises(ValueError, match="covariance must be square"):
        effective_dimension(torch.zeros(3, 2), is_covariance=True)
    with pytest.raises(ValueError, match="N >= 2 rows"):
        effective_dimension(torch.zeros(1, 2))


def test_coverage_reports_the_effective_dimension_of_latents_and_used_codes():
    from medvq.metrics import effective_dimension

    g = torch.Generator().manual_seed(1)
    # latents on a 2-D plane of a 3-D space; codes 0..3 used, code 4 unused and far off the plane
    latents = torch.randn(64, 3, generator=g) * torch.tensor([1.0, 1.0, 0.0])
    codebook = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0], [0, 0, 9.0]])
    metric = CodebookCoverage(codebook)
    metric.update({"indices": torch.arange(64) % 4, "latents": latents})
    out = metric.compute()
    assert out["latent_effective_dim"] == pytest.approx(effective_dimension(latents), rel=1e-9)
    assert out["codebook_effective_dim"] == pytest.approx(2.0, rel=1e-9)  # the unused code 4 is left out
