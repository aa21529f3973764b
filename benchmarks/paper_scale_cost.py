"""What a paper-size ImageNet-100 tokenizer run costs: FLOPs counted, CPU time measured, GPU time computed.

Counts with PyTorch's ``FlopCounterMode`` the floating-point operations of one training step of one 256 px image
through the imagenet100_vq bundle's networks (``vqgan_f16``: forward, L1 + VQ loss, backward; the PatchGAN
discriminator on the real and the reconstructed image, forward and backward), times the same step on this machine's
CPU (the median of ``--repeats``), and computes from the FLOPs the time of a whole run (``--images`` x ``--epochs``
image steps) on GPUs of a published bf16 dense peak (``--peak_tflops``, default the H100 SXM's 989) at model-FLOP
utilisations of 20 %, 35 % and 50 % (an assumption, printed as such: convolutional autoencoders with GroupNorm
usually reach the low end), on 1 and on 8 GPUs (ideal data-parallel scaling). The adaptive GAN weight's two extra
gradients of the last layer and the evaluation passes are not counted (small next to the step).

    OMP_NUM_THREADS=2 python benchmarks/paper_scale_cost.py [--image_size 256] [--epochs 100]

Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medvq.losses import build_discriminator
from medvq.networks import vqgan_f16


def _step(net, disc, x) -> None:
    out = net(x, return_output=True)
    ((out.reconstruction - x).abs().mean() + out.quantizer.loss).backward()
    (disc(x)[-1].mean() + disc(out.reconstruction.detach())[-1].mean()).backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--images", type=int, default=126_689, help="training images (ImageNet-100's)")
    parser.add_argument("--epochs", type=int, default=100, help="the bundle's num_epochs")
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="bf16 dense peak of one GPU (H100 SXM)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    net, disc = vqgan_f16(), build_discriminator(spatial_dims=2, in_channels=3)
    x = torch.rand(1, 3, args.image_size, args.image_size) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        _step(net, disc, x)
    flops = counter.get_total_flops()
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        _step(net, disc, x)
        times.append(time.perf_counter() - started)
    cpu = statistics.median(times)
    total = flops * args.images * args.epochs
    print(f"one training step of one {args.image_size} px image (vqgan_f16 + PatchGAN, forward + backward): "
          f"{flops / 1e12:.3f} TFLOP (counted)")
    print(f"  this CPU: {cpu:.2f} s a step (median of {args.repeats}), {flops / cpu / 1e9:.0f} GFLOP/s; a whole run "
          f"would take {cpu * args.images * args.epochs / 86400 / 365:.1f} years")
    print(f"a run: {args.images:,} images x {args.epochs} epochs = {total / 1e18:.1f} EFLOP; computed on GPUs of "
          f"{args.peak_tflops:.0f} TFLOP/s bf16 peak:")
    for mfu in (0.2, 0.35, 0.5):
        hours = total / (args.peak_tflops * 1e12 * mfu) / 3600
        print(f"  at {mfu:.0%} utilisation (assumed): {hours:.1f} h on 1 GPU, {hours / 8:.1f} h on 8")


if __name__ == "__main__":
    main()
