"""Monitoring handlers: input | reconstruction grids (PNG + TensorBoard), code-frequency histograms, progress bar.

MONAI's ``TensorBoardImageHandler`` draws one image (or a 3D slice animation) per tag; a tokenizer is judged by
looking at many inputs beside their reconstructions, so :class:`ReconstructionGridHandler` tiles them into one grid
and also writes it as a PNG file for machines without TensorBoard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["CodeFrequencyHandler", "ProgressBarHandler", "ReconstructionGridHandler", "make_grid"]

logger = logging.getLogger(__name__)


def _to_2d(image: torch.Tensor) -> torch.Tensor:
    """``(C, *spatial)`` -> ``(C, H, W)``: the middle slice along the last axis of a 3D volume."""
    while image.ndim > 3:
        image = image[..., image.shape[-1] // 2]
    return image


def make_grid(images: torch.Tensor, reconstructions: torch.Tensor, max_images: int = 8) -> np.ndarray:
    """Pairs ``input | reconstruction`` side by side, one pair per row; values in [-1, 1] mapped to uint8.

    Args:
        images: ``(B, C, *spatial)`` inputs in [-1, 1] (C = 1 or 3; 3D volumes show their middle slice).
        reconstructions: same shape as ``images``.
        max_images: at most this many rows.

    Returns:
        ``(rows * H, 2 * W, 3)`` uint8 RGB array.
    """
    if images.shape != reconstructions.shape:
        raise ValueError(f"images {tuple(images.shape)} and reconstructions {tuple(reconstructions.shape)} differ.")
    rows = []
    for image, recon in list(zip(images, reconstructions))[:max_images]:
        pair = torch.cat([_to_2d(image), _to_2d(recon)], dim=-1)  # (C, H, 2W)
        if pair.shape[0] == 1:
            pair = pair.expand(3, -1, -1)
        elif pair.shape[0] != 3:
            pair = pair[:1].expand(3, -1, -1)  # other channel counts: show the first channel
        rows.append(pair)
    grid = torch.cat(rows, dim=1)  # (3, rows * H, 2W)
    grid = ((grid.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return grid.permute(1, 2, 0).cpu().numpy()


class ReconstructionGridHandler:
    """At the end of each evaluation, write a grid of the first batch's inputs beside their reconstructions.

    Args:
        output_dir: PNG files go to ``output_dir/recon_grid_epoch{N:04d}.png`` and ``output_dir/recon_grid_last.png``.
        summary_writer: optional TensorBoard ``SummaryWriter`` (tag ``tag``).
        step_transform: maps the evaluator to the TensorBoard step (the bundles: the trainer iteration that ends the
            epoch). Default: its epoch. File names always carry the epoch.
        output_transform: maps ``engine.state.output`` to ``(images, reconstructions)``. Default reads ``image``
            and ``pred``.
        max_images: rows of the grid. Default 8.
        tag: TensorBoard tag. Default ``"val/reconstructions"`` (the ``val/`` group, :mod:`medvq.handlers.tensorboard`).
            One image per evaluation under one tag: TensorBoard's server keeps 10 images per tag unless started with
            ``--samples_per_plugin images=N`` with N at least the number of evaluations (the bundle READMEs' watch commands:
            1000; ``images=0`` shows none in TensorBoard 2.21).
    """

    def __init__(
        self,
        output_dir: str | Path,
        summary_writer: Any = None,
        step_transform: Callable[[Engine], int] | None = None,
        output_transform: Callable[[Any], Sequence[torch.Tensor]] | None = None,
        max_images: int = 8,
        tag: str = "val/reconstructions",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.summary_writer = summary_writer
        self.step_transform = step_transform or (lambda engine: engine.state.epoch)
        self.output_transform = output_transform or (lambda out: (out["image"], out["pred"]))
        self.max_images = max_images
        self.tag = tag
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._capture)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._batch = None

    def _capture(self, engine: Engine) -> None:
        if self._batch is None:
            images, recons = self.output_transform(engine.state.output)
            self._batch = (images[: self.max_images].detach().cpu(), recons[: self.max_images].detach().cpu())

    def _write(self, engine: Engine) -> None:
        if self._batch is None:
            return
        from PIL import Image

        grid = make_grid(*self._batch, max_images=self.max_images)
        step = int(self.step_transform(engine))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"recon_grid_epoch{engine.state.epoch:04d}.png"
        Image.fromarray(grid).save(path)
        Image.fromarray(grid).save(self.output_dir / "recon_grid_last.png")
        if self.summary_writer is not None:
            self.summary_writer.add_image(self.tag, grid, step, dataformats="HWC")
            self.summary_writer.flush()
        logger.info("wrote reconstruction grid %s", path)


class CodeFrequencyHandler:
    """After each evaluation, log the whole-set code frequencies of a ``CodebookCoverage`` metric to TensorBoard.

    Writes two TensorBoard histograms: ``{tag}_index`` (code indices weighted by use: the frequency of every code) and
    ``{tag}_log10_count`` (the distribution of log10(1 + count) over codes: dead codes pile up at 0).

    Args:
        coverage: the :class:`medvq.metrics.CodebookCoverage` attached to the evaluator (reads ``last_counts``).
        summary_writer: TensorBoard ``SummaryWriter``.
        step_transform: maps the evaluator to the global step. Default: its epoch.
        tag: TensorBoard tag prefix. Default ``"val/code"`` (``val/code_index``, ``val/code_log10_count``).
    """

    def __init__(
        self, coverage: Any, summary_writer: Any, step_transform: Callable[[Engine], int] | None = None,
        tag: str = "val/code",
    ) -> None:
        self.coverage = coverage
        self.summary_writer = summary_writer
        self.step_transform = step_transform or (lambda engine: engine.state.epoch)
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        # after the metrics (attached earlier by the evaluator) have been computed
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        counts = getattr(self.coverage, "last_counts", None)
        if counts is None or self.summary_writer is None:
            return
        step = int(self.step_transform(engine))
        indices = torch.arange(counts.numel())
        # one histogram entry per latent, by code index: the frequency of every code as TensorBoard draws it
        self.summary_writer.add_histogram(f"{self.tag}_index", indices.repeat_interleave(counts.long()), step)
        self.summary_writer.add_histogram(f"{self.tag}_log10_count", torch.log10(1 + counts.double()), step)
        self.summary_writer.flush()


class ProgressBarHandler:
    """Ignite's ``ProgressBar`` showing chosen scalars of ``engine.state.output`` (e.g. ``["loss", "rec_loss"]``).

    Ignite's ``ProgressBar.attach`` needs its ``output_transform`` at attach time, which a bundle's handler list
    (that calls ``attach(engine)`` only) cannot pass; this wrapper holds it.

    Args:
        output_keys: keys of the output dict to show. Default ``("loss",)``.
        persist: keep the finished bar of each epoch on screen. Default True.
    """

    def __init__(self, output_keys: Sequence[str] = ("loss",), persist: bool = True) -> None:
        self.output_keys = tuple(output_keys)
        self.persist = persist

    def attach(self, engine: Engine) -> None:
        from ignite.handlers import ProgressBar

        keys = self.output_keys

        def scalars(out: dict) -> dict[str, float]:
            # detach: MONAI's SupervisedTrainer puts the loss with its graph into the output
            return {k: float(out[k].detach() if torch.is_tensor(out[k]) else out[k]) for k in keys if k in out}

        ProgressBar(persist=self.persist).attach(engine, output_transform=scalars)
