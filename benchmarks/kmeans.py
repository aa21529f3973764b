"""k-means at N=131072, D=32, K=16384, 10 Lloyd iterations: medvq.quantizers.kmeans vs faiss-cpu's Kmeans.

Both run on the same data (a mixture of 2,000 anisotropic Gaussian blobs, seeded), each in its own process. The
inertia of both results is measured the same way here (exact nearest centroid, float64 sum), so "equal or lower
inertia" compares like with like. faiss is a benchmark-only dependency (``pip install -e .[bench]``); without it
only medvq runs.

    python benchmarks/kmeans.py                 # both contenders, prints times, inertias and ratios
    python benchmarks/kmeans.py --n 32768 --k 4096   # a smaller problem
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


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


def run_contender(name: str, n: int, d: int, k: int, iterations: int, seed: int) -> dict:
    import torch

    x = make_data(n, d)
    if name == "medvq":
        from medvq.quantizers import kmeans

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contender", choices=("medvq", "faiss"))
    parser.add_argument("--n", type=int, default=131072)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--k", type=int, default=16384)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = ["--n", str(args.n), "--d", str(args.d), "--k", str(args.k), "--iterations", str(args.iterations),
             "--seed", str(args.seed)]
    if args.contender:
        print(json.dumps(run_contender(args.contender, args.n, args.d, args.k, args.iterations, args.seed)))
        return
    contenders = ["medvq"]
    try:
        import faiss  # noqa: F401

        contenders.append("faiss")
    except ImportError:
        print("faiss-cpu is not installed (pip install -e .[bench]): running medvq only", file=sys.stderr)
    results = {}
    for name in contenders:
        out = subprocess.run([sys.executable, __file__, "--contender", name, *shape], capture_output=True, text=True,
                             check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[name]))
    if "faiss" in results:
        m, f = results["medvq"], results["faiss"]
        print(
            f"\nN={args.n}, D={args.d}, K={args.k}, {args.iterations} iterations, {m['threads']} threads: "
            f"medvq {m['seconds']:.1f} s, faiss {f['seconds']:.1f} s, "
            f"time medvq/faiss = {m['seconds'] / f['seconds']:.2f} (target <= 1.5); "
            f"inertia medvq/faiss = {m['inertia'] / f['inertia']:.4f} (target <= 1)"
        )


if __name__ == "__main__":
    main()
