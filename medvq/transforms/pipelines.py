"""The one preprocessing entry point of every tokenizer bundle: fundus photographs or images of any modality.

The bundles (odir_vq, odir_var, image_vq, image_var) share their wiring; what differs between fundus data and CT,
MR, X-ray or RGB images is the ``modality`` knob, and this module turns it into a pipeline:

- ``"fundus"``: :func:`medvq.transforms.fundus_preprocessing` (border crop, square pad, circular field-of-view
  mask; RGB, 2D only). Fundus preprocessing belongs to fundus photographs only: on any other image the circular mask
  would black out the corners (a natural photograph came back at 12.6 dB through it).
- ``"natural"``: :func:`medvq.transforms.natural_preprocessing` (VAR's ImageNet preprocessing: shorter side to
  1.125x, Lanczos, random / centre crop; RGB, 2D only).
- ``"ct"``, ``"mr"``, ``"xray"``, ``"rgb"``: :func:`medvq.transforms.image_preprocessing` (intensity by modality,
  2D slices or 3D volumes, no mask).

:func:`preprocessing_settings` is the matching record for ``run_info.json``, read back by inference and sampling so
their outputs map to the input's units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import Compose

from medvq.transforms.fundus import fundus_preprocessing
from medvq.transforms.modality import MODALITIES, image_preprocessing, preprocessing_record
from medvq.transforms.natural import VAR_RESIZE_RATIO, natural_preprocessing

__all__ = ["TOKENIZER_MODALITIES", "preprocessing_settings", "tokenizer_preprocessing"]

TOKENIZER_MODALITIES: tuple[str, ...] = ("fundus", "natural", *MODALITIES)
"""What a bundle's ``--modality`` accepts: ``fundus`` (ODIR-style photographs), ``natural`` (ImageNet photographs,
VAR's resize and crop: :func:`~medvq.transforms.natural_preprocessing`) or a modality of
:func:`~medvq.transforms.image_preprocessing`."""


def _check(modality: Any, spatial_dims: Any, channels: Any) -> None:
    if modality not in TOKENIZER_MODALITIES:
        raise ValueError(
            f"modality must be one of {list(TOKENIZER_MODALITIES)}, got {modality!r}: ct (a Hounsfield window), mr "
            "(per-volume percentiles), xray or rgb (8-bit pixels), fundus (ODIR-style photographs: border crop and "
            "circular mask), natural (ImageNet photographs, VAR's resize and crop)."
        )
    if modality in ("fundus", "natural") and spatial_dims != 2:
        raise ValueError(f"modality '{modality}' is 2D photographs: spatial_dims must be 2, got {spatial_dims!r}.")
    if modality in ("fundus", "natural") and channels not in (None, 3):
        raise ValueError(f"modality '{modality}' is RGB: channels must be None or 3, got {channels!r}.")


def tokenizer_preprocessing(
    keys: KeysCollection = "image",
    modality: str = "fundus",
    spatial_dims: int = 2,
    image_size: int = 256,
    roi_size: int | Sequence[int] = 96,
    pixdim: float | Sequence[float] | None = None,
    train: bool = True,
    window: Sequence[float] | None = None,
    channels: int | None = None,
    label_key: str | None = "label",
) -> Compose:
    """The preprocessing of a tokenizer bundle for ``modality`` (module docstring).

    Args:
        keys: image key(s); default ``"image"``.
        modality: ``"fundus"`` (default), ``"ct"``, ``"mr"``, ``"xray"`` or ``"rgb"``.
        spatial_dims: 2 or 3 (fundus: 2); default 2.
        image_size: 2D output side; default 256.
        roi_size: 3D output size; default 96.
        pixdim: 3D voxel spacing to resample to (mm); default None keeps the source's.
        train: random flip (and 3D random crop position); False for validation and inference.
        window: intensity window in input units (ct / xray / rgb); default the modality's.
        channels: None keeps the loaded channel count; 1 or 3 converts (fundus: RGB always).
        label_key: the item's label key (fundus: a float32 multi-hot vector; other modalities: a long class
            index); default ``"label"``.

    Raises:
        ValueError: a bad argument, named.
    """
    _check(modality, spatial_dims, channels)
    if modality == "fundus":
        return fundus_preprocessing(keys, image_size=image_size, train=train, label_key=label_key)
    if modality == "natural":
        return natural_preprocessing(keys, image_size=image_size, train=train, label_key=label_key)
    return image_preprocessing(
        keys, modality=modality, spatial_dims=spatial_dims, image_size=image_size, roi_size=roi_size, pixdim=pixdim,
        train=train, window=window, channels=channels, label_key=label_key,
    )


def preprocessing_settings(
    modality: str = "fundus",
    spatial_dims: int = 2,
    image_size: int = 256,
    roi_size: int | Sequence[int] = 96,
    pixdim: float | Sequence[float] | None = None,
    window: Sequence[float] | None = None,
    channels: int | None = None,
) -> dict[str, Any]:
    """The record of :func:`tokenizer_preprocessing`'s parameters for ``run_info.json`` (``"preprocessing"``).

    Fundus: ``{"modality": "fundus", "spatial_dims": 2, "channels": 3, "image_size", "steps"}``; otherwise
    :func:`~medvq.transforms.preprocessing_record`.
    """
    _check(modality, spatial_dims, channels)
    if modality == "fundus":
        return {
            "modality": "fundus", "spatial_dims": 2, "channels": 3, "image_size": image_size,
            "steps": "border crop, square pad, resize (area), circular field-of-view mask, 0..255 to [-1, 1]",
        }
    if modality == "natural":
        return {
            "modality": "natural", "spatial_dims": 2, "channels": 3, "image_size": image_size,
            "steps": f"shorter side to round({VAR_RESIZE_RATIO} * image_size) (PIL Lanczos), random crop (training) or "
                     "torchvision's centre crop, 0..255 to [-1, 1] (VAR's)",
        }
    return preprocessing_record(
        modality, spatial_dims, image_size, roi_size, pixdim, window, None, channels
    )
