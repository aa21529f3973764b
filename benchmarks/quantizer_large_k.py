"""The quantizer's forward at K = 2**17 codes, D = 32, N = 65,536 latents on the CPU: exact, and how much memory.

``VectorQuantizer`` (gradient codebook, active) runs one forward pass on a ``(16, 32, 64, 64)`` latent map (N =
65,536 latents) against 131,072 codes. Exactness: the indices of 4,096 latents (evenly spaced) are checked against a
float64 brute force over the whole codebook; a latent counts as exact when its code is the float64 nearest or ties
with it to float32 rounding (the search works in float32). Memory: the growth of the process's peak resident set
(``VmHWM``, reset before the forward) above its resident set after the inputs and the module exist, against what one
unchunked ``(N, K)`` float32 distance matrix would take. Time: one forward (the median of ``--repeats``).

    OMP_NUM_THREADS=2 python benchmarks/quantizer_large_k.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medvq.quantizers import VectorQuantizer


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        lines = f.read().splitlines()
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def _reset_peak() -> float:
    """Reset the process's peak resident set (Linux: ``clear_refs`` 5) and return the current resident set, MiB; the
    set-up's own peak (the random codebook, the samples) must not hide the forward's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codes", type=int, default=2**17)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--side", type=int, default=64, help="latent map side; N = 16 * side**2")
    parser.add_argument("--check", type=int, default=4096, help="latents checked against float64 brute force")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    quantizer = VectorQuantizer(args.codes, args.dim)
    with torch.no_grad():
        quantizer.activate(torch.randn(args.codes, args.dim), init="samples")
    z = torch.randn(16, args.dim, args.side, args.side)
    n = z.shape[0] * args.side * args.side
    quantizer.eval()
    before = _reset_peak()
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            start = time.perf_counter()
            indices = quantizer(z).indices.reshape(-1)
            times.append(time.perf_counter() - start)
    growth = _status_mib("VmHWM") - before

    flat = z.movedim(1, -1).reshape(-1, args.dim)
    rows = torch.linspace(0, n - 1, args.check).long()
    codebook = quantizer.codebook.double()
    exact = 0
    for block in rows.split(512):
        d64 = torch.cdist(flat[block].double(), codebook)  # (b, K) float64
        best = d64.min(dim=1).values
        chosen = d64.gather(1, indices[block, None]).squeeze(1)
        exact += int(((chosen - best) <= 1e-6 * best.clamp_min(1.0)).sum())
    dense_mib = n * args.codes * 4 / 2**20
    print(f"N={n}, D={args.dim}, K={args.codes}, {torch.get_num_threads()} threads")
    print(f"  forward: {statistics.median(times):.2f} s (median of {args.repeats})")
    print(f"  exact: {exact} of {args.check} checked latents have the float64 nearest code (or a tie to float32 "
          f"rounding)")
    print(f"  peak RSS growth during the forward: {growth:.0f} MiB; an unchunked (N, K) float32 distance matrix: "
          f"{dense_mib:.0f} MiB ({growth / dense_mib:.4f}x)")


if __name__ == "__main__":
    main()
