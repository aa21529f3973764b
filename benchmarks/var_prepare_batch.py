"""Stage-2 input pipeline: tokens pre-computed once vs images tokenized on the fly by the frozen tokenizer.

Times :class:`medvq.engines.VARPrepareBatch` on the same batch given as ``{"tokens", "label"}`` (pre-computed, what
the ``odir_var`` bundle does by default, ``precompute_tokens: true``) and as ``{"image", "label"}`` (tokenized every
step), in the same process, and also one full training step (prepare + VAR forward/backward/step) each way, so the
ratio is what a user sees per iteration. One warm-up call, then the median of ``--repeats``.

    python benchmarks/var_prepare_batch.py --tokenizer tiny --generator tiny --batch 8
    python benchmarks/var_prepare_batch.py --tokenizer f16 --generator d16 --batch 32 --device cuda
"""

from __future__ import annotations

import argparse

import torch
from _timing import median_seconds

from medvq.engines import VARPrepareBatch
from medvq.losses import NextScaleLoss
from medvq.networks import msvqgan_f16, msvqgan_tiny, var_d16, var_tiny

# tokenizer builder, image size (VAR's 16x16 last scale), codebook size, code dimension
TOKENIZERS = {"tiny": (msvqgan_tiny, 64, 256, 8), "f16": (msvqgan_f16, 256, 4096, 32)}
GENERATORS = {"tiny": var_tiny, "d16": var_d16}
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", choices=sorted(TOKENIZERS), default="tiny")
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    build, size, num_embeddings, dim = TOKENIZERS[args.tokenizer]
    tokenizer = build(num_embeddings=num_embeddings, embedding_dim=dim, scales=VAR_SCALES).to(device).eval()
    generator = GENERATORS[args.generator](num_embeddings=num_embeddings, embedding_dim=dim,
                                           scale_lengths=tokenizer.quantizer.scale_lengths).to(device)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=1e-4)
    loss_fn = NextScaleLoss()
    prepare = VARPrepareBatch(tokenizer)
    images = torch.rand(args.batch, 3, size, size, device=device) * 2 - 1
    label = torch.zeros(args.batch, 8, device=device)
    label[:, 0] = 1
    tokens = prepare.tokens_of(images)
    from_tokens, from_images = {"tokens": tokens, "label": label}, {"image": images, "label": label}

    def step(batch: dict) -> None:
        x, target, (condition,), _ = prepare(batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(generator(x, condition), target).backward()
        optimizer.step()

    prep_tokens = median_seconds(lambda: prepare(from_tokens, device), device, args.repeats)
    prep_images = median_seconds(lambda: prepare(from_images, device), device, args.repeats)
    step_tokens = median_seconds(lambda: step(from_tokens), device, args.repeats)
    step_images = median_seconds(lambda: step(from_images), device, args.repeats)
    print(f"stage-2 input: tokenizer={args.tokenizer} ({size} px, {tokens.shape[1]} tokens/image), "
          f"generator={args.generator}, batch={args.batch}, device={device} "
          f"({torch.get_num_threads()} threads), median of {args.repeats}")
    print(f"{'':22s}{'precomputed':>14s}{'on the fly':>14s}{'ratio':>10s}")
    print(f"{'prepare_batch (s)':22s}{prep_tokens:14.4f}{prep_images:14.4f}{prep_images / prep_tokens:9.1f}x")
    print(f"{'training step (s)':22s}{step_tokens:14.4f}{step_images:14.4f}{step_images / step_tokens:9.2f}x")


if __name__ == "__main__":
    main()
