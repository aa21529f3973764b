"""A run's identity card: ``<output_dir>/run_info.json``, written when training starts, read by evaluations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_run_info", "read_run_info"]


def write_run_info(output_dir: str | Path, **info: Any) -> Path:
    """Write ``info`` (JSON-serialisable settings such as schedule, preset, codebook size) to ``run_info.json``."""
    path = Path(output_dir) / "run_info.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2, default=str) + "\n")
    return path


def read_run_info(output_dir: str | Path) -> dict[str, Any]:
    """The ``run_info.json`` of a run, or ``{}`` for runs trained before it existed."""
    path = Path(output_dir) / "run_info.json"
    return json.loads(path.read_text()) if path.is_file() else {}
