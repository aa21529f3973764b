"""nearest_codes: exact against a brute-force reference, chunk-size invariant, memory bounded by the chunk."""

from __future__ import annotations

import pytest
import torch

from medvq.quantizers import nearest_codes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "num_codes,chunk_size",  # 4500 > CODE_BLOCK: codes are split into blocks too
    [(129, 1), (129, 97), (129, 1000), (129, 2**30), (4500, 1000), (4500, 3000), (4500, 2**30)],
)
def test_chunked_equals_unchunked_and_brute_force(dtype, chunk_size, num_codes):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(513, 6, generator=g, dtype=dtype)
    codes = torch.randn(num_codes, 6, generator=g, dtype=dtype)
    result = nearest_codes(x, codes, chunk_size=chunk_size, return_distances=True)
    brute = ((x[:, None, :] - codes[None]) ** 2).sum(-1)  # (N, K) direct differences, no expansion trick
    assert torch.equal(result.indices, brute.argmin(1))
    torch.testing.assert_close(result.distances, brute.min(1).values, rtol=1e-4, atol=1e-4)
    assert torch.equal(result.indices, nearest_codes(x, codes, chunk_size=2**30).indices)


def test_distances_are_optional():
    assert nearest_codes(torch.randn(4, 2), torch.randn(3, 2)).distances is None


def test_peak_block_is_bounded_by_chunk_size(monkeypatch):
    """Every distance block the search builds holds at most chunk_size elements (or one row)."""
    shapes = []
    real_addmm = torch.addmm

    def spy(*args, **kwargs):
        out = real_addmm(*args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "addmm", spy)
    nearest_codes(torch.randn(1000, 4), torch.randn(300, 4), chunk_size=3000)
    assert shapes and all(r * k <= 3000 for r, k in shapes)
    assert sum(r for r, _ in shapes) == 1000
    shapes.clear()
    nearest_codes(torch.randn(100, 4), torch.randn(5000, 4), chunk_size=4096)  # codes split into blocks too
    assert shapes and all(r * k <= 4096 for r, k in shapes)
    assert sum(k for r, k in shapes if r == shapes[0][0]) >= 5000


def test_errors():
    with pytest.raises(ValueError, match="x has 3 channels but the codebook has dimension 2"):
        nearest_codes(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="expects x \\(N, D\\)"):
        nearest_codes(torch.randn(4), torch.randn(5, 2))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        nearest_codes(torch.randn(4, 2), torch.randn(5, 2), chunk_size=0)


def test_two_pass_search_equals_the_one_pass_search_and_keeps_the_first_minimum():
    """The CPU's two-pass search (block minima by value, then the index inside the winning block) gives the one-pass
    search's indices, and on exact ties the lowest code index, within a block and across blocks."""
    from medvq.quantizers import search

    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 8, generator=g)
    codes = torch.randn(5000, 8, generator=g)
    # duplicates: code 4321 (in a later block) repeats code 17, and code 18 repeats code 17 inside its block
    codes[4321] = codes[17]
    codes[18] = codes[17]
    x[:5] = codes[17]  # rows whose nearest codes are the three exact duplicates
    c_sq = (codes * codes).sum(1)
    one = search._search_with_indices(x, codes.t(), c_sq, 512, 1024)
    two = search._search_values_then_indices(x, codes.t(), c_sq, 512, 1024)
    assert torch.equal(one, two)
    assert two[:5].tolist() == [17] * 5
    brute = ((x[:, None, :] - codes[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(two[5:], brute[5:])
    # nearest_codes takes the two-pass path here (several code blocks on the CPU) and agrees too
    assert torch.equal(nearest_codes(x, codes, chunk_size=512 * 1024).indices, two)


def test_large_cpu_searches_split_over_single_threaded_workers_without_changing_the_callers_threads(monkeypatch):
    """Above WORKER_MIN_PAIRS a CPU search runs in independent single-threaded workers (robust on shared cores):
    the same indices as one team, and neither the caller's thread count nor the default of later threads change."""
    import threading

    from medvq.quantizers import search

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2000, 8, generator=g, requires_grad=True)
    codes = torch.randn(3000, 8, generator=g)
    calls = []
    real = search._search_in_workers
    monkeypatch.setattr(search, "_search_in_workers", lambda *a: calls.append(a[-1]) or real(*a))
    monkeypatch.setattr(search, "WORKER_MIN_PAIRS", 2000 * 3000)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        split = search.nearest_codes(x, codes, chunk_size=256 * 1024, return_distances=True)
        assert calls == [2]
        assert torch.get_num_threads() == 2
        seen = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert seen == [2]  # the process-wide default is back for threads that start later
        monkeypatch.setattr(search, "WORKER_MIN_PAIRS", 0)
        team = search.nearest_codes(x, codes, chunk_size=256 * 1024, return_distances=True)
    finally:
        torch.set_num_threads(before)
    assert calls == [2]  # 0 never splits
    assert torch.equal(split.indices, team.indices)
    assert torch.equal(split.distances, team.distances) and not split.distances.requires_grad
