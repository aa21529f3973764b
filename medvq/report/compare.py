"""Side-by-side comparison of evaluated runs (e.g. standard vs kmeans_at_start vs deferred).

Each run directory holds ``eval/metrics.json`` (written by a bundle's evaluate config) and optionally
``eval/code_counts.pt`` (``(K,)`` whole-set code counts) and ``eval/codebook.pt`` (``(K, D)``). ``compare`` prints a
markdown table and writes it with a JSON copy and the combined plots:

    python -m medvq.report compare runs/standard runs/deferred --output comparison/

``metrics.json`` layout: ``{"schedule": str, "checkpoint": str, "checkpoint_sha256": str, "num_images": int,
"feature_extractor": dict | null, "metrics": {name: number | null}}``; numbers that a run could not compute are
``null`` and show as "n/a" (never 0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medvq.report.plots import plot_code_distances, plot_code_frequencies

__all__ = ["load_run", "compare_runs", "markdown_table"]

_META = ("schedule", "num_images", "checkpoint_sha256")


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """The ``eval/metrics.json`` of a run, with ``name`` (the folder name) and ``dir`` added.

    Raises:
        FileNotFoundError: the run has no ``eval/metrics.json``; the message says how to produce it.
    """
    run_dir = Path(run_dir)
    path = run_dir / "eval" / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: evaluate the run first (its bundle's evaluate config writes eval/metrics.json under "
            "the run's output_dir)."
        )
    content = json.loads(path.read_text())
    if not isinstance(content.get("metrics"), dict):
        raise ValueError(f"{path} has no 'metrics' object; was it written by a medvq evaluate config?")
    return {**content, "name": run_dir.name, "dir": str(run_dir)}


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(runs: Sequence[dict[str, Any]]) -> str:
    """Rows: the runs' metadata then every metric any run reports (sorted); columns: the runs."""
    names = [r["name"] for r in runs]
    metrics = sorted({key for r in runs for key in r["metrics"]})
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in _META:
        lines.append(f"| {key} | " + " | ".join(_cell(r.get(key)) for r in runs) + " |")
    for key in metrics:
        lines.append(f"| {key} | " + " | ".join(_cell(r["metrics"].get(key)) for r in runs) + " |")
    return "\n".join(lines)


def compare_runs(run_dirs: Sequence[str | Path], output_dir: str | Path) -> dict[str, Any]:
    """Load the runs, write ``compare.md``, ``compare.json`` and the combined plots to ``output_dir``.

    Returns:
        ``{"runs": [...], "table": markdown, "plots": [paths]}``.
    """
    if len(run_dirs) < 1:
        raise ValueError("compare needs at least one run directory.")
    runs = [load_run(d) for d in run_dirs]
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run directories must have distinct folder names to label the columns, got {names}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(runs)
    (output_dir / "compare.md").write_text(table + "\n")
    (output_dir / "compare.json").write_text(json.dumps({"runs": runs}, indent=2, allow_nan=False, default=str) + "\n")
    plots = []
    counts = {r["name"]: torch.load(Path(r["dir"]) / "eval" / "code_counts.pt", weights_only=True)
              for r in runs if (Path(r["dir"]) / "eval" / "code_counts.pt").is_file()}
    if counts:
        plots.append(str(plot_code_frequencies(counts, output_dir / "code_frequencies.png")))
    codebooks = {r["name"]: torch.load(Path(r["dir"]) / "eval" / "codebook.pt", weights_only=True)
                 for r in runs if (Path(r["dir"]) / "eval" / "codebook.pt").is_file()}
    if codebooks:
        plots.append(str(plot_code_distances(codebooks, output_dir / "code_distances.png")))
    return {"runs": runs, "table": table, "plots": plots}
