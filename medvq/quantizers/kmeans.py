"""k-means in torch: batched k-means++ seeding, chunked Lloyd iterations, empty clusters re-seeded.

This is what :meth:`medvq.quantizers.VectorQuantizer.activate` uses to give birth to a codebook from the latents of
a mature encoder (deferred quantization, arXiv 2603.17052). It runs on the samples' device, never materialises the
``(N, K)`` distance matrix (see :func:`medvq.quantizers.search.nearest_codes`) and is deterministic for a seed.

Seeding: exact k-means++ (Arthur & Vassilvitskii 2007) draws one centre per pass over the data, which is K sequential
passes; for K = 16,384 that alone costs more than the Lloyd iterations. We draw ``ceil(K / seeding_rounds)`` centres
per pass, each proportionally to the squared distance to the centres chosen so far (D^2 sampling without
replacement), as k-means|| (Bahmani et al. 2012) does per round, but without its re-clustering step. The seeds are
drawn from a random subset of
``max(16384, 2 K)`` samples (all of them when N is smaller), as scikit-learn's MiniBatchKMeans seeds from a subset:
D^2 sampling costs one pass over N x K distances, a subset costs a fraction of it, and the Lloyd iterations then run
on all samples (``benchmarks/kmeans.py`` reports the resulting time and inertia against faiss). With
``seeding_rounds >= K`` and ``N <= max(16384, 2 K)`` the seeding is exact k-means++.

Why our own and not faiss or scikit-learn: neither runs on CUDA tensors without a copy (faiss-gpu is a separate
build), and a quantizer must not pull a compiled dependency. ``benchmarks/kmeans.py`` compares speed and inertia
with faiss-cpu's ``Kmeans``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from medvq.quantizers.search import DEFAULT_CHUNK_SIZE, nearest_codes

__all__ = ["KMeansResult", "kmeans"]


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans`.

    Attributes:
        centroids: ``(K, D)`` cluster centres, dtype and device of the samples.
        inertia: sum over samples of the squared distance to their centroid in the last assignment step (float);
            an upper bound of the inertia of the returned centroids (exact with ``iterations=0``).
        counts: ``(K,)`` int64, number of samples per cluster in the last assignment step.
        num_reseeded: total number of empty clusters re-seeded during the Lloyd iterations.
    """

    centroids: torch.Tensor
    inertia: float
    counts: torch.Tensor
    num_reseeded: int


def _validate(samples: torch.Tensor, num_clusters: int, iterations: int, seeding_rounds: int) -> None:
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}.")
    if not samples.is_floating_point():
        raise TypeError(f"samples must be a floating tensor, got dtype {samples.dtype}.")
    if samples.ndim != 2:
        raise ValueError(f"samples must have shape (N, D), got {tuple(samples.shape)}.")
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 1:
        raise ValueError(f"num_clusters must be an integer >= 1, got {num_clusters!r}.")
    if samples.shape[0] < num_clusters:
        raise ValueError(
            f"k-means needs at least num_clusters={num_clusters} samples, got N={samples.shape[0]}: "
            "collect more latents (e.g. more batches) or use fewer clusters."
        )
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}.")
    if seeding_rounds < 1:
        raise ValueError(f"seeding_rounds must be >= 1, got {seeding_rounds}.")
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain NaN or inf values; k-means needs finite latents.")


def _seed_centroids(
    x: torch.Tensor, num_clusters: int, seeding_rounds: int, generator: torch.Generator, chunk_size: int
) -> torch.Tensor:
    """Batched k-means++: ``ceil(K / rounds)`` D^2-sampled centres per pass over the data."""
    n = x.shape[0]
    per_round = max(1, math.ceil(num_clusters / seeding_rounds))
    chosen = torch.empty(num_clusters, dtype=torch.long, device=x.device)
    # 1. the first centre uniformly at random
    chosen[0] = torch.randint(n, (1,), generator=generator, device=x.device)
    min_d2 = nearest_codes(x, x[chosen[:1]], chunk_size, return_distances=True).distances  # (N,)
    filled = 1
    while filled < num_clusters:
        m = min(per_round, num_clusters - filled)
        weights = min_d2.clamp_min(0).double()
        positive = int((weights > 0).sum())
        if positive < m:
            # duplicates in the data: fewer distinct points than centres left; fall back to uniform draws among the
            # points not chosen yet so that every centre is a distinct sample index
            weights = torch.ones_like(weights)
            weights[chosen[:filled]] = 0
        # 2. D^2 sampling without replacement: already chosen points have weight 0 and cannot be drawn again
        new = torch.multinomial(weights, m, replacement=False, generator=generator)
        chosen[filled : filled + m] = new
        filled += m
        # 3. update each point's squared distance to its nearest chosen centre
        d2_new = nearest_codes(x, x[new], chunk_size, return_distances=True).distances
        min_d2 = torch.minimum(min_d2, d2_new)
    return x[chosen].clone()


def _lloyd_step(
    x: torch.Tensor, centroids: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """One Lloyd iteration; returns the new centroids, the number of empty clusters re-seeded, and the counts and
    squared distances of the assignment to the old centroids."""
    num_clusters = centroids.shape[0]
    # 1. assignment (exact, chunked)
    assign = nearest_codes(x, centroids, chunk_size, return_distances=True)
    # 2. update: per-cluster sums and counts without a one-hot (N, K) matrix
    counts = torch.bincount(assign.indices, minlength=num_clusters)
    sums = torch.zeros_like(centroids).index_add_(0, assign.indices, x)
    nonempty = counts > 0
    centroids = torch.where(nonempty[:, None], sums / counts.clamp_min(1)[:, None].to(x.dtype), centroids)
    # 3. empty clusters take the samples farthest from their centroids, distinct samples for distinct clusters
    empty = (~nonempty).nonzero().flatten()
    if empty.numel() > 0:
        far = torch.topk(assign.distances, empty.numel()).indices
        centroids[empty] = x[far]
    return centroids, int(empty.numel()), counts, assign.distances


@torch.no_grad()
def kmeans(
    samples: torch.Tensor,
    num_clusters: int,
    iterations: int = 20,
    seed: int = 0,
    seeding_rounds: int = 64,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seeding_samples: int | None = None,
) -> KMeansResult:
    """Cluster ``samples`` into ``num_clusters`` centroids with k-means++ seeding and Lloyd iterations.

    Each Lloyd iteration assigns every sample to its nearest centroid (exact, chunked) and moves each centroid to the
    mean of its samples. A cluster left empty is re-seeded with the sample farthest from its assigned centroid
    (distinct samples for distinct empty clusters), which is what faiss and scikit-learn do in spirit. As in faiss,
    ``iterations`` Lloyd iterations cost ``iterations`` assignment passes, so the reported inertia and counts are
    those of the last assignment (before the last mean update).

    Args:
        samples: ``(N, D)`` floating tensor, ``N >= num_clusters``; computation happens on its device.
        num_clusters: K, the number of centroids.
        iterations: number of Lloyd iterations (assignment + update). Default 20; 0 returns the seeding.
        seed: seed of the random generator used for seeding; the same seed gives the same result.
        seeding_rounds: number of D^2-sampling passes used to draw the K seeds (see module docstring). Default 64.
        chunk_size: bound on the elements of one distance block, see :func:`nearest_codes`.
        seeding_samples: size of the random subset the seeds are drawn from; default ``max(16384, 2 K)``, capped at N.

    Returns:
        :class:`KMeansResult` (centroids, inertia, counts, num_reseeded).

    Raises:
        TypeError: non-tensor or non-floating samples.
        ValueError: wrong shape, ``N < num_clusters``, non-finite samples, bad iteration counts.

    Example:
        >>> x = torch.randn(1000, 8)
        >>> result = kmeans(x, 16, iterations=10, seed=0)
        >>> result.centroids.shape
        torch.Size([16, 8])
    """
    _validate(samples, num_clusters, iterations, seeding_rounds)
    x = samples.detach()
    compute_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    x = x.to(compute_dtype).contiguous()
    generator = torch.Generator(device=x.device)
    generator.manual_seed(int(seed))

    subset_size = max(16384, 2 * num_clusters) if seeding_samples is None else int(seeding_samples)
    if subset_size < num_clusters:
        raise ValueError(f"seeding_samples must be >= num_clusters={num_clusters}, got {subset_size}.")
    if subset_size >= x.shape[0]:
        pool = x
    else:
        pool = x[torch.randperm(x.shape[0], generator=generator, device=x.device)[:subset_size]]  # (subset, D)
    centroids = _seed_centroids(pool, num_clusters, seeding_rounds, generator, chunk_size)
    num_reseeded = 0
    if iterations == 0:
        final = nearest_codes(x, centroids, chunk_size, return_distances=True)
        counts, sq_distances = torch.bincount(final.indices, minlength=num_clusters), final.distances
    for _ in range(iterations):
        centroids, reseeded, counts, sq_distances = _lloyd_step(x, centroids, chunk_size)
        num_reseeded += reseeded
    # no extra assignment pass for the last update (it would cost one more pass over N x K distances): the inertia
    # of the last assignment bounds the returned centroids' inertia from above, since a mean update never raises it
    inertia = float(sq_distances.double().sum())
    return KMeansResult(centroids.to(samples.dtype), inertia, counts, num_reseeded)
