"""Next-scale sampling speed of :func:`medvq.networks.sample_var` with and without the KV cache.

Builds a VAR transformer (``--size tiny`` or ``d16``, random weights) and a multi-scale quantizer with VAR's 10
scales (1 to 16 squared, 680 tokens per image), then times ``sample_var`` with ``use_kv_cache=True`` and ``False`` in
the same process: one warm-up call each, then the median of ``--repeats`` calls (``torch.cuda.synchronize`` around each
on CUDA). Classifier-free guidance is on (``--guidance 2.5``, VAR's FID setting), so the transformer runs a doubled
batch. Tokens/s counts the 680 tokens of each generated image; the ratio is uncached time over cached time.

    python benchmarks/var_sampling.py --size tiny --batch 8 --repeats 3
    python benchmarks/var_sampling.py --size d16 --batch 32 --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse

import torch
from _timing import median_seconds

from medvq.networks import VAR_SCALE_LENGTHS, sample_var, var_d16, var_tiny
from medvq.quantizers import MultiScaleResidualQuantizer

VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
SIZES = {"tiny": (var_tiny, 256, 8), "d16": (var_d16, 4096, 32)}  # builder, codebook size V, code dimension D


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--batch", type=int, default=8, help="images per sample_var call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per mode (median reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="transformer weights' dtype (the quantizer stays float32)")
    parser.add_argument("--guidance", type=float, default=2.5)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    builder, num_embeddings, embedding_dim = SIZES[args.size]
    torch.manual_seed(0)
    quantizer = MultiScaleResidualQuantizer(num_embeddings=num_embeddings, embedding_dim=embedding_dim,
                                            scales=VAR_SCALES).to(device).eval()
    var = builder(num_embeddings=num_embeddings, embedding_dim=embedding_dim, scale_lengths=VAR_SCALE_LENGTHS,
                  num_conditions=8)
    var = var.to(device=device, dtype=getattr(torch, args.dtype)).eval()
    condition = torch.zeros(args.batch, 8, device=device)
    condition[:, 0] = 1.0
    tokens_per_image = sum(VAR_SCALE_LENGTHS)

    results = {}
    for use_kv_cache in (True, False):
        def run(use_kv_cache: bool = use_kv_cache) -> None:
            generator = torch.Generator(device=device).manual_seed(0)
            sample_var(var, quantizer, condition, guidance=args.guidance, top_k=args.top_k, generator=generator,
                       use_kv_cache=use_kv_cache)

        results[use_kv_cache] = median_seconds(run, device, args.repeats)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"VAR sampling: size={args.size} ({var.num_parameters / 1e6:.2f} M parameters), batch={args.batch}, "
          f"{tokens_per_image} tokens/image over {len(VAR_SCALES)} scales, guidance={args.guidance}, "
          f"dtype={args.dtype}, device={name}, median of {args.repeats}")
    print(f"{'mode':<10} {'seconds':>10} {'tokens/s':>12} {'images/s':>10}")
    for use_kv_cache, seconds in results.items():
        mode = "cached" if use_kv_cache else "uncached"
        print(f"{mode:<10} {seconds:>10.4f} {args.batch * tokens_per_image / seconds:>12.0f} "
              f"{args.batch / seconds:>10.2f}")
    print(f"uncached / cached time: {results[False] / results[True]:.2f}x")


if __name__ == "__main__":
    main()
