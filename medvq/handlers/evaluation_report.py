"""Write an evaluation's results: ``eval/metrics.json``, code counts, codebook, plots and TensorBoard scalars.

Attached to a :class:`medvq.engines.TokenizerEvaluator`, it keeps a random subset of the encoder latents while the
evaluation runs (for the PCA picture) and, when it completes, writes everything ``python -m medvq.report compare``
reads. ``metrics.json`` holds every value of ``engine.state.metrics`` (NaN written as ``null``, infinities as
``"inf"``, not-applicable notes as strings; never a silent 0), the number of
images, the checkpoint's file name and sha256, the feature extractor used for FID (or null) and the schedule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from medvq.report.plots import plot_code_distances, plot_code_frequencies, plot_codebook_pca
from medvq.utils.distributed import unwrap_model

__all__ = ["EvaluationReportHandler", "file_sha256"]

logger = logging.getLogger(__name__)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _number(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"  # e.g. PSNR of an exact copy; strict JSON has no Infinity
    return value


class EvaluationReportHandler:
    """Collect latents during an evaluation and write the report when it completes.

    Args:
        output_dir: the report folder (``<run output_dir>/eval``).
        coverage: the :class:`medvq.metrics.CodebookCoverage` attached to the evaluator (its ``last_counts``).
        network: the tokenizer (its quantizer's codebook is saved and plotted).
        checkpoint: path of the evaluated weights (its sha256 goes into the report).
        schedule: name of the schedule the run was trained with.
        feature_extractor: description of the FID feature extractor (a dict), or None when FID was not computed.
        extra: more entries for ``metrics.json`` (e.g. not-applicable notes); values must be JSON-serialisable.
        summary_writer: optional TensorBoard writer for the scalar metrics (``eval/<name>``).
        max_latents: latents kept for the PCA plot. Default 20000.
    """

    def __init__(
        self, output_dir: str | Path, coverage: Any, network: torch.nn.Module, checkpoint: str | Path,
        schedule: str = "", feature_extractor: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
        summary_writer: Any = None, max_latents: int = 20000,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.coverage = coverage
        self.network = network
        self.checkpoint = Path(checkpoint)
        self.schedule = schedule
        self.feature_extractor = dict(feature_extractor) if feature_extractor is not None else None
        self.extra = dict(extra or {})
        self.summary_writer = summary_writer
        self.max_latents = int(max_latents)
        self._latents: list[torch.Tensor] = []
        self._kept = 0
        self._images = 0
        self._generator = torch.Generator().manual_seed(0)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._latents, self._kept, self._images = [], 0, 0

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        self._images += int(output["image"].shape[0])
        if self._kept >= self.max_latents:
            return
        latents = output["latents"].detach().float()
        flat = latents.movedim(1, -1).reshape(-1, latents.shape[1]).cpu()  # (B * T, D)
        take = min(flat.shape[0], self.max_latents - self._kept, max(1, self.max_latents // 50))
        pick = torch.randperm(flat.shape[0], generator=self._generator)[:take]
        self._latents.append(flat[pick])
        self._kept += take

    def _write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        quantizer = unwrap_model(self.network).quantizer
        codebook = quantizer.codebook.detach().float().cpu()
        counts = getattr(self.coverage, "last_counts", None)
        metrics = {k: _number(v) for k, v in engine.state.metrics.items() if not isinstance(v, Mapping)}
        report = {
            "schedule": self.schedule,
            "checkpoint": str(self.checkpoint),
            "checkpoint_sha256": file_sha256(self.checkpoint) if self.checkpoint.is_file() else None,
            "num_images": self._images,
            "quantizer_active": bool(quantizer.active),
            "feature_extractor": self.feature_extractor,
            "metrics": metrics,
            **self.extra,
        }
        (self.output_dir / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        torch.save(codebook, self.output_dir / "codebook.pt")
        if counts is not None:
            torch.save(counts, self.output_dir / "code_counts.pt")
            plot_code_frequencies(counts, self.output_dir / "code_frequencies.png")
        if self._latents:
            used = counts > 0 if counts is not None else None
            plot_codebook_pca(codebook, torch.cat(self._latents), self.output_dir / "codebook_pca.png", used=used)
        plot_code_distances(codebook, self.output_dir / "code_distances.png")
        if self.summary_writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.summary_writer.add_scalar(f"eval/{name}", value, 0)
            self.summary_writer.flush()
        logger.info("evaluation report of %d images written to %s", self._images, self.output_dir)
