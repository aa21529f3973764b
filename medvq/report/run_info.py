"""A run's identity card: ``<output_dir>/run_info.json``, written when training starts, read by evaluations."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_run_info", "read_run_info", "update_run_info"]


def write_run_info(output_dir: str | Path, **info: Any) -> Path:
    """Write ``info`` (JSON-serialisable settings such as schedule, preset, codebook size) to ``run_info.json``.

    A ``"switch"`` entry already there (written by the deferred switch of this run before a resume) is kept."""
    path = Path(output_dir) / "run_info.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = read_run_info(output_dir)
    if "switch" in previous and "switch" not in info:
        info = {**info, "switch": previous["switch"]}
    path.write_text(json.dumps(info, indent=2, default=str) + "\n")
    return path


def update_run_info(output_dir: str | Path, **info: Any) -> Path:
    """Merge ``info`` into ``run_info.json`` (created if missing), written atomically (a temporary file, then
    ``os.replace``), so a kill never leaves half a file."""
    path = Path(output_dir) / "run_info.json"
    current = read_run_info(output_dir)
    current.update(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(current, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_run_info(output_dir: str | Path) -> dict[str, Any]:
    """The ``run_info.json`` of a run, or ``{}`` for runs trained before it existed."""
    path = Path(output_dir) / "run_info.json"
    return json.loads(path.read_text()) if path.is_file() else {}
