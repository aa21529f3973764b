"""One VQ training step (forward + backward) at N=16384 latents, D=32, K=8192: medvq vs MONAI vs a bare matmul.

Each contender runs in its own process (``--contender NAME``), so one's memory high-water mark never hides
another's. Time is the median of ``--repeats`` steps after one warm-up step; memory is the growth of the process's
peak resident set (``ru_maxrss``) above its level after imports and set-up. The driver prints one JSON line per
contender and the ratios the targets are stated in:

    python benchmarks/quantizer.py            # all contenders, prints a table and ratios

Contenders:
    medvq_ema       medvq.quantizers.VectorQuantizer(codebook_update="ema"), as MONAI's EMA quantizer
    medvq_gradient  medvq.quantizers.VectorQuantizer(codebook_update="gradient") (codebook loss, VQ-VAE)
    monai           monai.networks.layers.VectorQuantizer(EMAQuantizer(...))
    bare_matmul     one (N, D) @ (D, K) matmul and argmax, forward only: the floor any exact search pays
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CONTENDERS = ("medvq_ema", "medvq_gradient", "monai", "bare_matmul")
B, D, H, W, K = 16, 32, 32, 32, 8192  # z is (B, D, H, W): N = B * H * W = 16384 latents


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def run_contender(name: str, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    z = torch.randn(B, D, H, W) * 0.5
    if name.startswith("medvq"):
        from medvq.quantizers import VectorQuantizer

        vq = VectorQuantizer(K, D, codebook_update=name.split("_", 1)[1], embedding_init="normal")

        def step() -> None:
            x = z.clone().requires_grad_(True)
            out = vq(x)
            (out.quantized.square().mean() + out.loss).backward()

    elif name == "monai":
        from monai.networks.layers import EMAQuantizer, VectorQuantizer as MonaiVQ

        vq = MonaiVQ(EMAQuantizer(spatial_dims=2, num_embeddings=K, embedding_dim=D))

        def step() -> None:
            x = z.clone().requires_grad_(True)
            loss, quantized = vq(x)
            (quantized.square().mean() + loss).backward()

    elif name == "bare_matmul":
        codebook = torch.randn(K, D)
        flat = z.movedim(1, -1).reshape(-1, D).contiguous()  # (N, D)

        def step() -> None:
            (flat @ codebook.t()).argmax(dim=1)  # (N, K) scores -> (N,)

    else:
        raise ValueError(f"unknown contender {name!r}; choose from {CONTENDERS}")

    baseline = _peak_rss_mb()
    step()  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "contender": name,
        "seconds": statistics.median(times),
        "seconds_min": min(times),
        "peak_mb_above_setup": _peak_rss_mb() - baseline,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contender", choices=CONTENDERS, help="run one contender in this process")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.contender:
        print(json.dumps(run_contender(args.contender, args.repeats)))
        return
    results = {}
    for name in CONTENDERS:
        out = subprocess.run(
            [sys.executable, __file__, "--contender", name, "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True,
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[name]))
    bare, monai = results["bare_matmul"], results["monai"]
    print(f"\nN={B * H * W} latents, D={D}, K={K}; median of {args.repeats} steps, {bare['threads']} threads")
    print(f"{'contender':<16}{'seconds':>10}{'x bare':>9}{'MONAI / it':>12}{'peak MB':>10}{'/ MONAI':>9}")
    for name, r in results.items():
        print(
            f"{name:<16}{r['seconds']:>10.3f}{r['seconds'] / bare['seconds']:>9.2f}"
            f"{monai['seconds'] / r['seconds']:>12.2f}{r['peak_mb_above_setup']:>10.1f}"
            f"{r['peak_mb_above_setup'] / max(monai['peak_mb_above_setup'], 1e-9):>9.3f}"
        )
    for name in ("medvq_ema", "medvq_gradient"):
        r = results[name]
        print(
            f"{name}: time/bare = {r['seconds'] / bare['seconds']:.2f} (target <= 2), "
            f"MONAI time/medvq = {monai['seconds'] / r['seconds']:.1f}x (target >= 5), "
            f"peak memory / MONAI = {r['peak_mb_above_setup'] / monai['peak_mb_above_setup']:.3f} (target <= 0.1)"
        )


if __name__ == "__main__":
    main()
