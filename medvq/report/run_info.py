"""A run's identity card: ``<output_dir>/run_info.json``, written when training starts, read by evaluations."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["checkpoint_run_info", "read_run_info", "update_run_info", "write_run_info"]


def write_run_info(output_dir: str | Path, engine: Any = None, **info: Any) -> Path:
    """Write ``info`` (JSON-serialisable settings such as schedule, preset, codebook size) to ``run_info.json``.

    Entries already there that ``info`` does not set (the ``"switch"`` the deferred switch of this run recorded
    before a resume) are kept; the file is written atomically. With ``engine``, a run that
    :class:`medvq.handlers.ResumeFromCheckpoint` found finished (``engine.state.run_finished``) is left as it is."""
    path = Path(output_dir) / "run_info.json"
    if engine is not None and getattr(getattr(engine, "state", None), "run_finished", False):
        return path
    previous = read_run_info(output_dir)
    return _write(path, {**previous, **info})


def _write(path: Path, info: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def update_run_info(output_dir: str | Path, **info: Any) -> Path:
    """Merge ``info`` into ``run_info.json`` (created if missing), written atomically (a temporary file, then
    ``os.replace``), so a kill never leaves half a file."""
    current = read_run_info(output_dir)
    current.update(info)
    return _write(Path(output_dir) / "run_info.json", current)


def read_run_info(output_dir: str | Path) -> dict[str, Any]:
    """The ``run_info.json`` of a run, or ``{}`` for runs trained before it existed."""
    path = Path(output_dir) / "run_info.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def checkpoint_run_info(checkpoint: str | Path) -> dict[str, Any]:
    """The ``run_info.json`` of the run that trained ``checkpoint``, or ``{}`` when none is found.

    Looked up, in order: ``<checkpoint without suffix>.json`` beside it (what ``--publish_model True`` writes next to
    ``models/model.pt``: ``models/model.json``), then ``<run>/run_info.json`` for a checkpoint in ``<run>/checkpoints/``.
    Inference and sampling read the preprocessing (``"preprocessing"``: modality, intensity window, sizes) and the
    image ``"channels"`` from it, so their outputs map back to the training data's units.
    """
    path = Path(checkpoint)
    beside = path.with_suffix(".json")
    if beside.is_file():
        return json.loads(beside.read_text())
    if path.parent.name == "checkpoints":
        return read_run_info(path.parent.parent)
    return {}
