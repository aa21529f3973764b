"""Cost of the engines: a training iteration through medvq's ``TokenizerTrainer`` and MONAI's ``SupervisedTrainer``
(VAR), each against the same work in a hand-written loop.

Tokenizer (``--model tokenizer``): the same model, discriminator, losses and optimizers do the same work per iteration
(generator step with VQGAN's adaptive adversarial weight and gradient clipping, then the discriminator step on real and
fake in two calls), once in a plain Python loop and once through the Ignite engine: bare, and with the per-iteration
handlers the bundles attach (MONAI ``StatsHandler``, ``TensorBoardStatsHandler`` into a temporary folder, medvq's
progress bar).

VAR (``--model var``): odir_var's stage 2 as its ``train.json`` wires it — ``VARPrepareBatch`` on pre-computed token
sequences and multi-hot conditions (teacher-forcing input from the tokenizer's quantizer), the generator, the
``NextScaleLoss``, AdamW on ``VARTransformer.parameter_groups(0.05)``, gradient clipping at 2 and the warm-up cosine
schedule stepped every iteration — written out by hand, through a ``SupervisedTrainer`` with only the two handlers that
are part of the step (``GradientClipHandler``, ``LrScheduleHandler``), and with the bundle's handlers that run every
iteration too (``TokenAccuracy``, ``StatsHandler``, ``TensorBoardStatsHandler`` with its epoch ``MetricsWriter``, the
progress bar). Left out: the bundle's sample grids (every 5th epoch), checkpoints and run summary, which do not run per
iteration. The tokens are random (a step's cost does not depend on their values) and the tokenizer is a fresh
``msvqgan_tiny`` whose quantizer is active from construction (as in ``tests/engines/test_var_training.py``); only its
quantizer runs (the teacher-forcing input), as in the bundle with ``precompute_tokens: true``. No AMP (the bundle's
``amp`` is off on the CPU).

Both halves: each variant builds fresh networks from the same seed, runs one warm-up epoch, then ``--repeats`` epochs of
``--iterations`` iterations; the variants alternate over ``--rounds`` rounds, so slow drift of a shared machine hits
all of them alike. Prints the median rate (images, or tokens and steps, per second) and each engine variant's ratio to
the hand-written loop (issue #15: target within 5 %).

    python benchmarks/train_step.py                 # both: vqgan_tiny 64 px batch 8; var_tiny, VAR's 10 scales, batch 8
    python benchmarks/train_step.py --model var --generator var_d16 --codes 4096 --dim 32 --var_batch 32 --device cuda
    python benchmarks/train_step.py --model tokenizer --preset vqgan_f16 --size 256 --batch 12 --device cuda
    python benchmarks/train_step.py --smoke         # 2 iterations, 1 epoch, 1 round, tiny sizes: checks it runs
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import torch
from ignite.engine import Engine, Events

from medvq.engines import TokenizerTrainer, VARPrepareBatch
from medvq.losses import (
    NextScaleLoss,
    ReconstructionLoss,
    adaptive_adversarial_weight,
    build_discriminator,
    discriminator_loss,
    generator_loss,
)
from medvq.networks import PRESETS, VAR_PRESETS, msvqgan_tiny

HAND_WRITTEN = "hand-written loop"
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # VAR's, as odir_var's train_tokenizer.json (680 tokens)
NUM_CONDITIONS = 8  # ODIR's labels


# ------------------------------------------------------------------------------------------------------ shared helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_run(trainer: Engine, device: torch.device) -> list[float]:
    """``trainer.run()``; seconds of each epoch from EPOCH_STARTED to EPOCH_COMPLETED. Registered after the train
    handlers, the stop mark also covers their epoch-end work (metrics' compute, epoch logs)."""
    seconds, marks = [], {}

    @trainer.on(Events.EPOCH_STARTED)
    def _start(engine):
        marks["start"] = time.perf_counter()

    @trainer.on(Events.EPOCH_COMPLETED)
    def _stop(engine):
        _sync(device)
        seconds.append(time.perf_counter() - marks["start"])

    trainer.run()
    return seconds


def _logging_handlers(writer, output_transform: Callable, output_keys: Sequence[str], epoch_log: bool = False,
                      epoch_event_writer: Callable | None = None) -> list:
    """The bundles' per-iteration loggers: StatsHandler (epoch lines only), TensorBoardStatsHandler, progress bar."""
    from monai.handlers import StatsHandler, TensorBoardStatsHandler

    from medvq.handlers import ProgressBarHandler

    return [
        StatsHandler(tag_name="train", output_transform=lambda x: None, iteration_log=False),
        TensorBoardStatsHandler(summary_writer=writer, tag_name="train", output_transform=output_transform,
                                epoch_log=epoch_log, epoch_event_writer=epoch_event_writer),
        ProgressBarHandler(output_keys=list(output_keys)),
    ]


def _compare(variants: dict[str, Callable[[], list[float]]], rounds: int) -> dict[str, list[float]]:
    """Timed epochs of each variant: whole runs alternated over ``rounds``, each run's first epoch dropped (warm-up)."""
    epochs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            epochs[name] += run()[1:]
    return epochs


def _report(header: str, epochs: dict[str, list[float]], work: Sequence[tuple[int, str, str]]) -> list[str]:
    """One line per variant: ``work`` (amount per epoch, unit, number format) per second of the median epoch, and the
    ratio of the first rate to the hand-written loop's."""
    lines = [f"{header}; median of {len(epochs[HAND_WRITTEN])} epochs"]
    base = work[0][0] / statistics.median(epochs[HAND_WRITTEN])
    for name, times in epochs.items():
        median = statistics.median(times)
        rates = "  ".join(f"{format(amount / median, fmt):>10s} {unit}" for amount, unit, fmt in work)
        lines.append(f"  {name:40s} {rates}   {work[0][0] / median / base:5.3f}x the hand-written loop")
    return lines


# ----------------------------------------------------------------------------------------------------------- tokenizer
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
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def through_engine(args: argparse.Namespace, device: torch.device, epochs: int, handlers: bool) -> list[float]:
    """Seconds per epoch of ``TokenizerTrainer.run()`` on the same data, with or without the bundles' handlers."""
    from torch.utils.tensorboard import SummaryWriter

    network, critic, optimizer, d_optimizer, reconstruction_loss = _build(args, device)
    with tempfile.TemporaryDirectory() as folder:
        writer = SummaryWriter(folder) if handlers else None
        train_handlers = _logging_handlers(writer, lambda x: x, ["loss", "rec_loss", "vq_loss", "batch_perplexity"]
                                           ) if handlers else []
        trainer = TokenizerTrainer(
            device=device, max_epochs=epochs, train_data_loader=_batches(args, device), network=network,
            optimizer=optimizer, reconstruction_loss=reconstruction_loss, discriminator=critic,
            d_optimizer=d_optimizer, adversarial_weight=0.1, discriminator_start=0, grad_clip_norm=1.0,
            train_handlers=train_handlers,
        )
        try:
            return _timed_run(trainer, device)
        finally:
            if writer is not None:
                writer.close()


# ----------------------------------------------------------------------------------------------------------------- VAR
def _var_build(args: argparse.Namespace, device: torch.device, epochs: int):
    """Stage 2 as odir_var's train.json (quickstart sizes by default): tokenizer (only its quantizer runs), generator,
    AdamW on VAR's parameter groups, the per-iteration warm-up cosine schedule (warm-up = the first epoch), the
    prepare-batch and the loss."""
    from monai.optimizers import WarmupCosineSchedule

    torch.manual_seed(0)
    # phi_shared=4 as odir_var's train_tokenizer.json; the codebook is msvqgan_tiny's initial one (active on creation)
    tokenizer = msvqgan_tiny(num_embeddings=args.codes, embedding_dim=args.dim, scales=tuple(args.scales),
                             phi_shared=4).to(device).eval()
    generator = VAR_PRESETS[args.generator](
        num_embeddings=args.codes, embedding_dim=args.dim, scale_lengths=tokenizer.quantizer.scale_lengths,
        num_conditions=NUM_CONDITIONS, condition_dropout=0.1,
    ).to(device)
    optimizer = torch.optim.AdamW(generator.parameter_groups(0.05), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05)
    scheduler = WarmupCosineSchedule(optimizer, warmup_steps=args.iterations, t_total=max(1, epochs * args.iterations),
                                     end_lr=0.0, warmup_multiplier=0.0)
    prepare = VARPrepareBatch(tokenizer, condition_key="label", num_conditions=NUM_CONDITIONS)
    return tokenizer, generator, optimizer, scheduler, prepare, NextScaleLoss(label_smoothing=0.0)


def _var_batches(args: argparse.Namespace, length: int) -> list[dict[str, torch.Tensor]]:
    """Collated batches as the bundle's DataLoader yields them on the CPU: ``tokens`` (B, L) int64, ``label`` (B, 8)
    multi-hot float32 (ODIR's labels)."""
    generator = torch.Generator().manual_seed(1)
    return [{"tokens": torch.randint(0, args.codes, (args.var_batch, length), generator=generator),
             "label": (torch.rand(args.var_batch, NUM_CONDITIONS, generator=generator) < 0.25).float()}
            for _ in range(args.iterations)]


def var_hand_written(args: argparse.Namespace, device: torch.device, epochs: int) -> list[float]:
    """Seconds per epoch of stage 2's step written out by hand: what ``SupervisedTrainer._iteration`` and the two step
    handlers do (``zero_grad`` keeps the gradients' memory, MONAI's default ``optim_set_to_none=False``)."""
    tokenizer, generator, optimizer, scheduler, prepare, loss_function = _var_build(args, device, epochs)
    batches = _var_batches(args, sum(tokenizer.quantizer.scale_lengths))
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in batches:
            x, tokens, (condition,), _ = prepare(batch, device, False)  # (B, L - 1, D), (B, L), (B, 8)
            generator.train()
            optimizer.zero_grad(set_to_none=False)
            loss = loss_function(generator(x, condition), tokens).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in generator.parameters() if p.grad is not None], 2.0)
            optimizer.step()
            scheduler.step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def var_through_engine(args: argparse.Namespace, device: torch.device, epochs: int, handlers: bool) -> list[float]:
    """Seconds per epoch of ``SupervisedTrainer.run()`` as odir_var's train.json builds it, with only the step's own
    handlers (clipping, schedule) or with the bundle's per-iteration handlers too (in the bundle's order)."""
    from monai.engines import SupervisedTrainer
    from monai.handlers import LrScheduleHandler
    from torch.utils.tensorboard import SummaryWriter

    from medvq.handlers import GradientClipHandler, MetricsWriter
    from medvq.metrics import TokenAccuracy

    tokenizer, generator, optimizer, scheduler, prepare, loss_function = _var_build(args, device, epochs)
    step_handlers = [LrScheduleHandler(lr_scheduler=scheduler, epoch_level=False, print_lr=False),
                     GradientClipHandler(max_norm=2.0)]
    with tempfile.TemporaryDirectory() as folder:
        writer = SummaryWriter(folder) if handlers else None
        train_handlers = step_handlers
        if handlers:
            train_handlers = [
                TokenAccuracy(tokenizer.quantizer.scale_lengths, device=device), *step_handlers,
                *_logging_handlers(
                    writer, lambda out: {"train/loss": out["loss"], "train/grad_norm": out.get("grad_norm", 0.0)},
                    ["loss", "grad_norm"], epoch_log=True,
                    epoch_event_writer=MetricsWriter("train", lambda epoch: epoch * args.iterations),
                ),
            ]
        batches = _var_batches(args, sum(tokenizer.quantizer.scale_lengths))
        trainer = SupervisedTrainer(
            device=device, max_epochs=epochs, train_data_loader=batches, network=generator, optimizer=optimizer,
            loss_function=loss_function, prepare_batch=prepare, decollate=False, train_handlers=train_handlers,
        )
        try:
            return _timed_run(trainer, device)
        finally:
            if writer is not None:
                writer.close()


# ---------------------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> list[str]:
    """Run the chosen halves; print and return the report lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("tokenizer", "var", "both"), default="both")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="vqgan_tiny", help="tokenizer: the network")
    parser.add_argument("--size", type=int, default=64, help="tokenizer: image size")
    parser.add_argument("--batch", type=int, default=8, help="tokenizer: images per iteration")
    parser.add_argument("--codes", type=int, default=256, help="codebook size (both halves)")
    parser.add_argument("--dim", type=int, default=8, help="code dimension (both halves)")
    parser.add_argument("--generator", choices=sorted(VAR_PRESETS), default="var_tiny", help="VAR: the generator")
    parser.add_argument("--var_batch", type=int, default=8, help="VAR: token sequences per step (quickstart: 8)")
    parser.add_argument("--scales", type=int, nargs="+", default=list(VAR_SCALES),
                        help="VAR: the tokenizer's token-map sizes, coarse to fine (default VAR's 10: 680 tokens)")
    parser.add_argument("--iterations", type=int, default=20, help="iterations per timed epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per variant (after one warm-up epoch)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the variants, alternated")
    parser.add_argument("--smoke", action="store_true", help="check that it runs: defaults of 2 iterations, 1 epoch, "
                        "1 round, 32 px, scales 1 2 4, batches of 2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.smoke:  # smaller defaults; options given explicitly still win
        parser.set_defaults(iterations=2, repeats=1, rounds=1, size=32, batch=2, var_batch=2, scales=[1, 2, 4])
        args = parser.parse_args(argv)
    device = torch.device(args.device)
    epochs = 1 + args.repeats
    where = f"{device.type}, {torch.get_num_threads()} threads"
    lines: list[str] = []

    def emit(new: list[str]) -> None:
        print("\n".join(new), flush=True)
        lines.extend(new)

    disabled = logging.root.manager.disable
    logging.disable(logging.INFO)  # StatsHandler's epoch lines are not what is measured
    try:
        if args.model in ("tokenizer", "both"):
            timed = _compare({
                HAND_WRITTEN: lambda: hand_written(args, device, epochs),
                "TokenizerTrainer (no handlers)": lambda: through_engine(args, device, epochs, handlers=False),
                "TokenizerTrainer + bundle handlers": lambda: through_engine(args, device, epochs, handlers=True),
            }, args.rounds)
            emit(_report(f"{args.preset}, {args.size} px, batch {args.batch}, {args.iterations} iterations per epoch, "
                         f"{where}", timed, [(args.iterations * args.batch, "img/s", ".1f")]))
        if args.model in ("var", "both"):
            length = sum(s * s for s in args.scales)
            timed = _compare({
                HAND_WRITTEN: lambda: var_hand_written(args, device, epochs),
                "SupervisedTrainer (clip + lr handlers)": lambda: var_through_engine(args, device, epochs, False),
                "SupervisedTrainer + bundle handlers": lambda: var_through_engine(args, device, epochs, True),
            }, args.rounds)
            emit(_report(
                f"{args.generator}, {length} tokens (scales {' '.join(map(str, args.scales))}), "
                f"batch {args.var_batch}, {args.iterations} iterations per epoch, {where}", timed,
                [(args.iterations * args.var_batch * length, "tokens/s", ".0f"), (args.iterations, "steps/s", ".2f")],
            ))
    finally:
        logging.disable(disabled)
    return lines


if __name__ == "__main__":
    main()
