"""Codebook scaling: standard, kmeans_at_start and deferred quantization at codebook sizes 2^6 ... 2^12.

The paper (arXiv 2603.17052) shows on CIFAR-10 that deferred quantization keeps reconstruction and coverage as the
codebook grows while standard VQ does not. This study trains one real bundle run per (schedule, size, seed) with
:mod:`medvq.experiments.tokenizer_study` (its own process each, ``OMP_NUM_THREADS=1``, resumable: a finished run is
read, never trained again), reads the last validation epoch's whole-set metrics back from TensorBoard, and prints,
per size and schedule (mean over seeds), the usage, perplexity, effective dimension of the codes in use
(``codebook_effective_dim``), code distance and PSNR; with several ``--seeds`` also each seed's perplexity, code
distance and PSNR and the perplexity's max/min over seeds; ``--plot`` draws the means against K.

    python -m medvq.experiments.codebook_scaling --output runs/scaling --plot runs/scaling/scaling.png

By default it scales the odir_vq quickstart (generated fundus images, 64 px, 16 epochs); ``--config`` takes other
base configs and ``--set key=value`` adds overrides to every run (e.g. ``--set dataset_dir=/data/my_images``).
``quantize_num_samples`` is raised to ``2 K`` where the base value is smaller, so k-means always has two latents a
code.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from medvq.experiments.tokenizer_study import Arm, run_study

__all__ = ["COLUMNS", "SCHEDULES", "format_per_seed", "format_scaling", "main", "plot_scaling", "scaling_arms"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SCHEDULES = ("standard", "kmeans_at_start", "deferred")
COLUMNS = ("usage", "perplexity", "codebook_effective_dim", "code_distance", "psnr")
_BASE_SAMPLES = 8192  # configs/quickstart.json's quantize_num_samples


def scaling_arms(sizes: Sequence[int], schedules: Sequence[str] = SCHEDULES,
                 overrides: Sequence[tuple[str, str]] = ()) -> list[Arm]:
    """One :class:`~medvq.experiments.tokenizer_study.Arm` per (schedule, size): ``<schedule>_k<size>`` with
    ``configs/schedules/<schedule>.json`` and ``num_embeddings=<size>``."""
    arms = []
    for schedule in schedules:
        overlay = ROOT / "configs" / "schedules" / f"{schedule}.json"
        if not overlay.is_file():
            raise ValueError(f"unknown schedule {schedule!r}: no {overlay}; choose from {list(SCHEDULES)}.")
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size < 2:
                raise ValueError(f"codebook sizes must be integers >= 2, got {size!r}.")
            keys = {k for k, _ in overrides}
            extra = [("num_embeddings", str(size))]
            if "quantize_num_samples" not in keys and 2 * size > _BASE_SAMPLES:
                extra.append(("quantize_num_samples", str(2 * size)))
            arms.append(Arm(f"{schedule}_k{size}", (str(overlay),), (*extra, *overrides)))
    return arms


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _collect(results: dict, sizes: Sequence[int], schedules: Sequence[str]) -> dict[str, dict[int, dict[str, float]]]:
    """``schedule -> size -> column -> mean over seeds``."""
    return {s: {k: {c: _mean([m.get(c, math.nan) for m in results[f"{s}_k{k}"].values()]) for c in COLUMNS}
                for k in sizes} for s in schedules}


def format_scaling(table: dict[str, dict[int, dict[str, float]]]) -> str:
    """Markdown: one row per size, the columns of every schedule side by side."""
    schedules = list(table)
    sizes = sorted(next(iter(table.values())))
    header = ["K", *(f"{c} ({s})" for c in COLUMNS for s in schedules)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k in sizes:
        cells = [str(k)] + [f"{table[s][k][c]:.4g}" for c in COLUMNS for s in schedules]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_per_seed(results: dict, sizes: Sequence[int], schedules: Sequence[str],
                    columns: Sequence[str] = ("perplexity", "code_distance", "psnr")) -> str:
    """Markdown: one row per (size, schedule) with each seed's value of ``columns`` (``a / b / ...`` in seed order)
    and the perplexity's max/min over seeds, so seed-to-seed noise can be told from a trend against K."""
    seeds = sorted({seed for s in schedules for k in sizes for seed in results[f"{s}_k{k}"]})
    names = " / ".join(f"s{seed}" for seed in seeds)
    header = ["K", "schedule", *(f"{c} ({names})" for c in columns), "perplexity max/min"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k in sorted(sizes):
        for s in schedules:
            runs = results[f"{s}_k{k}"]
            cells = [" / ".join(f"{runs[seed].get(c, math.nan):.4g}" if seed in runs else "-" for seed in seeds)
                     for c in columns]
            ppl = [runs[seed]["perplexity"] for seed in seeds if seed in runs and "perplexity" in runs[seed]]
            spread = f"{max(ppl) / min(ppl):.2f}" if len(ppl) > 1 and min(ppl) > 0 else "-"
            lines.append("| " + " | ".join([str(k), s, *cells, spread]) + " |")
    return "\n".join(lines)


def plot_scaling(table: dict[str, dict[int, dict[str, float]]], path: str | Path) -> Path:
    """One panel per column against K (log2 axis), one line per schedule; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.4))
    for ax, column in zip(axes, COLUMNS):
        for schedule, rows in table.items():
            sizes = sorted(rows)
            ax.plot(sizes, [rows[k][column] for k in sizes], marker="o", label=schedule)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("codebook size K")
        ax.set_title(column)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="+", default=[str(ROOT / "bundles/odir_vq/configs/train.json"),
                                                        str(ROOT / "configs/quickstart.json")],
                        help="base config files, merged in order (default: the odir_vq quickstart)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2**e for e in range(6, 13)],
                        help="codebook sizes K (default 64 ... 4096)")
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run, e.g. --set dataset_dir=/data/images")
    parser.add_argument("--output", type=Path, default=Path("runs/scaling"))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--plot", type=Path, default=None, help="write the curves against K to this PNG")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = []
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            parser.error(f"--set must be KEY=VALUE, got {item!r}")
        overrides.append((key, value))
    try:
        arms = scaling_arms(args.sizes, args.schedules, overrides)
    except ValueError as error:
        parser.error(str(error))
    results = run_study(args.config, arms, args.seeds, args.output, jobs=args.jobs)
    table = _collect(results, args.sizes, args.schedules)
    print(format_scaling(table))
    if len(args.seeds) > 1:
        print()
        print(format_per_seed(results, args.sizes, args.schedules))
    if args.plot is not None:
        print(f"plot: {plot_scaling(table, args.plot)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({s: {str(k): v for k, v in rows.items()} for s, rows in table.items()},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
