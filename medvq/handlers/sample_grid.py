"""During generator training, sample a few images per condition and show them as a grid (TensorBoard + PNG).

Loss curves of a next-scale generator say little about what it draws; a grid per epoch (one row per condition, same
seeds every time) shows the samples sharpen and the diagnoses separate. 3-D generators: each volume's tile is its
axial, coronal and sagittal middle slices (:func:`medvq.generation.sample_views`, as the writer's ``grid.png``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image
from torch import nn

import medvq.generation.writer as _writer  # a module, not its names: the writer imports medvq.handlers in turn
from medvq.generation.conditions import condition_vectors
from medvq.networks.var_sampling import sample_var
from medvq.utils.distributed import unwrap_model

__all__ = ["SampleGridHandler"]


class SampleGridHandler:
    """Every ``interval`` epochs: ``samples_per_condition`` images per condition, one grid row per condition.

    2-D images are shown as they are, 3-D volumes as their three orthogonal middle slices
    (:func:`~medvq.generation.sample_views`); RGB stays RGB, any other channel count shows its first channel in
    grey.

    Args:
        generator: the :class:`~medvq.networks.VARTransformer` being trained (possibly DDP-wrapped).
        tokenizer: the frozen :class:`~medvq.networks.MultiScaleVQGANTokenizer`.
        conditions: condition names (:func:`~medvq.generation.condition_vectors`).
        class_names: the label vector's classes.
        summary_writer: TensorBoard writer (tag ``samples``); None writes the PNG only.
        output_dir: folder of ``samples_epoch<N>.png``; None writes no file.
        samples_per_condition: columns of the grid. Default 4.
        interval: epochs between grids. Default 1.
        seed: the same seed every time, so grids of successive epochs compare like for like. Default 0.
        guidance, top_k, top_p: sampling settings (:func:`~medvq.networks.sample_var`). Defaults 2.5, 0, 0.0.
        step_transform: maps the trainer to the TensorBoard step (the bundles: the iteration that ends the epoch).
            Default: its epoch. File names always carry the epoch.
    """

    def __init__(
        self,
        generator: nn.Module,
        tokenizer: nn.Module,
        conditions: Sequence[str],
        class_names: Sequence[str],
        summary_writer: Any = None,
        output_dir: str | Path | None = None,
        samples_per_condition: int = 4,
        interval: int = 1,
        seed: int = 0,
        guidance: float = 2.5,
        top_k: int = 0,
        top_p: float = 0.0,
        step_transform: Callable[[Engine], int] | None = None,
    ) -> None:
        if samples_per_condition < 1 or interval < 1:
            raise ValueError(f"samples_per_condition and interval must be >= 1, got {samples_per_condition} and "
                             f"{interval}.")
        self.generator = generator
        self.tokenizer = tokenizer
        self.vectors = condition_vectors(conditions, class_names)
        self.summary_writer = summary_writer
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.samples_per_condition = int(samples_per_condition)
        self.interval = int(interval)
        self.seed = int(seed)
        self.settings = {"guidance": float(guidance), "top_k": int(top_k), "top_p": float(top_p)}
        self.step_transform = step_transform or (lambda engine: engine.state.epoch)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    @torch.no_grad()
    def grid(self, device: torch.device | str) -> np.ndarray:
        """The grid of one row per condition, sampled on ``device``.

        Args:
            device: where the generator runs (the seeded sampling generator is created there).

        Returns:
            ``(rows * H, samples_per_condition * W, 3)`` uint8 RGB array (grey images as three equal channels);
            volumes: ``(rows * S, samples_per_condition * 3 S, 3)``, S = the volume's largest side.
        """
        var, tokenizer = unwrap_model(self.generator), unwrap_model(self.tokenizer)
        was_training = var.training
        rows = []
        try:
            for i, vector in enumerate(self.vectors.values()):
                rng = torch.Generator(device=torch.device(device)).manual_seed(self.seed + i)
                n = self.samples_per_condition
                condition = None if vector is None else vector.to(device)[None].expand(n, -1)
                maps = sample_var(var, tokenizer.quantizer, condition, num_samples=n, generator=rng, **self.settings)
                images = tokenizer.decode_indices(maps).float().clamp(-1, 1)  # (n, C, *spatial)
                images = _writer.sample_views(images)  # (n, C, H, W); volumes: (n, C, S, 3 S)
                if images.shape[1] != 3:
                    images = images[:, :1].expand(-1, 3, -1, -1)
                rows.append(torch.cat(list(images), dim=-1))  # (3, H, n * W)
        finally:
            var.train(was_training)
        grid = ((torch.cat(rows, dim=-2) + 1) * 127.5).round().to(torch.uint8)  # (3, rows * H, n * W)
        return grid.permute(1, 2, 0).cpu().numpy()

    def __call__(self, engine: Engine) -> None:
        device = engine.state.device if getattr(engine.state, "device", None) is not None else "cpu"
        grid = self.grid(device)
        epoch = engine.state.epoch
        if self.summary_writer is not None:
            self.summary_writer.add_image("samples", grid, int(self.step_transform(engine)), dataformats="HWC")
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grid).save(self.output_dir / f"samples_epoch{epoch:04d}.png")
