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
