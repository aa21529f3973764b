"""Ignite handler that writes a tokenizer evaluator's outputs to disk: reconstructions, token maps and a summary.

Attached to :class:`medvq.engines.TokenizerEvaluator`, whose iterations return batch-first ``image`` (preprocessed
input), ``pred`` (reconstruction, clamped to [-1, 1]) and ``indices`` (token-index maps). For every image it writes

- ``<name>_recon.png``: the reconstruction as uint8 RGB (``(x + 1) * 127.5``, rounded), not transposed;
- ``<name>_tokens.npy``: the int64 token-index map, shape = the latent grid (image size / downsample factor);

and at the end of the run ``tokens.json`` (run metadata + one entry per image) and ``index.csv`` (the same entries,
one row per image): input path, output file names (relative to the output folder), token-grid shape and PSNR of the
reconstruction against the preprocessed input (dB, signal range 2 as for [-1, 1] images, the same definition as
MONAI's ``PSNRMetric(max_val=2.0)`` used by validation; ``null`` / ``inf`` for a perfect reconstruction).

``<name>`` is the input file's name without its extension; repeated names (same stem in two sub-folders, or
``a.jpg`` beside ``a.png``) get ``_2``, ``_3``, ... in input order, so nothing is overwritten.

Limitations: 2D images with 1 or 3 channels (PNG); a single process (no DDP gathering of the summary).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["TokenSaver"]

logger = logging.getLogger(__name__)

_CSV_COLUMNS = ("image", "recon", "tokens", "token_grid", "psnr")


def _to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [-1, 1] -> ``(H, W, C)`` uint8 (``(H, W)`` for one channel)."""
    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (C, H, W)
    array = pixels.permute(1, 2, 0).cpu().numpy()  # (H, W, C)
    return array[..., 0] if array.shape[-1] == 1 else array


def _psnr(pred: torch.Tensor, image: torch.Tensor, data_range: float = 2.0) -> float:
    """PSNR in dB of one image pair, ``10 log10(range^2 / MSE)``; ``inf`` when they are equal."""
    mse = float(torch.mean((pred.double() - image.double()) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


class TokenSaver:
    """Save reconstructions and token-index maps of every image an evaluator sees, then a summary.

    Args:
        output_dir: folder of the outputs (created at the start of the run).
        image_key: key of the images in a batch; their MetaTensor ``meta["filename_or_obj"]`` names the inputs
            (items without it are named ``image_<n>``). Default ``"image"``.
        metadata: JSON-serialisable facts about the run (checkpoint, image size, codebook size, ...) stored under
            ``"run"`` in ``tokens.json``; default None.

    Attributes:
        records: one dict per image written so far in this run (the entries of ``tokens.json``).

    Example:
        >>> evaluator = TokenizerEvaluator(device, loader, network, val_handlers=[TokenSaver("out")])  # doctest: +SKIP
        >>> evaluator.run()  # doctest: +SKIP
    """

    def __init__(
        self, output_dir: str | os.PathLike, image_key: str = "image", metadata: Mapping[str, Any] | None = None
    ) -> None:
        if not output_dir:
            raise ValueError("output_dir must be a folder path, got an empty value.")
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.metadata = dict(metadata or {})
        self.records: list[dict[str, Any]] = []
        self._used_names: set[str] = set()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._save_batch)
        engine.add_event_handler(Events.COMPLETED, self._write_summary)

    def _start(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.records, self._used_names = [], set()

    def _unique_name(self, source: str) -> str:
        stem = Path(source).stem if source else f"image_{len(self.records):05d}"
        name, n = stem, 1
        while name in self._used_names:
            n += 1
            name = f"{stem}_{n}"
        self._used_names.add(name)
        return name

    def _sources(self, engine: Engine, batch_size: int) -> list[str]:
        """Input file of each item of the current batch, from the batch's MONAI metadata ("" where unknown)."""
        images = engine.state.batch.get(self.image_key) if isinstance(engine.state.batch, Mapping) else None
        names = getattr(images, "meta", {}).get("filename_or_obj", "")
        names = [names] if isinstance(names, str) else list(names)
        return [str(n) for n in names] if len(names) == batch_size else [""] * batch_size

    def _save_batch(self, engine: Engine) -> None:
        from PIL import Image

        output = engine.state.output
        images, preds, indices = output["image"], output["pred"], output["indices"]  # (B, C, H, W) x2, (B, h, w)
        if preds.ndim != 4:
            raise ValueError(f"TokenSaver writes 2D images as PNG; got reconstructions of shape {tuple(preds.shape)}.")
        for source, image, pred, tokens in zip(self._sources(engine, len(preds)), images, preds, indices):
            name = self._unique_name(source)
            recon_file, tokens_file = f"{name}_recon.png", f"{name}_tokens.npy"
            Image.fromarray(_to_uint8_hwc(pred)).save(self.output_dir / recon_file)
            np.save(self.output_dir / tokens_file, tokens.detach().cpu().numpy().astype(np.int64))  # (h, w)
            self.records.append({
                "image": source,
                "recon": recon_file,
                "tokens": tokens_file,
                "token_grid": [int(s) for s in tokens.shape],
                "psnr": _psnr(pred, image),
            })

    def _write_summary(self, engine: Engine) -> None:
        finite = [r["psnr"] for r in self.records if math.isfinite(r["psnr"])]
        mean_psnr = float(np.mean(finite)) if finite else None
        summary = {
            "run": self.metadata,
            "num_images": len(self.records),
            "mean_psnr": mean_psnr,
            # strict JSON has no Infinity: a perfect reconstruction's PSNR is written as null
            "items": [{**r, "psnr": r["psnr"] if math.isfinite(r["psnr"]) else None} for r in self.records],
        }
        (self.output_dir / "tokens.json").write_text(json.dumps(summary, indent=2) + "\n")
        with open(self.output_dir / "index.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_CSV_COLUMNS)
            writer.writeheader()
            for r in self.records:
                writer.writerow({**r, "token_grid": "x".join(map(str, r["token_grid"])), "psnr": f"{r['psnr']:.4f}"})
        logger.info(
            "wrote %d reconstructions and token maps to %s (mean PSNR %s dB)", len(self.records), self.output_dir,
            "n/a" if mean_psnr is None else f"{mean_psnr:.2f}",
        )
