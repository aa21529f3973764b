"""k-means at N=131072, D=32, K=16384, 10 Lloyd iterations: medvq.quantizers.kmeans vs faiss-cpu's Kmeans.

Both run on the same data (a mixture of 2,000 anisotropic Gaussian blobs, seeded), each in its own process. The
inertia of both results is measured the same way here (exact nearest centroid, float64 sum), so "equal or lower
inertia" compares like with like. faiss is a benchmark-only dependency (``pip install -e .[bench]``); without it
only medvq runs.

Shared machines are where researchers run this, so each contender runs twice: on a quiet machine and with a
competing load the benchmark starts itself (``--load``: that many busy processes, one per core by default, each a
pure-Python spin loop), the contenders taking turns so that both see the same load.

    python benchmarks/kmeans.py                 # both contenders, quiet and loaded, prints times, inertias, ratios
    python benchmarks/kmeans.py --n 32768 --k 4096   # a smaller problem
    python benchmarks/kmeans.py --load 0        # quiet only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

#: medvq's own earlier searches, run with --baselines: one OpenMP team for the whole search (no worker split), and
#: the one-pass search (min with indices on every block) that preceded the two-pass one
BASELINES = ("medvq-one-team", "medvq-one-pass")


def make_data(n: int, d: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    num_blobs = 2000
    centres = torch.randn(num_blobs, d, generator=g) * 4
    scales = torch.rand(num_blobs, d, generator=g) + 0.2
    which = torch.randint(num_blobs, (n,), generator=g)
    return (centres[which] + torch.randn(n, d, generator=g) * scales[which]).contiguous()


def inertia_of(x, centroids) -> float:
    from medvq.quantizers import nearest_codes

    return float(nearest_codes(x, centroids, return_distances=True).distances.double().sum())


def run_contender(name: str, n: int, d: int, k: int, iterations: int, seed: int,
                  worker_min_pairs: int | None = None) -> dict:
    import torch

    x = make_data(n, d)
    if name.startswith("medvq"):
        from medvq.quantizers import kmeans, search

        if worker_min_pairs is not None:
            search.WORKER_MIN_PAIRS = worker_min_pairs
        if name in ("medvq-one-team", "medvq-one-pass"):
            search.WORKER_MIN_PAIRS = 0  # one OpenMP team for the whole search, as before the worker split
        if name == "medvq-one-pass":
            # the search before the two-pass change: every block reduced by min with indices
            def one_pass(x, codebook_t, c_sq, rows, codes):
                return search._search_with_indices(x, codebook_t, c_sq, rows, codes)

            search._search_values_then_indices = one_pass

        start = time.perf_counter()
        result = kmeans(x, k, iterations=iterations, seed=seed)
        seconds = time.perf_counter() - start
        centroids = result.centroids
    elif name == "faiss":
        import faiss

        km = faiss.Kmeans(d, k, niter=iterations, seed=seed, verbose=False)
        data = x.numpy()
        start = time.perf_counter()
        km.train(data)
        seconds = time.perf_counter() - start
        centroids = torch.from_numpy(km.centroids)
    else:
        raise ValueError(f"unknown contender {name!r}")
    return {
        "contender": name,
        "seconds": seconds,
        "inertia": inertia_of(x, centroids),
        "threads": torch.get_num_threads(),
        "n": n, "d": d, "k": k, "iterations": iterations,
    }


@contextlib.contextmanager
def competing_load(processes: int):
    """``processes`` busy pure-Python loops for the duration of the block (none for 0)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        time.sleep(0.5 if spinners else 0)  # let them reach the loop
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contender", choices=("medvq", "faiss", *BASELINES))
    parser.add_argument("--n", type=int, default=131072)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--k", type=int, default=16384)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load", type=int, default=None,
                        help="busy processes of the loaded run (default: one per core); 0 runs the quiet case only")
    parser.add_argument("--worker_min_pairs", type=int, default=None,
                        help="medvq's WORKER_MIN_PAIRS for this run (default: the library's)")
    parser.add_argument("--baselines", action="store_true",
                        help=f"also run medvq's earlier searches {BASELINES} and print medvq's ratio to each")
    args = parser.parse_args()
    shape = ["--n", str(args.n), "--d", str(args.d), "--k", str(args.k), "--iterations", str(args.iterations),
             "--seed", str(args.seed)]
    if args.worker_min_pairs is not None:
        shape += ["--worker_min_pairs", str(args.worker_min_pairs)]
    if args.contender:
        print(json.dumps(run_contender(args.contender, args.n, args.d, args.k, args.iterations, args.seed,
                                       args.worker_min_pairs)))
        return
    contenders = ["medvq", *(BASELINES if args.baselines else ())]
    try:
        import faiss  # noqa: F401

        contenders.append("faiss")
    except ImportError:
        print("faiss-cpu is not installed (pip install -e .[bench]): running medvq only", file=sys.stderr)
    load = os.cpu_count() if args.load is None else args.load
    for busy in sorted({0, load}):
        results = {}
        with competing_load(busy):
            for name in contenders:
                out = subprocess.run([sys.executable, __file__, "--contender", name, *shape], capture_output=True,
                                     text=True, check=True)
                results[name] = {**json.loads(out.stdout.strip().splitlines()[-1]), "busy_processes": busy}
                print(json.dumps(results[name]))
        for baseline in BASELINES:
            if baseline in results:
                print(f"{busy} busy processes: medvq / {baseline} time = "
                      f"{results['medvq']['seconds'] / results[baseline]['seconds']:.2f}")
        if "faiss" in results:
            m, f = results["medvq"], results["faiss"]
            print(
                f"\nN={args.n}, D={args.d}, K={args.k}, {args.iterations} iterations, {m['threads']} threads, "
                f"{busy} busy processes on {os.cpu_count()} cores: medvq {m['seconds']:.1f} s, faiss "
                f"{f['seconds']:.1f} s, time medvq/faiss = {m['seconds'] / f['seconds']:.2f} (target <= 1.5); "
                f"inertia medvq/faiss = {m['inertia'] / f['inertia']:.4f} (target <= 1)\n"
            )

if __name__ == "__main__":
    main()
