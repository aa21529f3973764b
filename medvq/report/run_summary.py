"""What a run or checkpoint holds, for ``medvq info RUN``: preset, sizes, schedule, switch, coverage at the end.

Read from the files a training leaves (``run_info.json``, ``checkpoints/``, ``tensorboard/``, ``eval/metrics.json``,
``MODEL_CARD.md``); an odir_var / image_var output folder gives one summary per stage. Nothing is recomputed: the
coverage and fidelity numbers are the last validation's as TensorBoard holds them, and the evaluation's when the run was
evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["run_summary"]

_SETTINGS = ("stage", "network_preset", "tokenizer_preset", "generator_preset", "num_embeddings", "embedding_dim",
             "scales", "phi_shared", "commitment_cost", "codebook_update", "image_size", "channels", "class_names",
             "condition_names", "data_format", "dataset_dir", "datalist", "seed")
_SWITCH = ("iteration", "epoch", "rule", "init", "num_samples", "usage", "kmeans_seconds")
_COVERAGE = ("usage", "perplexity", "code_distance", "code_distance_used", "dead_codes", "shrinkage", "psnr", "ssim",
             "token_acc")


def _weights(path: Path) -> dict[str, Any]:
    import torch

    from medvq.handlers.evaluation_report import file_sha256

    record: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001  an unreadable file is reported, not fatal to the summary
        record["readable"] = f"no ({type(error).__name__}: {error})"
        return record
    state = state.get("network", state) if isinstance(state, dict) else state
    if isinstance(state, dict):
        record["tensors"] = len(state)
        record["parameters"] = int(sum(v.numel() for v in state.values() if hasattr(v, "numel")))
        flags = [bool(v) for k, v in state.items() if k.endswith("active_flag")]
        if flags:
            record["quantizer_active"] = all(flags)
    return record


def _stage(run: Path, weights: Path | None, info: dict[str, Any]) -> dict[str, Any]:
    from medvq.report.model_card import CARD_NAME, last_scalars, training_state

    summary: dict[str, Any] = {"run": str(run)}
    summary.update({k: info[k] for k in _SETTINGS if k in info})
    pre = info.get("preprocessing") or {}
    if pre:
        summary["preprocessing"] = {k: pre[k] for k in ("modality", "spatial_dims", "image_size", "roi_size", "pixdim")
                                    if k in pre}
    if "quantize_start" in info or "schedule" in info:
        summary["schedule"] = {"name": info.get("schedule"), "quantize_start": info.get("quantize_start"),
                               "unit": info.get("quantize_start_unit")}
    switch = info.get("switch")
    summary["switch"] = {k: switch[k] for k in _SWITCH if k in switch} if isinstance(switch, dict) else (
        "not recorded (standard schedules quantize from step 0; deferred ones record it at the switch)")
    if weights is not None and weights.is_file():
        summary["weights"] = _weights(weights)
    trained = training_state(run)
    if trained:
        summary["trained"] = trained
    scalars = last_scalars(run / "tensorboard") if (run / "tensorboard").is_dir() else {}
    final = {tag[4:]: value for tag, (_step, value) in scalars.items()
             if tag.startswith("val/") and tag[4:] in _COVERAGE}
    final.update({tag[6:]: value for tag, (_step, value) in scalars.items()
                  if tag.startswith("train/") and tag[6:] == "token_acc"})
    steps = [step for tag, (step, _v) in scalars.items() if tag.startswith("val/")]
    summary["at_the_end"] = ({**final, "iteration": max(steps)} if final and steps else final) or "not recorded"
    evaluation = run / "eval" / "metrics.json"
    if evaluation.is_file():
        report = json.loads(evaluation.read_text())
        summary["evaluation"] = {k: v for k, v in (report.get("metrics") or {}).items()
                                 if isinstance(v, (int, float)) or v is None}
    if (run / CARD_NAME).is_file():
        summary["model_card"] = str(run / CARD_NAME)
    return summary


def run_summary(path: str | Path) -> dict[str, Any]:
    """A summary of a training run folder, an odir_var / image_var output folder (``{"tokenizer": ...,
    "generator": ...}``), a bundle folder (``models/*.pt`` with their ``.json``) or a checkpoint file.

    Raises:
        FileNotFoundError: nothing a medvq training writes at ``path`` (the message says what was looked for).
    """
    from medvq.report.run_info import checkpoint_run_info, read_run_info

    p = Path(path).expanduser()
    if p.is_file():
        info = checkpoint_run_info(p)
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
        if not info:
            raise FileNotFoundError(f"no run_info.json for '{p}' (looked beside it as {p.with_suffix('.json').name} "
                                    "and in its run folder): nothing records what this checkpoint is.")
        return _stage(run, p, info)
    if not p.is_dir():
        raise FileNotFoundError(f"'{p}' does not exist: give a run folder, a bundle folder or a checkpoint file.")
    stages = {name: p / name for name in ("tokenizer", "generator") if (p / name / "run_info.json").is_file()}
    if stages:
        return {name: _stage(folder, folder / "checkpoints" / "model_final.pt", read_run_info(folder))
                for name, folder in stages.items()}
    if (p / "run_info.json").is_file():
        return _stage(p, p / "checkpoints" / "model_final.pt", read_run_info(p))
    published = {f.stem: f for f in sorted((p / "models").glob("*.pt")) if f.with_suffix(".json").is_file()}
    if published:
        return {("tokenizer" if name == "model" else name): _stage(p, file, checkpoint_run_info(file))
                for name, file in published.items()}
    raise FileNotFoundError(f"'{p}' holds no medvq run: looked for run_info.json, tokenizer/ and generator/ run "
                            "folders, and models/<name>.pt with <name>.json.")
