"""Ignite handler: the memorization check of the images a generator evaluation draws (the var bundles' evaluate.json).

:class:`MemorizationHandler` keeps the first ``max_samples`` generated images of an evaluation (on the CPU) and, when
the evaluation completes, runs :func:`medvq.generation.check_sample_memorization` on them against the training images
of the run's ``datalist.json`` (``memorization.json`` and ``memorization_pairs.png`` in ``output_dir``; the fraction
flagged per space to TensorBoard as ``eval/memorization_flagged_<space>``). The evaluation's own images are the ones
its g-FID is computed on, so the report says how many of *those* are near-copies of training images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["MemorizationHandler"]

logger = logging.getLogger(__name__)


class MemorizationHandler:
    """Run the memorization check on an evaluation's generated images when it completes.

    Args:
        tokenizer: a :class:`medvq.api.Tokenizer` (``medvq.api.load_tokenizer(tokenizer_checkpoint)``): its network
            gives the latent features and reconstructions, its pipeline reads the real images.
        datalist: the training's ``datalist.json`` (its ``training`` list is searched, its ``validation`` list
            calibrates the thresholds).
        output_dir: where ``memorization.json`` and ``memorization_pairs.png`` go.
        max_samples: generated images kept and checked (the first ones, in evaluation order). Default 256.
        output_transform: engine output -> generated images ``(B, C, *spatial)`` in [-1, 1]. Default ``out["pred"]``.
        summary_writer: a TensorBoard ``SummaryWriter`` for the fractions flagged; None skips it.
        batch_size: of the real-image loaders. Default 16.
        enabled: False attaches nothing (the bundles' ``memorization_check`` knob). Default True.

    Attributes:
        report: the :class:`~medvq.generation.memorization.MemorizationReport` of the last completed run (None before).

    Raises:
        ValueError: ``max_samples`` < 1.
    """

    def __init__(
        self, tokenizer: Any, datalist: str | os.PathLike, output_dir: str | os.PathLike, max_samples: int = 256,
        output_transform: Callable[[Any], torch.Tensor] = lambda out: out["pred"], summary_writer: Any = None,
        batch_size: int = 16, enabled: bool = True,
    ) -> None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples (memorization_max_samples) must be an integer >= 1, got {max_samples!r}.")
        self.tokenizer, self.datalist, self.output_dir = tokenizer, datalist, output_dir
        self.max_samples, self.output_transform = max_samples, output_transform
        self.summary_writer, self.batch_size, self.enabled = summary_writer, batch_size, bool(enabled)
        self.report = None
        self._kept: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._keep)
        engine.add_event_handler(Events.COMPLETED, self._check)

    def _start(self, engine: Engine) -> None:
        self._kept = []

    def _keep(self, engine: Engine) -> None:
        left = self.max_samples - sum(len(t) for t in self._kept)
        if left > 0:
            self._kept.append(self.output_transform(engine.state.output)[:left].detach().float().cpu())

    def _check(self, engine: Engine) -> None:
        from medvq.generation import check_sample_memorization

        if not self._kept:
            logger.warning("memorization check: the evaluation generated no images; nothing checked.")
            return
        images = torch.cat(self._kept)
        self.report = check_sample_memorization(self.tokenizer, images, self.datalist, self.output_dir,
                                                sample_names=[f"generated_{i:05d}" for i in range(len(images))],
                                                batch_size=self.batch_size)
        if self.summary_writer is not None:
            step = int(engine.state.iteration)
            for space, result in self.report.spaces.items():
                self.summary_writer.add_scalar(f"eval/memorization_flagged_{space}", result.fraction_flagged, step)
            self.summary_writer.flush()
