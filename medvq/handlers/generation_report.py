"""Report of a generator evaluation: ``metrics.json`` (g-FID, token coverage per scale, provenance), token counts,
the generated-vs-real token frequency plot, and a real | generated image grid (PNG + TensorBoard)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from PIL import Image

from medvq.handlers.evaluation_report import _number, file_sha256
from medvq.handlers.monitoring import make_grid
from medvq.report.plots import plot_code_frequencies

__all__ = ["GenerationReportHandler"]

logger = logging.getLogger(__name__)


class GenerationReportHandler:
    """Write the report of a :class:`~medvq.engines.GeneratorEvaluator` run when it completes.

    Args:
        output_dir: the report folder.
        generated_coverage: the :class:`~medvq.metrics.ScaleCoverage` of the generated tokens attached to the
            evaluator (its ``last_counts``).
        real_coverage: the same for the real images' tokens, or None.
        checkpoints: ``{"tokenizer": path, "generator": path}``; paths and sha256 go into ``metrics.json``.
        settings: the sampling settings (guidance, top-k, ...) recorded in ``metrics.json``.
        extra: more JSON-serialisable entries for ``metrics.json`` (e.g. a note that g-FID was not computed).
        summary_writer: TensorBoard writer for the scalars (``eval/<name>``) and the grid; None skips it.
    """

    def __init__(
        self,
        output_dir: str | Path,
        generated_coverage: Any,
        real_coverage: Any = None,
        checkpoints: Mapping[str, str] | None = None,
        settings: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        summary_writer: Any = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.generated_coverage = generated_coverage
        self.real_coverage = real_coverage
        self.checkpoints = dict(checkpoints or {})
        self.settings = dict(settings or {})
        self.extra = dict(extra or {})
        self.summary_writer = summary_writer
        self._grid = None
        self._images = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._grid, self._images = None, 0

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        self._images += int(output["pred"].shape[0])
        if self._grid is None:  # real | generated, first batch
            self._grid = make_grid(output["image"].detach().cpu(), output["pred"].detach().cpu())

    def _write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {k: _number(v) for k, v in engine.state.metrics.items() if not isinstance(v, Mapping)}
        checkpoints = {
            name: {"path": str(path), "sha256": file_sha256(path) if Path(path).is_file() else None}
            for name, path in self.checkpoints.items()
        }
        report = {"num_images": self._images, "checkpoints": checkpoints, "sampling": self.settings,
                  "metrics": metrics, **self.extra}
        (self.output_dir / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        counts = {"generated": getattr(self.generated_coverage, "last_counts", None)}
        if self.real_coverage is not None:
            counts["real"] = getattr(self.real_coverage, "last_counts", None)
        counts = {k: v for k, v in counts.items() if v is not None}
        if counts:
            torch.save(counts, self.output_dir / "token_counts.pt")  # (num_scales, K) each
            plot_code_frequencies({k: v.sum(0) for k, v in counts.items()}, self.output_dir / "token_frequencies.png")
        if self._grid is not None:
            Image.fromarray(self._grid).save(self.output_dir / "real_vs_generated.png")
        if self.summary_writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.summary_writer.add_scalar(f"eval/{name}", value, 0)
            if self._grid is not None:
                self.summary_writer.add_image("eval/real_vs_generated", self._grid, 0, dataformats="HWC")
            self.summary_writer.flush()
        logger.info("generation report of %d images written to %s", self._images, self.output_dir)
