"""Exact, memory-bounded nearest-code search.

The naive search builds the full ``(N, K)`` distance matrix: 16,384 latents against 131,072 codes is 8 GiB of
float32. Here the rows are processed in blocks so that one block of the distance matrix holds at most
``chunk_size`` elements; each block is one fused GEMM (``torch.addmm``) followed by a row-wise ``min``. The result is
the same as the unchunked search because every row is handled independently.

Why our own and not MONAI's: ``monai.networks.layers.EMAQuantizer.quantize`` materialises the full distance matrix and
a one-hot ``(N, K)`` encoding; ``benchmarks/quantizer.py`` measures the difference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch

__all__ = ["DEFAULT_CHUNK_SIZE", "NearestCodes", "nearest_codes"]

#: Default bound on the number of elements of one distance block (2**20 float32 = 4 MiB). With CODE_BLOCK it was
#: the fastest setting measured by ``python benchmarks/search_blocks.py`` on a 2-core CPU (table and figures in
#: ``docs/benchmarks.md``: larger blocks or unblocked codes were slower, cdist + argmin several times slower).
DEFAULT_CHUNK_SIZE = 2**20
#: Largest number of codes in one distance block (see the blocking comment in :func:`nearest_codes`).
CODE_BLOCK = 2048
#: A CPU search of at least this many (row, code) pairs is split into row ranges searched by independent
#: single-threaded workers, one per intra-op thread (see :func:`_search_in_workers`); 0 never splits. 2**28 takes in
#: k-means at the switch (131072 x 16384 = 2**31 per Lloyd pass) but not a quantizer's forward at the sizes of
#: ``benchmarks/quantizer.py`` (16384 x 8192 = 2**27), where the workers gained nothing on a quiet machine and their
#: threads' malloc arenas raised the step's peak memory from ~50 MB to ~106 MB.
WORKER_MIN_PAIRS = 2**28


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
    running minimum. On the CPU with more than one code block, the first pass keeps only minimum values and a second
    pass finds the index inside each row's winning block (see :func:`_search_values_then_indices`). Peak extra memory
    is one ``(rows, codes)`` block with ``rows * codes <= chunk_size`` (at least one row).

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
    codes_per_block = min(num_codes, CODE_BLOCK, chunk_size)
    rows_per_block = max(1, chunk_size // codes_per_block)
    # the two-pass search pays off on the CPU, where min with indices is the slow kernel; on a GPU it would add a
    # host sync (the per-block row counts) for nothing, so GPUs keep the one-pass search
    if torch.jit.is_tracing() or x.device.type != "cpu":
        indices = _search_with_indices(x, codebook_t, c_sq, rows_per_block, codes_per_block)
    else:
        search = _search_with_indices if codes_per_block >= num_codes else _search_values_then_indices
        if WORKER_MIN_PAIRS and num_rows * num_codes >= WORKER_MIN_PAIRS and torch.get_num_threads() > 1:
            indices = _search_in_workers(search, x, codebook_t, c_sq, rows_per_block, codes_per_block,
                                         torch.get_num_threads())
        else:
            indices = search(x, codebook_t, c_sq, rows_per_block, codes_per_block)
    distances = None
    if return_distances:
        # recomputed from the differences: the expanded form loses ~1e-7 * ||x||^2 to cancellation, which would hide
        # exact duplicates (distance 0) and the farthest points k-means re-seeds from; in row blocks, so that the
        # (rows, D) difference stays small
        if torch.jit.is_tracing():
            distances = (x - codebook[indices]).square().sum(1)
        else:
            distances = torch.empty(num_rows, dtype=x.dtype, device=x.device)
            step = max(rows_per_block, 1 << 14)
            for start in range(0, num_rows, step):
                rows = slice(start, start + step)
                distances[rows] = (x[rows] - codebook[indices[rows]]).square().sum(1)
    return NearestCodes(indices, distances)


def _block(x_rows: torch.Tensor, codebook_t: torch.Tensor, c_sq: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
    """``||c||^2 - 2 x.c`` of some rows against codes ``k0:k1``: one fused GEMM, ``(rows, k1 - k0)``."""
    return torch.addmm(c_sq[k0:k1], x_rows, codebook_t[:, k0:k1], beta=1.0, alpha=-2.0)


def _search_with_indices(
    x: torch.Tensor, codebook_t: torch.Tensor, c_sq: torch.Tensor, rows_per_block: int, codes_per_block: int
) -> torch.Tensor:
    """One pass: every block reduced by ``min`` with indices, code blocks merged by a running minimum.

    Used when all codes fit one block (nothing to save by the two-pass search), on GPUs, and while tracing: the graph
    must not depend on the data (the two-pass search groups rows by their winning block)."""
    num_rows, num_codes = x.shape[0], codebook_t.shape[1]
    tracing = torch.jit.is_tracing()
    if tracing:
        # tracing unrolls the Python loops for the example's size: a graph traced on a small batch would leave the
        # rows of a larger one unassigned, so a traced search takes all rows in one block (unbounded memory, but
        # correct); the loop over code blocks stays, since K is fixed
        rows_per_block = max(num_rows, 1)
    indices = torch.empty(num_rows, dtype=torch.long, device=x.device)
    for start in range(0, num_rows, rows_per_block):
        xb = x if tracing else x[start : start + rows_per_block]  # (n, D)
        best_value, best_index = None, None
        for k0 in range(0, num_codes, codes_per_block):
            # .min(dim=1): 2.7x faster than .argmin(dim=1) on one CPU, 0.83x on another (benchmarks/search_blocks.py,
            # docs/benchmarks.md); both keep the first minimum
            value, index = _block(xb, codebook_t, c_sq, k0, k0 + codes_per_block).min(dim=1)
            if best_value is None:
                best_value, best_index = value, index
            else:
                better = value < best_value  # strict: ties keep the lower code index, as an unblocked argmin
                best_value = torch.where(better, value, best_value)
                best_index = torch.where(better, index + k0, best_index)
        if tracing:
            # one block of all rows: return it as is; a slice assignment would bake the example's row count into
            # the graph (a traced tokenizer must work for any batch size)
            return best_index
        indices[start : start + rows_per_block] = best_index
    return indices


def _search_values_then_indices(
    x: torch.Tensor, codebook_t: torch.Tensor, c_sq: torch.Tensor, rows_per_block: int, codes_per_block: int
) -> torch.Tensor:
    """Two passes: first the minimum *value* of every (row, code block) and the block that holds the row's minimum,
    then the index inside that one block only.

    Why: on the CPU ``min(dim=1)`` with indices costs 5-22x ``amin(dim=1)`` (values only, vectorised;
    ``benchmarks/search_blocks.py`` on two CPUs), and it was half of a search's time. Here every block of the first pass is reduced
    by ``amin``; in the second pass each row meets the codes of its winning block once more (one GEMM of ``1 / B`` of
    the first pass's size for ``B`` code blocks) and only those are reduced with indices. The result is the same exact
    search: the winning block is the first that holds the row's minimum (strict comparison), and inside it ``min``
    keeps the first minimum, as an unblocked argmin does (up to the float rounding of a GEMM of another row count).
    ``benchmarks/kmeans.py`` prints the gain on k-means against faiss, quiet and under load.
    """
    num_rows, num_codes = x.shape[0], codebook_t.shape[1]
    best_block = torch.empty(num_rows, dtype=torch.long, device=x.device)
    starts = range(0, num_codes, codes_per_block)
    for start in range(0, num_rows, rows_per_block):
        xb = x[start : start + rows_per_block]  # (n, D)
        value, block = None, None
        for b, k0 in enumerate(starts):
            v = _block(xb, codebook_t, c_sq, k0, k0 + codes_per_block).amin(dim=1)
            if value is None:
                value, block = v, torch.zeros(v.shape, dtype=torch.long, device=x.device)
            else:
                better = v < value  # strict: ties keep the earlier block, so the lower code index
                value = torch.where(better, v, value)
                block.masked_fill_(better, b)
        best_block[start : start + rows_per_block] = block
    indices = torch.empty(num_rows, dtype=torch.long, device=x.device)
    order = torch.argsort(best_block, stable=True)  # rows grouped by their winning block
    counts = torch.bincount(best_block, minlength=len(starts)).tolist()
    offset = 0
    for b, count in enumerate(counts):
        k0 = starts[b]
        for r0 in range(offset, offset + count, rows_per_block):
            rows = order[r0 : min(r0 + rows_per_block, offset + count)]
            indices[rows] = _block(x[rows], codebook_t, c_sq, k0, k0 + codes_per_block).min(dim=1).indices + k0
        offset += count
    return indices



_THREADS_LOCK = threading.Lock()


def _search_in_workers(
    search: Callable[..., torch.Tensor], x: torch.Tensor, codebook_t: torch.Tensor, c_sq: torch.Tensor,
    rows_per_block: int, codes_per_block: int, workers: int,
) -> torch.Tensor:
    """``search`` over ``workers`` contiguous row ranges, each in its own thread with one intra-op thread.

    Why: every torch op of the search is one OpenMP parallel region that ends in a barrier, and a search is thousands
    of short ops (a GEMM and a reduction per block, ~0.1-1 ms each). On a machine whose cores are shared with other
    processes, the scheduler takes a team thread off its core for a whole time slice (milliseconds) and the team
    waits at every barrier: the one-team search took 3.2x its quiet time with one busy process per core, against
    1.8x for independent single-threaded workers, which never wait for each other before the end
    (``benchmarks/kmeans.py`` prints both, quiet and loaded). The GIL is released inside each op, so the workers run
    in parallel.

    ``torch.set_num_threads(1)`` in a worker sets that thread's OpenMP and MKL thread counts; it also stores 1 in
    PyTorch's process-wide default for threads that start afterwards, so the caller's count is put back as soon as
    the workers are done. The calling thread's own count is never changed.
    """
    num_rows = x.shape[0]
    indices = torch.empty(num_rows, dtype=torch.long, device=x.device)
    bounds = [(w * num_rows // workers, (w + 1) * num_rows // workers) for w in range(workers)]

    def work(bound: tuple[int, int]) -> None:
        torch.set_num_threads(1)
        r0, r1 = bound
        with torch.no_grad():  # grad mode is per thread: the caller's no_grad does not reach the workers
            indices[r0:r1] = search(x[r0:r1], codebook_t, c_sq, rows_per_block, codes_per_block)

    with _THREADS_LOCK:  # one split search at a time: a second one would read the workers' default of 1
        caller_threads = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medvq-search") as pool:
                list(pool.map(work, bounds))  # re-raises a worker's exception here
        finally:
            torch.set_num_threads(caller_threads)
    return indices
