"""Compare tokenizer recipes over seeds with real bundle runs: the table behind docs/results.md.

Each *arm* is a recipe: config overlays and ``key=value`` overrides on top of a bundle's training config. Every
(arm, seed) is one ``python -m monai.bundle run training`` in its own process (``OMP_NUM_THREADS=1`` each, ``--jobs``
at a time: two OpenMP threads per process on a 2-core machine spin and run ~8x slower), into
``<output>/<arm>_s<seed>``. A finished run (its ``model_final.pt`` exists) is read, never trained again, so a study can
be extended or resumed. The numbers are the last validation epoch's whole-validation-set metrics, read back from the
run's TensorBoard file (what ``TensorBoardStatsHandler`` wrote), and the switch step from ``run_info.json``.

Example (the odir_var quickstart, standard vs deferred, three seeds)::

    python -m medvq.experiments.tokenizer_study --output runs/study \\
        --config bundles/odir_var/configs/train_tokenizer.json configs/quickstart.json \\
        --arm standard=configs/schedules/standard.json --arm deferred=configs/schedules/deferred.json \\
        --seeds 0 1 2 --baseline standard

An arm is ``NAME=PART+PART+...``; a part ending in ``.json`` is an overlay merged after ``--config``, any other part
is ``key=value`` passed as ``--key value`` (also when the value is a ``.json`` file: ``datalist=list.json``) (e.g. ``deferred_frozen=configs/schedules/deferred.json+codebook_lr_scale=0``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Arm", "parse_arm", "read_run", "run_study", "format_table"]

logger = logging.getLogger(__name__)

#: metrics shown in the table, in order (the tags ``val/<name>``, or ``val_<name>`` in older runs); missing ones print
#: as "-"
COLUMNS = ("perplexity", "usage", "dead_codes", "code_distance", "code_distance_used", "shrinkage",
           "latent_effective_dim", "codebook_effective_dim", "psnr", "ssim")


@dataclass(frozen=True)
class Arm:
    """One recipe: ``overlays`` merged after the base configs, ``overrides`` as ``--key value`` arguments."""

    name: str
    overlays: tuple[str, ...]
    overrides: tuple[tuple[str, str], ...]


def parse_arm(text: str) -> Arm:
    """``NAME=a.json+key=value+...`` -> :class:`Arm` (see the module docstring)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--arm must look like NAME=overlay.json+key=value (NAME of letters, digits, _ and -), "
                         f"got {text!r}.")
    overlays, overrides = [], []
    for part in filter(None, rest.split("+")):
        key = part.partition("=")[0]
        if part.endswith(".json") and not ("=" in part and key.isidentifier()):  # datalist=a.json is an override
            if not Path(part).is_file():
                raise ValueError(f"--arm {name}: overlay {part!r} does not exist.")
            overlays.append(part)
        else:
            key, eq, value = part.partition("=")
            if not eq or not key:
                raise ValueError(f"--arm {name}: {part!r} is neither an overlay (.json) nor key=value.")
            overrides.append((key, value))
    return Arm(name, tuple(overlays), tuple(overrides))


def _command(configs: Sequence[str], arm: Arm, seed: int, run_dir: Path) -> list[str]:
    files = [*configs, *arm.overlays]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", repr(files),
           "--output_dir", str(run_dir), "--seed", str(seed)]
    for key, value in arm.overrides:
        cmd += [f"--{key}", value]
    return cmd


def _final_model(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("**/checkpoints/model_final.pt"))
    return found[0] if found else None


def read_run(run_dir: Path) -> dict[str, float]:
    """The last value of every validation scalar in the run's TensorBoard files, by name without its group: ``val/x``
    (the bundles' tags) and ``val_x`` (runs logged before the ``val/`` group) both give ``x``, the one logged at the
    later step winning; plus the switch iteration from ``run_info.json`` when the run recorded one."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    last: dict[str, tuple[int, float]] = {}
    for events in sorted({p.parent for p in run_dir.glob("**/events.out.tfevents.*")}):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith(("val/", "val_")):
                event = acc.Scalars(tag)[-1]
                if tag[4:] not in last or event.step >= last[tag[4:]][0]:
                    last[tag[4:]] = (event.step, float(event.value))
    metrics = {name: value for name, (_, value) in last.items()}
    for info in run_dir.glob("**/run_info.json"):
        data = json.loads(info.read_text())
        if isinstance(data.get("switch"), dict) and "iteration" in data["switch"]:
            metrics["switch_iteration"] = float(data["switch"]["iteration"])
    if not metrics:
        raise FileNotFoundError(f"no validation scalars in the TensorBoard files under {run_dir}: did the run finish?")
    return metrics


def _resumable(run_dir: Path) -> bool:
    """True when an unfinished run in ``run_dir`` has a checkpoint to resume from. A run that stopped before its first
    checkpoint (TensorBoard files only) cannot resume and a bundle refuses to train over it: its folder is moved aside
    to ``<run_dir>.stale-<time>``, logged, not deleted."""
    if sorted(run_dir.glob("**/checkpoints/checkpoint_*.pt")):
        return True
    if sorted(run_dir.glob("**/tensorboard/events.out.tfevents.*")):
        stale = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(stale)
        logger.warning("%s stopped before its first checkpoint: moved to %s, training it again", run_dir, stale)
    return False


def run_study(configs: Sequence[str], arms: Sequence[Arm], seeds: Sequence[int], output: Path, jobs: int = 2,
              extra: Sequence[str] = ()) -> dict[str, dict[int, dict[str, float]]]:
    """Train every (arm, seed) not finished yet, ``jobs`` at a time, then read all of them."""
    output.mkdir(parents=True, exist_ok=True)
    pending = []
    for arm in arms:
        for seed in seeds:
            run_dir = output / f"{arm.name}_s{seed}"
            if _final_model(run_dir) is None:
                pending.append((arm, seed, run_dir))
    running: list[tuple[subprocess.Popen, Arm, int, Path, float]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    failures = []
    while pending or running:
        while pending and len(running) < jobs:
            arm, seed, run_dir = pending.pop(0)
            resume = _resumable(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run_dir / "train.log", "a" if resume else "w")  # noqa: SIM115 - closed when the process ends
            cmd = [*_command(configs, arm, seed, run_dir), *extra, *(["--resume_from", "latest"] if resume else [])]
            (run_dir / "command.txt").write_text(" ".join(cmd) + "\n")
            logger.info("start %s seed %d -> %s", arm.name, seed, run_dir)
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), arm, seed, run_dir,
                            time.perf_counter()))
        time.sleep(1.0)
        for item in list(running):
            proc, arm, seed, run_dir, started = item
            if proc.poll() is None:
                continue
            running.remove(item)
            seconds = time.perf_counter() - started
            if proc.returncode != 0:
                failures.append(f"{arm.name} seed {seed} (exit {proc.returncode}, see {run_dir / 'train.log'})")
            logger.info("done %s seed %d in %.0f s (exit %d)", arm.name, seed, seconds, proc.returncode)
    if failures:
        raise RuntimeError("training failed for " + "; ".join(failures))
    return {arm.name: {seed: read_run(output / f"{arm.name}_s{seed}") for seed in seeds} for arm in arms}


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def format_table(results: dict[str, dict[int, dict[str, float]]], baseline: str | None = None) -> str:
    """Markdown: one row per (arm, seed) and one mean row per arm; with ``baseline``, the per-seed ratios of
    perplexity and code distance over the baseline arm's and the PSNR difference."""
    present = [c for c in COLUMNS if any(c in m for seeds in results.values() for m in seeds.values())]
    header = ["arm", "seed", *present]
    ratio_cols = []
    if baseline is not None:
        ratio_cols = ["perplexity ×", "code_distance ×", "PSNR Δ dB"]
        header += ratio_cols
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, seeds in results.items():
        rows = list(seeds.items()) + [("mean", {c: sum(m.get(c, math.nan) for m in seeds.values()) / len(seeds)
                                                for c in present})]
        for seed, m in rows:
            cells = [name, str(seed), *(_fmt(m.get(c)) for c in present)]
            if baseline is not None:
                if seed == "mean":
                    cells += [""] * len(ratio_cols)
                else:
                    base = results[baseline][seed]
                    cells += [_fmt(m.get("perplexity", math.nan) / base["perplexity"]),
                              _fmt(m.get("code_distance", math.nan) / base["code_distance"]),
                              _fmt(m.get("psnr", math.nan) - base["psnr"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="+", required=True, help="base config files, merged in order")
    parser.add_argument("--arm", action="append", required=True, help="NAME=overlay.json+key=value+...")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--output", type=Path, default=Path("runs/study"))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--baseline", default=None, help="arm the ratios are taken against")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for path in args.config:
        if not Path(path).is_file():
            parser.error(f"--config {path!r} does not exist.")
    try:
        arms = [parse_arm(a) for a in args.arm]
    except ValueError as err:
        parser.error(str(err))
    if args.baseline is not None and args.baseline not in {a.name for a in arms}:
        parser.error(f"--baseline {args.baseline!r} is not one of the arms {[a.name for a in arms]}.")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1.")
    results = run_study(args.config, arms, args.seeds, args.output, jobs=args.jobs, extra=extra)
    print(format_table(results, args.baseline))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
