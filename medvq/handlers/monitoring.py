"""Monitoring handlers: input | reconstruction grids (PNG + TensorBoard), code-frequency histograms, progress bar.

MONAI's ``TensorBoardImageHandler`` draws one image (or a 3D slice animation) per tag; a tokenizer is judged by
looking at many inputs beside their reconstructions, so :class:`ReconstructionGridHandler` tiles them into one grid
and also writes it as a PNG file for machines without TensorBoard. A grid row of a 3D volume shows its three
orthogonal middle slices (:func:`make_grid`); the handler also writes the first volume pair as a MONAI slice
animation (``monai.visualize.plot_2d_or_3d_image``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = [
    "CodeFrequencyHandler",
    "ProgressBarHandler",
    "ReconstructionGridHandler",
    "make_grid",
    "orthogonal_views",
    "volume_pair",
]

logger = logging.getLogger(__name__)


def _to_2d(image: torch.Tensor) -> torch.Tensor:
    """``(C, *spatial)`` -> ``(C, H, W)``: the middle slice along the last axis of a 3D volume."""
    while image.ndim > 3:
        image = image[..., image.shape[-1] // 2]
    return image


def _pad_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, size, size)``, centred, padded with -1 (the bottom of the [-1, 1] range)."""
    h, w = image.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(image, (left, size - w - left, top, size - h - top), value=-1.0)


def orthogonal_views(volume: torch.Tensor) -> torch.Tensor:
    """The three orthogonal middle slices of a ``(C, X, Y, Z)`` volume side by side: ``(C, S, 3 S)``, S = max(X, Y, Z).

    Left to right: axial (the middle Z slice, an X x Y plane), coronal (middle Y, X x Z) and sagittal (middle X,
    Y x Z), each turned a quarter (``torch.rot90``) so that the second of its two axes runs upwards and the first
    to the right, then centred on an S x S square padded with -1. For a RAS volume (what
    :func:`medvq.transforms.image_preprocessing` gives) that is the neurological view: anterior (axial) or
    superior (coronal, sagittal) up, the patient's left on the left (axial, coronal), posterior on the left
    (sagittal). Other orientations are shown in their array order, turned the same way.

    Raises:
        ValueError: ``volume`` is not 4-D.
    """
    if volume.ndim != 4:
        raise ValueError(f"volume must be (C, X, Y, Z), got shape {tuple(volume.shape)}.")
    x, y, z = (s // 2 for s in volume.shape[1:])
    size = max(volume.shape[1:])
    planes = (volume[..., z], volume[:, :, y, :], volume[:, x])  # (C, X, Y), (C, X, Z), (C, Y, Z)
    return torch.cat([_pad_square(torch.rot90(p, 1, dims=(-2, -1)), size) for p in planes], dim=-1)


def make_grid(images: torch.Tensor, reconstructions: torch.Tensor, max_images: int = 8) -> np.ndarray:
    """Pairs ``input | reconstruction`` side by side, one pair per row; values in [-1, 1] mapped to uint8.

    Args:
        images: ``(B, C, H, W)`` images or ``(B, C, X, Y, Z)`` volumes in [-1, 1] (C = 1 or 3; other channel
            counts show the first channel). A volume's row shows its three orthogonal middle slices
            (:func:`orthogonal_views`: axial, coronal, sagittal, each on a square of side S = max(X, Y, Z)
            padded with -1) beside the same three of its reconstruction.
        reconstructions: same shape as ``images``.
        max_images: at most this many rows.

    Returns:
        ``(rows * H, 2 * W, 3)`` uint8 RGB array; volumes: ``(rows * S, 6 * S, 3)``.

    Raises:
        ValueError: the shapes differ, or the batches are not 4-D / 5-D.
    """
    if images.shape != reconstructions.shape:
        raise ValueError(f"images {tuple(images.shape)} and reconstructions {tuple(reconstructions.shape)} differ.")
    if images.ndim not in (4, 5):
        raise ValueError(
            f"images must be (B, C, H, W) or (B, C, X, Y, Z), got shape {tuple(images.shape)}."
        )
    view = orthogonal_views if images.ndim == 5 else _to_2d
    rows = []
    for image, recon in list(zip(images, reconstructions))[:max_images]:
        pair = torch.cat([view(image), view(recon)], dim=-1)  # (C, H, 2W); volumes (C, S, 6S)
        if pair.shape[0] == 1:
            pair = pair.expand(3, -1, -1)
        elif pair.shape[0] != 3:
            pair = pair[:1].expand(3, -1, -1)  # other channel counts: show the first channel
        rows.append(pair)
    grid = torch.cat(rows, dim=1)  # (3, rows * H, 2W)
    grid = ((grid.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return grid.permute(1, 2, 0).cpu().numpy()


def volume_pair(image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """One ``(C, X, Y, Z)`` volume and its reconstruction as one ``(C, Y, 2 X, Z)`` volume of axial slices.

    Each axial (X x Y) plane is turned as in :func:`orthogonal_views` (anterior up for RAS volumes), and the input
    and the reconstruction sit side by side: input left. What :class:`ReconstructionGridHandler` animates.
    """
    pair = torch.cat([image, reconstruction], dim=1)  # (C, 2X, Y, Z)
    return torch.rot90(pair, 1, dims=(1, 2))  # (C, Y, 2X, Z)


class ReconstructionGridHandler:
    """At the end of each evaluation, write a grid of the first batch's inputs beside their reconstructions.

    2D batches: one ``input | reconstruction`` pair per row. 3D batches ``(B, C, X, Y, Z)``: each row holds the
    input's three orthogonal middle slices beside the reconstruction's (:func:`make_grid`), and, with a
    ``summary_writer``, the first volume pair is also written as an animated series of axial slices, input left,
    reconstruction right (:func:`volume_pair`, drawn by MONAI's ``plot_2d_or_3d_image``, which rescales the pair's
    values to 0-255 together; TensorBoard tag ``f"{volume_tag}_HWD/image"``; its first channel).

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
        volume_tag: tag prefix of the 3D slice animation. Default ``"val/reconstruction_volume"``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        summary_writer: Any = None,
        step_transform: Callable[[Engine], int] | None = None,
        output_transform: Callable[[Any], Sequence[torch.Tensor]] | None = None,
        max_images: int = 8,
        tag: str = "val/reconstructions",
        volume_tag: str = "val/reconstruction_volume",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.summary_writer = summary_writer
        self.step_transform = step_transform or (lambda engine: engine.state.epoch)
        self.output_transform = output_transform or (lambda out: (out["image"], out["pred"]))
        self.max_images = max_images
        self.tag = tag
        self.volume_tag = volume_tag
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
            images, recons = self._batch
            if images.ndim == 5:
                from monai.visualize import plot_2d_or_3d_image

                pair = volume_pair(images[0].float(), recons[0].float().clamp(-1, 1))  # (C, Y, 2X, Z)
                # frames along the last axis: the axial slices
                plot_2d_or_3d_image(pair[None], step, self.summary_writer, frame_dim=-1, tag=self.volume_tag)
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
