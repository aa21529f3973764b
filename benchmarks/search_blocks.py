"""Block shape of the chunked nearest-code search: time of one search for several ``chunk_size`` / ``CODE_BLOCK``.

Prints, for N latents against K codes, the best-of-``--repeats`` time of ``nearest_codes`` per setting (the minimum
is the least noisy statistic on a shared machine) and its ratio to the
default, plus a full-matrix ``torch.cdist(...).argmin`` reference; the defaults in ``medvq/quantizers/search.py``
cite this command:

    python benchmarks/search_blocks.py                 # N=32768, D=32, K=16384
    python benchmarks/search_blocks.py --k 8192 --n 16384
"""

from __future__ import annotations

import argparse
import time

import torch

import medvq.quantizers.search as search


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32768)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--k", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x, codes = torch.randn(args.n, args.d, generator=g), torch.randn(args.k, args.d, generator=g)
    default_block, default_chunk = search.CODE_BLOCK, search.DEFAULT_CHUNK_SIZE
    _time(lambda: search.nearest_codes(x, codes), args.repeats)  # first runs pay page faults of fresh blocks
    base = _time(lambda: search.nearest_codes(x, codes), args.repeats)
    print(f"N={args.n}, D={args.d}, K={args.k}, {torch.get_num_threads()} threads; "
          f"default (chunk_size=2**{default_chunk.bit_length() - 1}, CODE_BLOCK={default_block}): {base:.3f} s")
    print(f"{'chunk_size':>12}{'CODE_BLOCK':>12}{'seconds':>10}{'/ default':>11}")
    for code_block in (1024, 2048, 4096, args.k):
        for power in (18, 20, 22, 24):
            search.CODE_BLOCK = code_block
            t = _time(lambda: search.nearest_codes(x, codes, chunk_size=2**power), args.repeats)
            print(f"{'2**' + str(power):>12}{code_block:>12}{t:>10.3f}{t / base:>11.2f}")
    search.CODE_BLOCK = default_block
    block = torch.addmm((codes * codes).sum(1)[:2048], x[:512], codes[:2048].t(), alpha=-2.0)  # one default block
    t_min = _time(lambda: [block.min(dim=1) for _ in range(100)], args.repeats)
    t_argmin = _time(lambda: [block.argmin(dim=1) for _ in range(100)], args.repeats)
    t_amin = _time(lambda: [block.amin(dim=1) for _ in range(100)], args.repeats)
    print(f"row reduction of a 512 x 2048 block: argmin(dim=1) / min(dim=1) = {t_argmin / t_min:.2f}, "
          f"min(dim=1) (values + indices) / amin(dim=1) (values only) = {t_min / t_amin:.2f}")
    if args.n * args.k <= 2**29:
        t = _time(lambda: torch.cdist(x, codes).argmin(1), 1)
        print(f"torch.cdist(x, codes).argmin(1) (full N x K matrix): {t:.3f} s, {t / base:.2f} x default")


if __name__ == "__main__":
    main()
