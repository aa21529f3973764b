"""GPU numbers in one run (issue #15): tokenizer training, VAR training and sampling, and the switch's k-means.

Sections, each measured in this process one after the other (``--sections`` picks a subset):

- ``vqgan_f16_eager`` / ``vqgan_f16_compiled``: one :class:`medvq.engines.TokenizerTrainer` iteration as the
  imagenet100_vq bundle runs it (``vqgan_f16``, 8192 codes of dimension 32, 256 px, bf16 autocast, L1 loss, PatchGAN
  64 channels x 3 layers from the first iteration with VQGAN's adaptive weight, Adam, gradient clipping 1.0), eager
  and with ``torch.compile`` of the tokenizer and the discriminator. Images/s and model FLOP utilisation: the FLOPs
  of one iteration (forward, backward, adaptive weight, discriminator step) counted by ``FlopCounterMode`` on an
  eager iteration, as ``benchmarks/paper_scale_cost.py`` counts them, over the measured time, over the GPU's
  published bf16 dense peak (``PEAK_BF16_TFLOPS``; an unknown device gets FLOP/s and no utilisation).
- ``msvqgan_f16_eager`` / ``msvqgan_f16_compiled``: the same with VAR's multi-scale tokenizer (4096 codes, 10
  scales, 256 px).
- ``var_d16_train``: one VAR-d16 step as the imagenet100_var bundle runs it (pre-computed tokens, the quantizer's
  teacher-forcing input, bf16 autocast, :class:`medvq.losses.NextScaleLoss`, AdamW on VAR's parameter groups,
  clipping 2.0), batch 64: tokens/s (680 a 256 px image) and FLOP utilisation.
- ``var_d16_sample``: :func:`medvq.networks.sample_var` with the KV cache, batch 64, bf16 autocast, the bundle's
  guidance 2.5, top-k 900, top-p 0.96: images/s and tokens/s.
- ``kmeans``: :func:`medvq.quantizers.kmeans` at the switch's size, 262,144 latents x 32 -> 16,384 codes, 20 Lloyd
  iterations (``VectorQuantizer``'s ``kmeans_iterations``), on the device.

Every section warms up, then times iterations between two synchronisations of the device, and reports the peak of
``torch.cuda.max_memory_allocated`` since its start. A section that runs out of GPU memory halves its batch and
starts again (the batch used is printed). Each section has a time budget: timed iterations stop once the section's
wall time passes it (after at least ``--min-timed`` of them), and a hard limit (its budget plus whatever earlier
sections left unused of ``--total-budget``) stops a section that is still warming up or compiling. A failing section
prints its error and the others still run. The summary is a table, and with ``--json`` a file.

    bash benchmarks/gpu.sh                              # on a GPU: the paper sizes, under 8 minutes
    bash benchmarks/gpu.sh --sections kmeans var_d16_sample --json gpu.json
    bash benchmarks/gpu.sh --smoke --json smoke.json    # CPU check of the script: tiny models, not a measurement

``--smoke`` runs every section on the CPU with the tiny presets (32 px, batch 2, 512 latents -> 64 codes, one timed
iteration). Its ``torch.compile`` sections are skipped with the reason recorded (inductor's C++ compilation of
``vqgan_tiny``'s training step took 208 s on the 2-core CPU this was written on) unless ``--compile-backend`` is given
(``eager`` traces with dynamo only, a few seconds a model).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from ignite.engine import Events
from torch.utils.flop_counter import FlopCounterMode

from medvq.engines import TokenizerTrainer
from medvq.losses import NextScaleLoss, ReconstructionLoss, build_discriminator
from medvq.networks import msvqgan_f16, msvqgan_tiny, sample_var, var_d16, var_tiny, vqgan_f16, vqgan_tiny
from medvq.quantizers import MultiScaleResidualQuantizer, kmeans

SECTIONS = ("vqgan_f16_eager", "msvqgan_f16_eager", "var_d16_train", "var_d16_sample", "kmeans",
            "vqgan_f16_compiled", "msvqgan_f16_compiled")
# seconds per section on a GPU: the compiled ones run last and may also use what earlier sections left unused
GPU_BUDGETS = {"vqgan_f16_eager": 35, "msvqgan_f16_eager": 35, "var_d16_train": 35, "var_d16_sample": 40,
               "kmeans": 35, "vqgan_f16_compiled": 120, "msvqgan_f16_compiled": 120}
SMOKE_BUDGET = 8.0
# published bf16 dense (no sparsity) tensor-core peaks, TFLOP/s, matched in order against the device name
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
NUM_CONDITIONS = 8
SMOKE_COMPILE_REASON = ("not run by --smoke: inductor's C++ compilation of vqgan_tiny's training step took 208 s on a "
                        "2-core CPU, too slow for CI; pass --compile-backend eager to trace with dynamo only")


@dataclass(frozen=True)
class Plan:
    """Model sizes of one mode: the paper's (GPU) or the tiny presets' (``--smoke``)."""

    tokenizers: dict[str, tuple[Callable[..., torch.nn.Module], str, int, dict[str, Any]]]
    discriminator: dict[str, int]
    var: tuple[Callable[..., torch.nn.Module], str, int, int, tuple[int, ...]]  # builder, name, V, D, scales
    kmeans: tuple[int, int, int, int]  # N, D, K, Lloyd iterations
    tokenizer_batch: int = 12
    var_batch: int = 64
    sample_batch: int = 64


PAPER = Plan(
    tokenizers={"vqgan_f16": (vqgan_f16, "vqgan_f16", 256, {"num_embeddings": 8192, "embedding_dim": 32}),
                "msvqgan_f16": (msvqgan_f16, "msvqgan_f16", 256, {"num_embeddings": 4096, "embedding_dim": 32})},
    discriminator={"channels": 64, "num_layers": 3},
    var=(var_d16, "var_d16", 4096, 32, VAR_SCALES),
    kmeans=(262_144, 32, 16_384, 20),
)
SMOKE = Plan(
    tokenizers={"vqgan_f16": (vqgan_tiny, "vqgan_tiny", 32, {}), "msvqgan_f16": (msvqgan_tiny, "msvqgan_tiny", 32, {})},
    discriminator={"channels": 16, "num_layers": 2},
    var=(var_tiny, "var_tiny", 256, 8, (1, 2, 3, 4, 6, 8)),
    kmeans=(512, 32, 64, 5),
    tokenizer_batch=2, var_batch=2, sample_batch=2,
)


class SectionTimeout(BaseException):
    """Raised by the alarm at a section's hard limit (a BaseException, so no ``except Exception`` swallows it)."""


@dataclass
class Context:
    device: torch.device
    plan: Plan
    args: argparse.Namespace
    peak_tflops: float | None
    deadline: float = 0.0  # perf_counter time after which timed loops stop (the section's budget)
    notes: list[str] = field(default_factory=list)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def _alarm(seconds: float):
    """Raise :class:`SectionTimeout` in the main thread after ``seconds`` (SIGALRM; a no-op where there is none)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum, frame):
        raise SectionTimeout

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.5))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _halving(ctx: Context, requested: int, attempt: Callable[[int], dict]) -> dict:
    """``attempt(batch)``, halving the batch on a GPU out-of-memory error until it fits (down to 1)."""
    batch = requested
    while True:
        try:
            record = attempt(batch)
            record.update(batch=batch, batch_requested=requested)
            return record
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
        # outside the except block, so the traceback's frames (and their tensors) are gone before freeing
        _free(ctx.device)
        print(f"   out of memory at batch {batch}: retrying with {batch // 2}", flush=True)
        batch //= 2


def _count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _rates(ctx: Context, flops: int | None, seconds: float) -> dict:
    if not flops:
        return {"tflops_per_s": None, "mfu": None}
    achieved = flops / seconds / 1e12
    return {"tflops_per_s": achieved, "mfu": achieved / ctx.peak_tflops if ctx.peak_tflops else None}


def _timed_loop(ctx: Context, step: Callable[[], object], warmup: int) -> dict:
    """``warmup`` calls (the first one's time recorded: compilation, allocator), then timed calls until the budget."""
    args = ctx.args
    warm = []
    for _ in range(warmup):
        start = time.perf_counter()
        step()
        ctx.sync()
        warm.append(time.perf_counter() - start)
    start, n = time.perf_counter(), 0
    while n < args.max_timed and (n < args.min_timed or time.perf_counter() < ctx.deadline):
        step()
        n += 1
    ctx.sync()
    return {"first_iteration_s": warm[0], "warmup_s": warm, "timed_iterations": n,
            "seconds_per_iteration": (time.perf_counter() - start) / n}


def _timed_engine(ctx: Context, trainer: TokenizerTrainer, warmup: int) -> dict:
    """:func:`_timed_loop` inside one ``trainer.run()``: Ignite handlers mark the warm-up's end and stop the run."""
    args, marks, warm = ctx.args, [], []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _mark(engine: TokenizerTrainer) -> None:
        i = engine.state.iteration
        if i <= warmup:
            ctx.sync()
            marks.append(time.perf_counter())
            warm.append(marks[-1] - marks[-2])
        elif i - warmup >= args.min_timed and time.perf_counter() > ctx.deadline:
            engine.terminate()

    marks.append(time.perf_counter())
    trainer.run()
    ctx.sync()
    n = trainer.state.iteration - warmup
    return {"first_iteration_s": warm[0], "warmup_s": warm, "timed_iterations": n,
            "seconds_per_iteration": (time.perf_counter() - marks[-1]) / n}


def tokenizer_section(ctx: Context, model: str, compiled: bool) -> dict:
    """Tokenizer training through :class:`TokenizerTrainer`, bf16 autocast, eager or compiled (module doc)."""
    builder, name, size, kwargs = ctx.plan.tokenizers[model]
    device, args = ctx.device, ctx.args
    if compiled and args.smoke and args.compile_backend is None:
        return {"status": "skipped", "model": name, "reason": SMOKE_COMPILE_REASON}
    backend = args.compile_backend or "inductor"

    def attempt(batch: int) -> dict:
        torch.manual_seed(0)
        network = builder(**kwargs).to(device)
        critic = build_discriminator(spatial_dims=2, in_channels=3, **ctx.plan.discriminator).to(device)
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-4, betas=(0.5, 0.9))
        d_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
        data = {"image": torch.rand(batch, 3, size, size, device=device) * 2 - 1}

        def trainer(iterations: int) -> TokenizerTrainer:
            return TokenizerTrainer(
                device=device, max_epochs=1, train_data_loader=[data] * iterations, network=network,
                optimizer=optimizer, reconstruction_loss=ReconstructionLoss(spatial_dims=2, l1_weight=1.0),
                discriminator=critic, d_optimizer=d_optimizer, adversarial_weight=0.1, discriminator_start=0,
                grad_clip_norm=1.0, amp=True, amp_dtype="bfloat16",
            )

        # 1. the FLOPs of one iteration, counted on an eager one (compiling does not change the model's FLOPs)
        flops = _count_flops(lambda: trainer(1).run())
        # 2. compile in place (module type and attributes such as last_layer stay), then warm up and time
        if compiled:
            network.compile(backend=backend, mode=args.compile_mode)
            critic.compile(backend=backend, mode=args.compile_mode)
        warmup = args.compiled_warmup if compiled else args.warmup
        timing = _timed_engine(ctx, trainer(warmup + args.max_timed), warmup)
        seconds = timing["seconds_per_iteration"]
        return {"model": name, "image_size": size, "compiled": backend if compiled else False,
                "flops_per_iteration": flops, "throughput": batch / seconds, "unit": "img/s", **timing,
                **_rates(ctx, flops, seconds)}

    return _halving(ctx, args.tokenizer_batch or ctx.plan.tokenizer_batch, attempt)


def _var_models(ctx: Context) -> tuple[MultiScaleResidualQuantizer, torch.nn.Module, str]:
    builder, name, num_embeddings, dim, scales = ctx.plan.var
    torch.manual_seed(0)
    quantizer = MultiScaleResidualQuantizer(num_embeddings, dim, scales=scales).to(ctx.device).eval()
    var = builder(num_embeddings=num_embeddings, embedding_dim=dim, scale_lengths=quantizer.scale_lengths,
                  num_conditions=NUM_CONDITIONS).to(ctx.device)
    return quantizer, var, name


def _conditions(batch: int, device: torch.device) -> torch.Tensor:
    condition = torch.zeros(batch, NUM_CONDITIONS, device=device)
    condition[torch.arange(batch), torch.arange(batch) % NUM_CONDITIONS] = 1.0  # (B, C) one-hot
    return condition


def var_train_section(ctx: Context) -> dict:
    """One VAR training step as the imagenet100_var bundle's SupervisedTrainer runs it (module doc)."""

    def attempt(batch: int) -> dict:
        quantizer, var, name = _var_models(ctx)
        optimizer = torch.optim.AdamW(var.parameter_groups(0.05), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
        loss_fn = NextScaleLoss()
        length = sum(quantizer.scale_lengths)
        tokens = torch.randint(ctx.plan.var[2], (batch, length), device=ctx.device)  # (B, L) pre-computed tokens
        condition = _conditions(batch, ctx.device)

        def step() -> None:
            with torch.no_grad():  # VARPrepareBatch: outside autocast, as the trainer calls it
                x = quantizer.teacher_forcing_input(quantizer.unflatten_indices(tokens))  # (B, L - n_0, D)
            optimizer.zero_grad(set_to_none=True)
            with ctx.autocast():
                loss = loss_fn(var(x.float(), condition), tokens)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
            optimizer.step()

        flops = _count_flops(step)
        timing = _timed_loop(ctx, step, ctx.args.warmup)
        seconds = timing["seconds_per_iteration"]
        return {"model": name, "tokens_per_image": length, "flops_per_iteration": flops,
                "throughput": batch * length / seconds, "unit": "tokens/s", "images_per_s": batch / seconds,
                **timing, **_rates(ctx, flops, seconds)}

    return _halving(ctx, ctx.args.var_batch or ctx.plan.var_batch, attempt)


def var_sample_section(ctx: Context) -> dict:
    """``sample_var`` with the KV cache and the bundle's guidance and filtering, bf16 autocast (module doc)."""

    def attempt(batch: int) -> dict:
        quantizer, var, name = _var_models(ctx)
        var.eval()
        condition = _conditions(batch, ctx.device)
        length = sum(quantizer.scale_lengths)

        def step() -> None:
            generator = torch.Generator(device=ctx.device).manual_seed(0)
            with ctx.autocast():
                sample_var(var, quantizer, condition, guidance=2.5, top_k=900, top_p=0.96, generator=generator,
                           use_kv_cache=True)

        timing = _timed_loop(ctx, step, ctx.args.warmup)
        seconds = timing["seconds_per_iteration"]
        return {"model": name, "tokens_per_image": length, "throughput": batch / seconds, "unit": "img/s",
                "tokens_per_s": batch * length / seconds, **timing, "tflops_per_s": None, "mfu": None}

    return _halving(ctx, ctx.args.sample_batch or ctx.plan.sample_batch, attempt)


def kmeans_section(ctx: Context) -> dict:
    """The switch's k-means (module doc) on data of ``benchmarks/kmeans.py`` (seeded anisotropic blobs)."""
    from kmeans import make_data  # benchmarks/kmeans.py, on the path when this runs as a script

    n, dim, k, iterations = ctx.plan.kmeans
    x = make_data(n, dim).to(ctx.device)
    warm_k = min(k, 256)
    kmeans(x[: 4 * warm_k], warm_k, iterations=2)  # warm-up: kernels, BLAS handles, allocator
    ctx.sync()
    times, result = [], None
    while len(times) < max(1, min(ctx.args.min_timed, 3)) or (len(times) < 3 and time.perf_counter() < ctx.deadline):
        start = time.perf_counter()
        result = kmeans(x, k, iterations=iterations, seed=0)
        ctx.sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"model": f"{n}x{dim}->{k}", "lloyd_iterations": iterations, "batch": n, "timed_iterations": len(times),
            "seconds_per_iteration": seconds, "throughput": n * iterations / seconds, "unit": "latent-iters/s",
            "inertia": float(result.inertia), "first_iteration_s": None, "tflops_per_s": None, "mfu": None}


RUNNERS: dict[str, Callable[[Context], dict]] = {
    "vqgan_f16_eager": lambda ctx: tokenizer_section(ctx, "vqgan_f16", compiled=False),
    "vqgan_f16_compiled": lambda ctx: tokenizer_section(ctx, "vqgan_f16", compiled=True),
    "msvqgan_f16_eager": lambda ctx: tokenizer_section(ctx, "msvqgan_f16", compiled=False),
    "msvqgan_f16_compiled": lambda ctx: tokenizer_section(ctx, "msvqgan_f16", compiled=True),
    "var_d16_train": var_train_section,
    "var_d16_sample": var_sample_section,
    "kmeans": kmeans_section,
}


def peak_tflops_of(device: torch.device, override: float | None) -> tuple[str, float | None]:
    """The device's name and its bf16 dense peak from ``PEAK_BF16_TFLOPS`` (None: unknown, or a CPU)."""
    if device.type != "cuda":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads > 1 else ''})", override
    name = torch.cuda.get_device_name(device)
    if override:
        return name, override
    return name, next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def _fmt(value: float | None, spec: str = ".3g", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value * scale, spec)


def summary_table(results: dict[str, dict]) -> list[str]:
    header = (f"{'section':22s} {'model':17s} {'batch':>6s} {'s/iter':>9s} {'throughput':>22s} {'TFLOP/s':>8s} "
              f"{'MFU':>6s} {'peak GiB':>9s} {'1st it s':>9s} {'wall s':>7s}  status")
    lines = [header, "-" * len(header)]
    for section, r in results.items():
        rate = f"{_fmt(r.get('throughput'), '.4g')} {r.get('unit', '')}" if r.get("throughput") else "-"
        lines.append(
            f"{section:22s} {r.get('model', '-')!s:17s} {r.get('batch', '-')!s:>6s} "
            f"{_fmt(r.get('seconds_per_iteration'), '.4g'):>9s} {rate:>22s} {_fmt(r.get('tflops_per_s'), '.3g'):>8s} "
            f"{_fmt(r.get('mfu'), '.1%'):>6s} {_fmt(r.get('peak_memory_gib'), '.2f'):>9s} "
            f"{_fmt(r.get('first_iteration_s'), '.3g'):>9s} {r['wall_s']:7.1f}  {r['status']}"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU: checks the script, measures nothing")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu (--smoke: cpu)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), metavar="SECTION",
                        help=f"subset to run, in this order: {' '.join(SECTIONS)}")
    parser.add_argument("--json", default=None, help="write the summary (every section's record) to this file")
    parser.add_argument("--tokenizer-batch", type=int, default=0, help="default 12 (the bundle's), --smoke 2")
    parser.add_argument("--var-batch", type=int, default=0, help="VAR training batch; default 64, --smoke 2")
    parser.add_argument("--sample-batch", type=int, default=0, help="images per sample_var call; default 64")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up iterations of eager sections (--smoke: 1)")
    parser.add_argument("--compiled-warmup", type=int, default=3,
                        help="warm-up iterations of compiled sections; the first compiles (--smoke: 2)")
    parser.add_argument("--min-timed", type=int, default=3, help="timed iterations at least (--smoke: 1)")
    parser.add_argument("--max-timed", type=int, default=30, help="timed iterations at most (--smoke: 1)")
    parser.add_argument("--total-budget", type=float, default=450.0,
                        help="seconds for all sections (gpu.sh stops everything at 480); --smoke: 55")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiplies every section's budget (GPU_BUDGETS; --smoke: 8 s each)")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend; default inductor (--smoke: compiled sections skipped unless given)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak for MFU (default: by name)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device = args.device or "cpu"
        args.warmup, args.compiled_warmup, args.min_timed, args.max_timed = 1, 2, 1, 1
        args.total_budget = min(args.total_budget, 55.0)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for name in ("tokenizer_batch", "var_batch", "sample_batch", "warmup", "compiled_warmup", "min_timed",
                 "max_timed"):
        if getattr(args, name) < (0 if name.endswith("batch") else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    args.sections = [s for s in SECTIONS if s in args.sections]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    device = torch.device(args.device)
    plan = SMOKE if args.smoke else PAPER
    name, peak = peak_tflops_of(device, args.peak_tflops)
    ctx = Context(device=device, plan=plan, args=args, peak_tflops=peak)
    cuda = f", CUDA {torch.version.cuda}, capability {torch.cuda.get_device_capability(device)}" \
        if device.type == "cuda" else ""
    print(f"gpu_suite{' --smoke (CPU check of the script: tiny models, not a measurement)' if args.smoke else ''}: "
          f"device {name}{cuda}; torch {torch.__version__}; bf16 peak "
          f"{f'{peak:.0f} TFLOP/s' if peak else 'unknown (FLOP/s without MFU)'}; "
          f"matmul precision {torch.get_float32_matmul_precision()}; total budget {args.total_budget:.0f} s", flush=True)
    budgets = {s: args.budget_scale * (SMOKE_BUDGET if args.smoke else GPU_BUDGETS[s]) for s in args.sections}
    results: dict[str, dict] = {}
    for index, section in enumerate(args.sections):
        later = sum(budgets[s] for s in args.sections[index + 1:])
        left = args.total_budget - (time.perf_counter() - started)
        budget = budgets[section]
        hard = max(budget, left - later, 0.5)
        print(f"== {section}: budget {budget:.3g} s (hard limit {hard:.3g} s)", flush=True)
        _free(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        ctx.deadline = start + budget
        try:
            with _alarm(hard):
                record = RUNNERS[section](ctx)
            record.setdefault("status", "ok")
        except SectionTimeout:
            record = {"status": "timeout", "error": f"stopped at its hard limit of {hard:.3g} s"}
        except Exception as error:  # noqa: BLE001 - one failing section must not stop the others
            traceback.print_exc()
            record = {"status": "error", "error": f"{type(error).__name__}: {error}"}
        if record["status"] != "ok" and section.endswith("_compiled"):
            torch._dynamo.reset()
        record["budget_s"], record["wall_s"] = budget, time.perf_counter() - start
        record["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        results[section] = record
        if record["status"] == "ok":
            print(f"   {section}: {record['model']}, batch {record['batch']}: {record['throughput']:.4g} "
                  f"{record['unit']}, {record['seconds_per_iteration']:.4g} s/iteration over "
                  f"{record['timed_iterations']} timed; {_fmt(record.get('flops_per_iteration'), '.4g', 1e-12)} "
                  f"TFLOP/iteration, TFLOP/s {_fmt(record['tflops_per_s'], '.3g')}, "
                  f"MFU {_fmt(record['mfu'], '.1%')}, peak {_fmt(record['peak_memory_gib'], '.2f')} GiB; "
                  f"took {record['wall_s']:.1f} s of a {budget:.3g} s budget", flush=True)
        else:
            print(f"   {section}: {record['status']}: {record.get('reason') or record.get('error')}; "
                  f"took {record['wall_s']:.1f} s of a {budget:.3g} s budget", flush=True)
    wall = time.perf_counter() - started
    print()
    for line in summary_table(results):
        print(line)
    print(f"total {wall:.1f} s of a {args.total_budget:.0f} s budget (peak GiB: torch.cuda.max_memory_allocated per "
          f"section; 1st it s: the first warm-up iteration, which compiles in *_compiled)")
    summary = {"device": name, "torch": torch.__version__, "smoke": args.smoke, "peak_bf16_tflops": peak,
               "total_budget_s": args.total_budget, "wall_s": wall, "sections": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    summary = main()
    sys.exit(0 if all(r["status"] in ("ok", "skipped") for r in summary["sections"].values()) else 1)
