"""Ignite handler that writes a tokenizer evaluator's outputs to disk: reconstructions, token maps and a summary.

Attached to :class:`medvq.engines.TokenizerEvaluator`, whose iterations return batch-first ``image`` (preprocessed
input), ``pred`` (reconstruction, clamped to [-1, 1]) and ``indices`` (token-index maps). For every image it writes

- 2D images: ``<name>_recon.png``, the reconstruction as uint8 (``(x + 1) * 127.5``, rounded; grayscale for one
  channel, RGB for three), on the preprocessed grid, not transposed;
- 3D volumes: ``<name>_recon.nii.gz``, a float32 NIfTI. With the inference ``transform``, on the source file's grid
  (its shape, orientation and affine: the spatial preprocessing inverted by MONAI's ``Invertd``) and, with
  ``modality``, in input units (Hounsfield units for CT, the source scale for MR,
  :func:`medvq.transforms.to_input_units`); without them, on the preprocessed grid and in [-1, 1];
- ``<name>_tokens.npy``: the int64 token-index map, shape = the latent grid (image size / downsample factor;
  ``(h, w)`` in 2D, ``(h, w, d)`` in 3D; a multi-scale tokenizer's ``(L,)`` sequence);

and at the end of the run ``tokens.json`` (run metadata + one entry per image) and ``index.csv`` (the same entries,
one row per image): input path, output file names (relative to the output folder), token-grid shape, PSNR of the
reconstruction against the preprocessed input (dB, signal range 2 as for [-1, 1] images, the same definition as
MONAI's ``PSNRMetric(max_val=2.0)`` used by validation; ``null`` / ``inf`` for a perfect reconstruction), ``format``
(``"png"`` or ``"nifti"``) and ``space`` (``"preprocessed"`` or ``"source"``: the grid the reconstruction is on).

``<name>`` is the input file's name without its extension (``.nii.gz`` counts as one; a DICOM series: its folder's
name); repeated names (same stem in two sub-folders, ``a.jpg`` beside ``a.png``, slices of one volume) get ``_2``,
``_3``, ... in input order, so nothing is overwritten.

Limitations: a single process (no DDP gathering of the summary); 2D reconstructions are not mapped back to the
source grid or units (``transform`` and ``modality`` act on volumes only).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["TokenSaver"]

logger = logging.getLogger(__name__)

_CSV_COLUMNS = ("image", "recon", "tokens", "token_grid", "psnr", "format", "space")
_PRED_KEY = "pred"  # key of the reconstruction in the decollated item given to Invertd


def _to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [-1, 1] -> ``(H, W, C)`` uint8 (``(H, W)`` for one channel)."""
    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (C, H, W)
    array = pixels.permute(1, 2, 0).cpu().numpy()  # (H, W, C)
    return array[..., 0] if array.shape[-1] == 1 else array


def _psnr(pred: torch.Tensor, image: torch.Tensor, data_range: float = 2.0) -> float:
    """PSNR in dB of one image pair, ``10 log10(range^2 / MSE)``; ``inf`` when they are equal."""
    mse = float(torch.mean((pred.double() - image.double()) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _stem(source: str) -> str:
    """File name without its extension; ``.nii.gz`` is one extension."""
    name = Path(source).name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(source).stem


def _save_nifti(volume: torch.Tensor, affine: Any, path: Path) -> None:
    """``(C, X, Y, Z)`` -> a float32 NIfTI: ``(X, Y, Z)`` for one channel, ``(X, Y, Z, C)`` otherwise."""
    import nibabel as nib

    array = volume.detach().cpu().float().numpy()
    array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    affine = np.asarray(torch.as_tensor(affine, dtype=torch.float64).cpu(), dtype=np.float64)
    image = nib.Nifti1Image(array.astype(np.float32), affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


class TokenSaver:
    """Save reconstructions and token-index maps of every image an evaluator sees, then a summary.

    2D reconstructions are written as PNG on the preprocessed grid, ``(x + 1) * 127.5`` whatever the modality (a
    CT or MR slice is its [-1, 1] window / percentile scaling as 8-bit gray, not Hounsfield units). 3D ones are
    written as NIfTI (module docstring): with ``transform``, back on the source grid; otherwise on the
    preprocessed grid with the batch MetaTensor's current affine (after reorientation, resampling, crop / pad).

    Args:
        output_dir: folder of the outputs (created at the start of the run).
        image_key: key of the images in a batch; their MetaTensor ``meta["filename_or_obj"]`` names the inputs
            (items without it are named ``image_<n>``). Default ``"image"``.
        metadata: JSON-serialisable facts about the run (checkpoint, image size, codebook size, ...) stored under
            ``"run"`` in ``tokens.json``; default None.
        transform: the inference preprocessing (the same ``monai.transforms.Compose`` object the dataset runs,
            e.g. :func:`medvq.transforms.image_preprocessing` with ``train=False``). For volumes its spatial steps
            (``Orientationd``, ``Spacingd``, ``ResizeWithPadOrCropd``) are inverted with MONAI's ``Invertd`` from the
            ``applied_operations`` the batch's images carry, with the forward's interpolation. Voxels the
            preprocessing cropped away were never reconstructed: they are written as -1 (the bottom of the range,
            air for CT). Default None: volumes stay on the preprocessed grid.
        modality: ``"ct"``, ``"mr"``, ``"xray"`` or ``"rgb"`` (``"fundus"`` and ``"natural"``, 2D only, are accepted): map volumes
            back to input units with :func:`medvq.transforms.to_input_units` and the batch's
            ``<image_key>_intensity_range`` (required for ``"mr"``; else the window). Default None: volumes stay
            in [-1, 1].
        window: the window the preprocessing used (ct / xray / rgb; default the modality's), used where a batch
            has no ``<image_key>_intensity_range``.
        reconstructions: write the reconstructions; False writes only the token maps and the summary (``recon``
            is then null in ``tokens.json`` and empty in ``index.csv``; the PSNR is still measured). Default True.

    Attributes:
        records: one dict per image written so far in this run (the entries of ``tokens.json``).

    Raises:
        ValueError: an empty ``output_dir``, an unknown ``modality``, a ``window`` without ``modality`` or with
            ``"mr"``, a bad ``window``; at run time, a batch of other than 2D / 3D reconstructions, a ``transform``
            whose operations the batch does not carry, or an MR batch without its intensity range.
        TypeError: a ``transform`` that is not a MONAI ``InvertibleTransform`` (e.g. ``Compose``).

    Example:
        >>> tf = image_preprocessing(modality="ct", spatial_dims=3, roi_size=96, train=False)  # doctest: +SKIP
        >>> saver = TokenSaver("out", transform=tf, modality="ct")  # doctest: +SKIP
        >>> evaluator = TokenizerEvaluator(device, loader, network, val_handlers=[saver])  # doctest: +SKIP
        >>> evaluator.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        image_key: str = "image",
        metadata: Mapping[str, Any] | None = None,
        transform: Any = None,
        modality: str | None = None,
        window: Sequence[float] | None = None,
        reconstructions: bool = True,
    ) -> None:
        if not output_dir:
            raise ValueError("output_dir must be a folder path, got an empty value.")
        if transform is not None:
            from monai.transforms import InvertibleTransform

            if not isinstance(transform, InvertibleTransform):
                raise TypeError(
                    "transform must be the inference preprocessing as a MONAI InvertibleTransform (a Compose, e.g. "
                    f"medvq.transforms.image_preprocessing(..., train=False)), got {type(transform).__name__}."
                )
        if modality is None:
            if window is not None:
                raise ValueError("window needs modality: pass modality='ct', 'xray' or 'rgb' with it.")
        elif modality in ("fundus", "natural"):  # the bundles' names of RGB photographs (fundus, ImageNet): 2D, 8-bit
            if window is not None:
                raise ValueError(f"window does not apply to modality '{modality}' (8-bit photographs).")
        else:
            from medvq.transforms import preprocessing_record

            preprocessing_record(modality=modality, window=window)  # validates modality and window, names them
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.metadata = dict(metadata or {})
        self.transform = transform
        self.modality = modality
        self.window = None if window is None else [float(v) for v in window]
        self.reconstructions = bool(reconstructions)
        self.records: list[dict[str, Any]] = []
        self._used_names: set[str] = set()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._save_batch)
        engine.add_event_handler(Events.COMPLETED, self._write_summary)

    def _start(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.records, self._used_names = [], set()

    def _unique_name(self, source: str, cut: tuple[int, int] | None = None) -> str:
        stem = _stem(source) if source else f"image_{len(self.records):05d}"
        if cut is not None:
            stem = f"{stem}_{'xyz'[cut[0]]}{cut[1]:03d}"  # e.g. ct_z012: axial slice 12 (RAS axes)
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

    def _items(self, engine: Engine, batch_size: int) -> list[dict[str, Any]]:
        """The current batch decollated into its items (MetaTensors with their own meta and applied_operations)."""
        from monai.data import decollate_batch

        batch = engine.state.batch
        if not isinstance(batch, Mapping) or self.image_key not in batch:
            if self.transform is not None or self.modality == "mr":
                raise ValueError(
                    f"TokenSaver needs the batch's '{self.image_key}' (its metadata) for transform / modality, but "
                    "the batch is not a dict holding it."
                )
            return [{} for _ in range(batch_size)]
        keys = [k for k in (self.image_key, f"{self.image_key}_intensity_range") if k in batch]
        items = decollate_batch({k: batch[k] for k in keys}, detach=True)
        if len(items) != batch_size:
            raise ValueError(f"the batch holds {len(items)} '{self.image_key}' items but {batch_size} predictions.")
        return items

    def _to_source(self, item: dict[str, Any], pred: torch.Tensor) -> tuple[torch.Tensor, Any, str]:
        """A ``(C, X, Y, Z)`` reconstruction -> (volume to write, its affine, space), as the constructor chose."""
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        image = item.get(self.image_key)
        space = "preprocessed"
        if self.transform is None:
            volume, affine = pred, getattr(image, "affine", None)
            if affine is None:
                affine = torch.eye(4, dtype=torch.float64)
        else:
            if not isinstance(image, MetaTensor) or not image.applied_operations:
                raise ValueError(
                    f"transform was given but the batch's '{self.image_key}' carries no applied_operations to "
                    "invert: the dataset must run this transform (a MONAI Compose with track_meta on) and the "
                    "loader collate MetaTensors (monai.data.DataLoader)."
                )
            # shifted by +1 so that what the inverse pads (the voxels the forward cropped away) comes out as -1
            data = {self.image_key: image, _PRED_KEY: MetaTensor(pred.detach().cpu().float() + 1.0)}
            invert = Invertd(_PRED_KEY, transform=self.transform, orig_keys=self.image_key, nearest_interp=False)
            inverted = invert(data)
            volume = inverted[_PRED_KEY]
            if not isinstance(volume, MetaTensor) or volume.applied_operations:
                left = [op.get("class") for op in getattr(volume, "applied_operations", [])]
                raise ValueError(f"transform did not invert every operation the batch carries (left: {left}).")
            affine, volume, space = volume.affine, volume.as_tensor() - 1.0, "source"
        if self.modality is not None:
            intensity = item.get(f"{self.image_key}_intensity_range")
            if intensity is None and self.modality == "mr":
                raise ValueError(
                    f"modality 'mr' needs the batch's '{self.image_key}_intensity_range' (the per-image percentile "
                    "values that medvq.transforms.image_preprocessing records); the batch has none."
                )
            from medvq.transforms import to_input_units

            modality = "rgb" if self.modality in ("fundus", "natural") else self.modality
            volume = to_input_units(volume, modality, window=self.window, intensity_range=intensity)
        return volume, affine, space

    def _slices(self, engine: Engine, batch_size: int) -> list[tuple[int, int] | None]:
        """``(slice_axis, slice_index)`` of each item that is a 2-D slice of a volume (the batch's ``slice_index`` /
        ``slice_axis``, -1 or absent: not a slice), else None."""
        batch = engine.state.batch
        if not isinstance(batch, Mapping) or "slice_index" not in batch:
            return [None] * batch_size
        index = torch.as_tensor(batch["slice_index"]).reshape(-1).tolist()
        axis = torch.as_tensor(batch.get("slice_axis", [2] * len(index))).reshape(-1).tolist()
        if len(index) != batch_size:
            return [None] * batch_size
        return [(int(a), int(i)) if i >= 0 else None for a, i in zip(axis, index)]

    def _save_batch(self, engine: Engine) -> None:
        from PIL import Image

        output = engine.state.output
        images, preds, indices = output["image"], output["pred"], output["indices"]  # (B, C, *spatial) x2, tokens
        if preds.ndim not in (4, 5):
            raise ValueError(
                "TokenSaver writes 2D images (B, C, H, W) as PNG and 3D volumes (B, C, X, Y, Z) as NIfTI; got "
                f"reconstructions of shape {tuple(preds.shape)}."
            )
        volumes = preds.ndim == 5
        items = self._items(engine, len(preds)) if volumes and self.reconstructions else [{}] * len(preds)
        slices = self._slices(engine, len(preds))
        for source, item, image, pred, tokens, cut in zip(
            self._sources(engine, len(preds)), items, images, preds, indices, slices
        ):
            name = self._unique_name(source, cut)
            tokens_file = f"{name}_tokens.npy"
            if not self.reconstructions:
                recon_file, fmt, space = None, None, None
            elif volumes:
                recon_file, fmt = f"{name}_recon.nii.gz", "nifti"
                volume, affine, space = self._to_source(item, pred)
                _save_nifti(volume, affine, self.output_dir / recon_file)
            else:
                recon_file, fmt, space = f"{name}_recon.png", "png", "preprocessed"
                Image.fromarray(_to_uint8_hwc(pred)).save(self.output_dir / recon_file)
            np.save(self.output_dir / tokens_file, tokens.detach().cpu().numpy().astype(np.int64))  # (h, w[, d])
            self.records.append({
                "image": source,
                "recon": recon_file,
                "tokens": tokens_file,
                "token_grid": [int(s) for s in tokens.shape],
                "psnr": _psnr(pred, image),
                "format": fmt,
                "space": space,
                **({"slice_axis": cut[0], "slice_index": cut[1]} if cut is not None else {}),
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
