"""kmeans: recovers separated clusters, deterministic for a seed, re-seeds empty clusters, Lloyd lowers inertia."""

from __future__ import annotations

import pytest
import torch

from medvq.quantizers import kmeans, nearest_codes
from medvq.quantizers.kmeans import _lloyd_step


def _blobs(num_blobs=8, per_blob=50, dim=3, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_blobs, dim, generator=g) * 10
    points = centres.repeat_interleave(per_blob, 0) + spread * torch.randn(num_blobs * per_blob, dim, generator=g)
    return centres, points


def test_recovers_well_separated_clusters():
    centres, points = _blobs()
    result = kmeans(points, 8, iterations=10, seed=0)
    # every true centre has a centroid within the noise level
    nearest = torch.cdist(centres, result.centroids).min(1).values
    assert float(nearest.max()) < 0.1
    assert sorted(result.counts.tolist()) == [50] * 8
    # the reported inertia (last assignment) bounds the returned centroids' inertia from above, and is tight here
    d = nearest_codes(points, result.centroids, return_distances=True).distances
    assert float(d.double().sum()) <= result.inertia * (1 + 1e-6)
    assert result.inertia == pytest.approx(float(d.double().sum()), rel=1e-3)


def test_deterministic_for_a_seed_and_seed_matters():
    x = torch.randn(600, 4)
    a, b = kmeans(x, 32, iterations=5, seed=7), kmeans(x, 32, iterations=5, seed=7)
    assert torch.equal(a.centroids, b.centroids) and a.inertia == b.inertia
    c = kmeans(x, 32, iterations=0, seed=8)
    assert not torch.equal(kmeans(x, 32, iterations=0, seed=7).centroids, c.centroids)


def test_seeding_from_a_subset():
    x = torch.randn(3000, 4)
    subset = kmeans(x, 64, iterations=5, seed=0, seeding_samples=200)
    full = kmeans(x, 64, iterations=5, seed=0)
    assert subset.inertia == pytest.approx(full.inertia, rel=0.05)
    with pytest.raises(ValueError, match="seeding_samples must be >= num_clusters=64"):
        kmeans(x, 64, seeding_samples=10)


def test_lloyd_iterations_lower_inertia():
    x = torch.randn(2000, 4)
    seeding_only = kmeans(x, 64, iterations=0, seed=0).inertia
    refined = kmeans(x, 64, iterations=10, seed=0).inertia
    assert refined < 0.9 * seeding_only


@pytest.mark.parametrize("rounds", [1, 4, 1000])
def test_seeding_picks_distinct_samples(rounds):
    _, points = _blobs(num_blobs=4, per_blob=10)
    result = kmeans(points, 40, iterations=0, seed=0, seeding_rounds=rounds)  # K == N: every sample is a seed
    assert torch.unique(result.centroids, dim=0).shape[0] == 40
    assert result.inertia == pytest.approx(0.0, abs=1e-6)


def test_empty_clusters_are_reseeded():
    # 3 distinct points, 3 clusters, but heavy duplication: a seeding by duplicates would leave clusters empty
    x = torch.tensor([[0.0, 0.0]] * 20 + [[5.0, 5.0]] * 20 + [[9.0, 0.0]])
    result = kmeans(x, 3, iterations=5, seed=0)
    assert sorted(result.counts.tolist()) == [1, 20, 20]
    assert result.inertia == pytest.approx(0.0, abs=1e-6)


def test_lloyd_step_reseeds_an_empty_cluster_with_the_farthest_sample():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.0, 3.0]])
    centroids = torch.tensor([[0.0, 0.0], [5.0, 1.0], [100.0, 100.0]])  # the third centroid attracts nothing
    new, reseeded, counts, _ = _lloyd_step(x, centroids, chunk_size=1024)
    assert counts.tolist() == [2, 2, 0]
    assert reseeded == 1
    # (5, 3) is the sample farthest from its centroid (5, 1); it becomes the re-seeded centroid
    torch.testing.assert_close(new, torch.tensor([[0.05, 0.0], [5.0, 1.5], [5.0, 3.0]]))


def test_keeps_device_and_dtype():
    x = torch.randn(100, 3, dtype=torch.float64)
    result = kmeans(x, 5, iterations=2)
    assert result.centroids.dtype == torch.float64 and result.centroids.device == x.device
    half = kmeans(x.bfloat16(), 5, iterations=2)
    assert half.centroids.dtype == torch.bfloat16


def test_errors():
    with pytest.raises(ValueError, match="at least num_clusters=10 samples, got N=5"):
        kmeans(torch.randn(5, 2), 10)
    with pytest.raises(TypeError, match="floating tensor"):
        kmeans(torch.ones(5, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        kmeans(torch.randn(5), 2)
    with pytest.raises(ValueError, match="num_clusters must be an integer >= 1"):
        kmeans(torch.randn(5, 2), 0)
    with pytest.raises(ValueError, match="NaN or inf"):
        kmeans(torch.tensor([[float("nan"), 0.0], [1.0, 1.0]]), 1)
