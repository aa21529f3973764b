"""Cost of the engine: one tokenizer training iteration through ``TokenizerTrainer`` vs a hand-written loop.

The same model, discriminator, losses and optimizers do the same work per iteration (generator step with VQGAN's
adaptive adversarial weight and gradient clipping, then the discriminator step on real and fake in two calls), once
in a plain Python loop and once through the Ignite engine: bare, and with the per-iteration handlers the bundles
attach (MONAI ``StatsHandler``, ``TensorBoardStatsHandler`` into a temporary folder, medvq's progress bar). Each
variant builds fresh networks from the same seed, runs one warm-up epoch, then the median of ``--repeats`` epochs of
``--iterations`` iterations; the variants alternate, so slow drift of a shared machine hits all of them alike. Prints
images per second and each engine variant's ratio to the hand-written loop (issue #15: target within 5 %).

    python benchmarks/train_step.py                        # vqgan_tiny, 64 px, batch 8 (CPU quickstart size)
    python benchmarks/train_step.py --preset vqgan_f16 --size 256 --batch 12 --device cuda
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

import torch

from medvq.engines import TokenizerTrainer
from medvq.losses import (
    ReconstructionLoss,
    adaptive_adversarial_weight,
    build_discriminator,
    discriminator_loss,
    generator_loss,
)
from medvq.networks import PRESETS


def _build(args: argparse.Namespace, device: torch.device):
    torch.manual_seed(0)
    network = PRESETS[args.preset](num_embeddings=args.codes, embedding_dim=args.dim).to(device)
    critic = build_discriminator(spatial_dims=2, in_channels=3, channels=16, num_layers=2).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4, betas=(0.5, 0.9))
    d_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
    return network, critic, optimizer, d_optimizer, ReconstructionLoss(spatial_dims=2, l1_weight=1.0)


def _batches(args: argparse.Namespace, device: torch.device) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [{"image": (torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 2 - 1).to(device)}
            for _ in range(args.iterations)]


def hand_written(args: argparse.Namespace, device: torch.device, epochs: int) -> list[float]:
    """Seconds per epoch of the same iteration written out by hand (no engine, no events, no output dict)."""
    network, critic, optimizer, d_optimizer, reconstruction_loss = _build(args, device)
    batches = _batches(args, device)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in batches:
            images = batch["image"]
            network.train()
            optimizer.zero_grad(set_to_none=True)
            output = network(images, return_output=True)
            rec = reconstruction_loss(output.reconstruction, images)
            critic.train()
            critic.requires_grad_(False)
            g_adv = generator_loss(critic(output.reconstruction), "hinge")
            weight = 0.1 * adaptive_adversarial_weight(rec.total, g_adv, network.last_layer)
            critic.requires_grad_(True)
            (rec.total + output.quantizer.loss.float() + weight * g_adv).backward()
            torch.nn.utils.clip_grad_norm_([p for p in network.parameters() if p.grad is not None], 1.0)
            optimizer.step()
            d_optimizer.zero_grad(set_to_none=True)
            real, fake = critic(images)[-1], critic(output.reconstruction.detach())[-1]
            discriminator_loss(real, fake, "hinge").backward()
            torch.nn.utils.clip_grad_norm_([p for p in critic.parameters() if p.grad is not None], 1.0)
            d_optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def through_engine(args: argparse.Namespace, device: torch.device, epochs: int, handlers: bool) -> list[float]:
    """Seconds per epoch of ``TokenizerTrainer.run()`` on the same data, with or without the bundles' handlers."""
    network, critic, optimizer, d_optimizer, reconstruction_loss = _build(args, device)
    train_handlers = []
    folder = tempfile.TemporaryDirectory()
    if handlers:
        from monai.handlers import StatsHandler, TensorBoardStatsHandler
        from torch.utils.tensorboard import SummaryWriter

        from medvq.handlers import ProgressBarHandler

        writer = SummaryWriter(folder.name)
        train_handlers = [
            StatsHandler(tag_name="train", output_transform=lambda x: None, iteration_log=False),
            TensorBoardStatsHandler(summary_writer=writer, tag_name="train", output_transform=lambda x: x,
                                    epoch_log=False),
            ProgressBarHandler(output_keys=["loss", "rec_loss", "vq_loss", "batch_perplexity"]),
        ]
    trainer = TokenizerTrainer(
        device=device, max_epochs=epochs, train_data_loader=_batches(args, device), network=network,
        optimizer=optimizer, reconstruction_loss=reconstruction_loss, discriminator=critic, d_optimizer=d_optimizer,
        adversarial_weight=0.1, discriminator_start=0, grad_clip_norm=1.0, train_handlers=train_handlers,
    )
    seconds, marks = [], {}
    from ignite.engine import Events

    @trainer.on(Events.EPOCH_STARTED)
    def _start(engine):
        marks["start"] = time.perf_counter()

    @trainer.on(Events.EPOCH_COMPLETED)
    def _stop(engine):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - marks["start"])

    trainer.run()
    folder.cleanup()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="vqgan_tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--codes", type=int, default=256)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20, help="iterations per timed epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per variant (after one warm-up epoch)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    logging.disable(logging.INFO)  # StatsHandler's epoch lines are not what is measured
    variants = {
        "hand-written loop": lambda: hand_written(args, device, 1 + args.repeats),
        "TokenizerTrainer (no handlers)": lambda: through_engine(args, device, 1 + args.repeats, handlers=False),
        "TokenizerTrainer + bundle handlers": lambda: through_engine(args, device, 1 + args.repeats, handlers=True),
    }
    # alternate whole runs of the variants (3 rounds), each run's first epoch is its warm-up
    epochs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):
        for name, run in variants.items():
            epochs[name] += run()[1:]
    images = args.iterations * args.batch
    base = images / statistics.median(epochs["hand-written loop"])
    print(f"{args.preset}, {args.size} px, batch {args.batch}, {args.iterations} iterations per epoch, "
          f"{device.type}, {torch.get_num_threads()} threads; median of {len(epochs['hand-written loop'])} epochs")
    for name, times in epochs.items():
        rate = images / statistics.median(times)
        print(f"  {name:36s} {rate:8.1f} img/s   {rate / base:5.3f}x the hand-written loop")


if __name__ == "__main__":
    main()
