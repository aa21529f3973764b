"""Exact, memory-bounded nearest-code search.

The naive search builds the full ``(N, K)`` distance matrix: 16,384 latents against 131,072 codes is 8 GiB of
float32. Here the rows are processed in blocks so that one block of the distance matrix holds at most
``chunk_size`` elements; each block is one fused GEMM (``torch.addmm``) followed by a row-wise ``min``. The result is
the same as the unchunked search because every row is handled independently.

Why our own and not MONAI's: ``monai.networks.layers.EMAQuantizer.quantize`` materialises the full distance matrix and
a one-hot ``(N, K)`` encoding; ``benchmarks/quantizer.py`` measures the difference.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["NearestCodes", "nearest_codes", "DEFAULT_CHUNK_SIZE"]

#: Default bound on the number of elements of one distance block (2**20 float32 = 4 MiB). With CODE_BLOCK it was
#: the fastest setting measured by ``python benchmarks/search_blocks.py`` on a 2-core CPU (table and figures in
#: ``docs/benchmarks.md``: larger blocks or unblocked codes were slower, cdist + argmin several times slower).
DEFAULT_CHUNK_SIZE = 2**20
#: Largest number of codes in one distance block (see the blocking comment in :func:`nearest_codes`).
CODE_BLOCK = 2048


class NearestCodes(NamedTuple):
    """Result of :func:`nearest_codes`.

    Attributes:
        indices: ``(N,)`` int64, index of the nearest code of each row.
        distances: ``(N,)`` float, squared Euclidean distance to that code, or ``None`` when not asked.
    """

    indices: torch.Tensor
    distances: torch.Tensor | None


@torch.no_grad()
def nearest_codes(
    x: torch.Tensor,
    codebook: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    return_distances: bool = False,
    codebook_sq_norms: torch.Tensor | None = None,
) -> NearestCodes:
    """Find the nearest code (squared Euclidean distance) of every row of ``x``.

    ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2``; the ``||x||^2`` term does not change the argmin, so each block
    computes ``||c||^2 - 2 x.c`` with one ``addmm`` and takes the row minimum; blocks of codes are merged by a
    running minimum. Peak extra memory is one ``(rows, codes)`` block with ``rows * codes <= chunk_size`` (at
    least one row).

    Args:
        x: ``(N, D)`` floating tensor of queries.
        codebook: ``(K, D)`` tensor of codes on the same device.
        chunk_size: maximum number of elements of one distance block. Default 2**20 (4 MiB in float32).
        return_distances: also return the squared distance of each row to its nearest code.
        codebook_sq_norms: optional pre-computed ``(K,)`` squared norms of the codes.

    Returns:
        :class:`NearestCodes` with ``indices`` ``(N,)`` int64 and ``distances`` ``(N,)`` or ``None``.

    Raises:
        ValueError: when the shapes do not match or ``chunk_size < 1``.
    """
    if x.ndim != 2 or codebook.ndim != 2:
        raise ValueError(f"nearest_codes expects x (N, D) and codebook (K, D), got {tuple(x.shape)} and "
                         f"{tuple(codebook.shape)}.")
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels but the codebook has dimension {codebook.shape[1]}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    codebook = codebook.to(x.dtype)
    num_rows, num_codes = x.shape[0], codebook.shape[0]
    c_sq = (codebook * codebook).sum(1) if codebook_sq_norms is None else codebook_sq_norms.to(x.dtype)
    codebook_t = codebook.t()  # (D, K)
    # 2-D blocking: code blocks of at most CODE_BLOCK codes, row blocks filling the rest of chunk_size; a block that
    # stays in cache is reduced faster (benchmarks/search_blocks.py: 512 x 2048 blocks beat 64 x 16384 by ~1.2x)
    if torch.jit.is_tracing():
        # tracing unrolls the Python loops for the example's size: a graph traced on a small batch would leave the
        # rows of a larger one unassigned, so a traced search takes all rows in one block (unbounded memory, but
        # correct); the loop over code blocks stays, since K is fixed
        chunk_size = max(num_rows, 1) * max(num_codes, 1)
    codes_per_block = min(num_codes, CODE_BLOCK, chunk_size)
    rows_per_block = max(1, chunk_size // codes_per_block)
    tracing = torch.jit.is_tracing()
    indices = torch.empty(num_rows, dtype=torch.long, device=x.device)
    distances = torch.empty(num_rows, dtype=x.dtype, device=x.device) if return_distances else None
    for start in range(0, num_rows, rows_per_block):
        xb = x if tracing else x[start : start + rows_per_block]  # (n, D)
        best_value, best_index = None, None
        for k0 in range(0, num_codes, codes_per_block):
            k1 = k0 + codes_per_block
            block = torch.addmm(c_sq[k0:k1], xb, codebook_t[:, k0:k1], beta=1.0, alpha=-2.0)  # (n, k) ||c||^2 - 2x.c
            # .min(dim=1) beats .argmin(dim=1) on CPU (benchmarks/search_blocks.py: 2-3x); both keep the first minimum
            value, index = block.min(dim=1)
            if best_value is None:
                best_value, best_index = value, index
            else:
                better = value < best_value  # strict: ties keep the lower code index, as an unblocked argmin
                best_value = torch.where(better, value, best_value)
                best_index = torch.where(better, index + k0, best_index)
        if tracing:
            # one block of all rows: return it as is; a slice assignment would bake the example's row count into
            # the graph (a traced tokenizer must work for any batch size)
            return NearestCodes(best_index, (xb - codebook[best_index]).square().sum(1) if return_distances else None)
        indices[start : start + rows_per_block] = best_index
        if distances is not None:
            # recomputed from the differences: the expanded form loses ~1e-7 * ||x||^2 to cancellation, which
            # would hide exact duplicates (distance 0) and the farthest points k-means re-seeds from
            distances[start : start + rows_per_block] = (xb - codebook[best_index]).square().sum(1)
    return NearestCodes(indices, distances)
