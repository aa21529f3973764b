"""Readers for images of any modality: PNG / JPEG, DICOM files and DICOM series folders, NIfTI volumes.

:class:`MedicalImageReader` is one MONAI ``ImageReader`` that picks the reader by file type (a folder is a DICOM
series), so ``LoadImaged(reader=MedicalImageReader())`` reads a datalist that mixes formats and a broken file fails
with its own error, not MONAI's "cannot find a suitable reader" wrapped around the tracebacks of every reader tried.
:class:`DicomSeriesReader` is MONAI's ``PydicomReader`` with a few changes for this library (each marked where it
is made): series slices sorted by position, colour DICOMs channel-last, rescale tags recorded in the metadata, a
warning for a CT without rescale tags.

Array layout: 2-D images are ``(H, W)`` = (rows, columns), the layout of ``PIL`` and of pydicom's ``pixel_array``,
so a PNG written from a DICOM slice loads as the same array (MONAI's defaults would transpose both, to (x, y)).
Volumes carry their affine (DICOM: from ImagePositionPatient / ImageOrientationPatient, LPS turned into RAS as
MONAI's ``NibabelReader`` reports it), so ``Orientation("RAS")`` gives every volume the same axes.

Limitations: multi-frame DICOMs (enhanced CT/MR, ultrasound cine), PALETTE COLOR DICOMs and NIfTI files with more
than 3 dimensions (a time series, or modalities stacked on a 4th axis) raise ``ValueError``; MONOCHROME1 images
(inverted grayscale, some radiographs) are read as stored, not inverted.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader, NibabelReader, PILReader, PydicomReader
from monai.transforms import LoadImaged
from monai.utils import MetaKeys, ensure_tuple

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "PHOTO_SUFFIXES",
    "DicomSeriesReader",
    "LoadMedicalImaged",
    "MedicalImageReader",
    "image_kind",
    "slice_position",
]

logger = logging.getLogger(__name__)

PHOTO_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm",)
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
IMAGE_SUFFIXES: tuple[str, ...] = PHOTO_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES
"""File name endings read (compared case-insensitively); a folder is read as one DICOM series."""

_DICOM_NAME = r"(?i).*\.dcm$"  # files of a series folder that are read: the same endings as a folder scan lists


def image_kind(path: str | os.PathLike) -> str:
    """``"dicom"`` (a ``.dcm`` file or a folder: a DICOM series), ``"nifti"`` or ``"photo"`` (PNG / JPEG).

    Raises:
        ValueError: any other file ending; the message lists :data:`IMAGE_SUFFIXES`.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() or name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(PHOTO_SUFFIXES):
        return "photo"
    raise ValueError(f"'{path}' is not an image medvq reads: expected a folder or a file ending in {IMAGE_SUFFIXES}.")


def _gray_or_rgb(image: Any) -> Any:
    """PIL converter: grayscale stays one channel (8- or 16-bit), everything else becomes RGB (alpha dropped)."""
    if image.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        return image
    if image.mode in ("1", "LA"):
        return image.convert("L")
    if image.mode == "P":  # a palette: its colours, through RGBA when the palette has transparency
        return image.convert("RGBA").convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def slice_position(ds: Any) -> float | None:
    """Position (mm) of a DICOM slice along its normal: ImagePositionPatient projected on the cross product of
    ImageOrientationPatient's row and column directions; None without both tags."""
    position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
        return None
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    return float(np.dot(normal, np.asarray(position, float)))


def _check_dicom(ds: Any, name: str) -> None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(
            f"'{name}' is a multi-frame DICOM ({frames} frames): medvq reads single-frame files and folders of "
            "single-frame files (one series); export the frames as single-frame files."
        )
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        raise ValueError(f"'{name}' is a PALETTE COLOR DICOM, which medvq does not read; convert it to RGB first.")


class DicomSeriesReader(PydicomReader):
    """MONAI's ``PydicomReader`` for single DICOM files and series folders, as medvq reads them.

    Changes to ``PydicomReader`` (MONAI 1.6):

    1. a series is stacked in the order of its slices' positions along the slice normal (ImagePositionPatient
       projected on the cross product of ImageOrientationPatient's row and column directions; MONAI sorts by
       InstanceNumber, which scanners do not always number along the axis), by InstanceNumber when a slice lacks
       them; two slices at one position raise ``ValueError``;
    2. a folder's ``.dcm`` files must belong to one series (``ValueError`` otherwise);
    3. colour images (SamplesPerPixel > 1) are read channel-last, so ``EnsureChannelFirst`` gives ``(3, H, W)``;
    4. the metadata records ``dicom_modality``, ``rescale_slope``, ``rescale_intercept`` and ``rescale_tags``
       (whether both tags are present), and a CT (Modality "CT") without both tags warns (below);
    5. a 2-D image without ImagePositionPatient / ImageOrientationPatient (ultrasound, secondary capture) gets
       the identity affine without MONAI's warning (its pixel axes are all there is).

    The rescale itself is MONAI's: ``PydicomReader`` multiplies stored values by RescaleSlope and adds
    RescaleIntercept when either tag is present (a missing one counts as slope 1 / intercept 0). A CT without both
    tags is read as stored and taken as Hounsfield units, with a ``UserWarning`` naming the file (Python shows it
    once per file and process): a scanner that stored HU + 1024 without the tags shifts every value by 1024.

    Arrays are (rows, columns[, slices]) (``swap_ij=False``), the layout of pydicom's ``pixel_array``; the affine
    follows (RAS, as ``NibabelReader``'s, with ``affine_lps_to_ras``).

    Args:
        affine_lps_to_ras: convert the DICOM (LPS) affine to RAS; default True, as MONAI.

    Raises:
        ValueError (at read): multi-frame or PALETTE COLOR DICOMs, a folder with several series or with slices
            at one position.
    """

    def __init__(self, affine_lps_to_ras: bool = True) -> None:
        super().__init__(affine_lps_to_ras=affine_lps_to_ras, swap_ij=False, fname_regex=_DICOM_NAME)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Read one file or series folder (see ``PydicomReader.read``), checking what medvq does not read."""
        names = ensure_tuple(data)
        for name in names:
            if Path(name).is_dir() and not any(str(p.name).lower().endswith(DICOM_SUFFIXES) for p in Path(name).iterdir()):
                raise ValueError(f"DICOM folder '{name}' holds no .dcm file.")
        img = super().read(data, **kwargs)
        for name, item in zip(names, [img] if len(names) == 1 else img):
            datasets = item if isinstance(item, list) else [item]
            series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
            if len(series) > 1:  # change 2
                raise ValueError(
                    f"DICOM folder '{name}' holds {len(series)} series: put each series in its own folder."
                )
            for ds in datasets:
                _check_dicom(ds, getattr(ds, "filename", name))
        return img

    def _combine_dicom_series(self, data: Any, filenames: Sequence[Any]) -> Any:
        datasets = list(data)
        positions = [slice_position(ds) for ds in datasets]
        if all(p is not None for p in positions):  # change 1: order along the slice normal
            if len({round(p, 3) for p in positions}) < len(positions):
                folder = Path(str(filenames[0])).parent
                raise ValueError(f"DICOM series '{folder}': two or more slices share one ImagePositionPatient.")
            order = sorted(range(len(datasets)), key=lambda i: positions[i])
            for rank, i in enumerate(order):
                datasets[i].InstanceNumber = rank + 1  # in-memory only: MONAI stacks in InstanceNumber order
        return super()._combine_dicom_series(datasets, filenames)

    def _get_affine(self, metadata: dict, lps_to_ras: bool = True) -> np.ndarray:
        if not ("00200037" in metadata and "00200032" in metadata) and "lastImagePositionPatient" not in metadata:
            return np.eye(4)  # change 5: no patient geometry (ultrasound, secondary capture): pixel axes, no warning
        return super()._get_affine(metadata, lps_to_ras)

    def _get_meta_dict(self, img: Any) -> dict:
        meta = super()._get_meta_dict(img)
        meta |= {  # change 4
            "dicom_modality": str(img.get("Modality", "")),
            "rescale_slope": float(img.get("RescaleSlope", 1.0) or 1.0),
            "rescale_intercept": float(img.get("RescaleIntercept", 0.0) or 0.0),
            "rescale_tags": "RescaleSlope" in img and "RescaleIntercept" in img,
        }
        if meta["dicom_modality"].upper() == "CT" and not meta["rescale_tags"]:
            warnings.warn(
                f"CT DICOM '{getattr(img, 'filename', '?')}' lacks RescaleSlope (0028,1053) and/or RescaleIntercept "
                "(0028,1052): its stored values are read as Hounsfield units (slope 1, intercept 0). If the scanner "
                "stored HU + 1024, every value is 1024 too high: add the tags to the files.",
                stacklevel=2,
            )
        return meta

    def get_data(self, data: Any) -> tuple[np.ndarray, dict]:
        first = data
        while isinstance(first, list):
            first = first[0]
        colour = int(first.get("SamplesPerPixel", 1) or 1) > 1
        channel_dim = self.channel_dim
        if colour:  # change 3: (rows, columns, 3) is channel-last
            self.channel_dim = -1
        try:
            array, meta = super().get_data(data)
        finally:
            self.channel_dim = channel_dim
        if colour:
            meta[MetaKeys.SPATIAL_SHAPE] = tuple(meta[MetaKeys.SPATIAL_SHAPE])[:-1]
        return array, meta


class MedicalImageReader(ImageReader):
    """A MONAI ``ImageReader`` that reads PNG / JPEG, DICOM (files and series folders) and NIfTI, chosen by type.

    PNG / JPEG: ``PILReader(reverse_indexing=False)``, ``(H, W)`` grayscale (8- or 16-bit) or ``(H, W, 3)`` RGB
    (palette and alpha images become RGB). DICOM: :class:`DicomSeriesReader`. NIfTI: ``NibabelReader`` (scaling
    slope / intercept of the header applied by nibabel); a file with more than 3 dimensions (other than trailing
    dimensions of size 1) raises ``ValueError``: MONAI would read its 4th axis (time, or stacked modalities) as
    channels. A fresh reader is made per file, so one instance serves threads and workers.

    Example:
        >>> from monai.transforms import LoadImage
        >>> LoadImage(image_only=True, ensure_channel_first=True)("ct.dcm", reader=MedicalImageReader())  # doctest: +SKIP
    """

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether every name is a folder or ends in one of :data:`IMAGE_SUFFIXES`."""
        names = ensure_tuple(filename)
        return all(Path(n).is_dir() or str(n).lower().endswith(IMAGE_SUFFIXES) for n in names)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> tuple[ImageReader, Any]:
        """Read one file or DICOM series folder; returns ``(reader, image object)`` for :meth:`get_data`."""
        names = ensure_tuple(data)
        if len(names) != 1:
            raise ValueError(f"MedicalImageReader reads one file or DICOM folder at a time, got {len(names)}.")
        name = names[0]
        kind = image_kind(name)
        reader: ImageReader
        if kind == "dicom":
            reader = DicomSeriesReader()
        elif kind == "nifti":
            reader = NibabelReader()
        else:
            reader = PILReader(converter=_gray_or_rgb, reverse_indexing=False)
        obj = reader.read(name, **kwargs)
        if kind == "nifti":
            shape = tuple(obj.shape)
            if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
                raise ValueError(
                    f"'{name}' is a {len(shape)}-D NIfTI of shape {shape}: medvq reads one 2-D or 3-D image per "
                    "file (MONAI would take its 4th axis as channels); split it into 3-D files, e.g. with "
                    "nibabel.funcs.four_to_three, and list those."
                )
        return reader, obj

    def get_data(self, img: tuple[ImageReader, Any]) -> tuple[np.ndarray, dict]:
        """Array and metadata of an image read by :meth:`read`."""
        reader, obj = img
        array, meta = reader.get_data(obj)
        if isinstance(reader, NibabelReader) and array.ndim > 3:  # trailing size-1 axes: a 3-D volume
            array = array.reshape(array.shape[:3])
            meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(array.shape)
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")
        return array, meta


class LoadMedicalImaged(LoadImaged):
    """``LoadImaged`` with :class:`MedicalImageReader`: channel-first float32 MetaTensors, readers' own errors.

    ``LoadImaged(reader=...)`` catches a reader's exception and raises "cannot find a suitable reader"; passing the
    reader at call time, as here, lets a broken file's own error through.

    Args:
        keys: keys of the paths (files or DICOM series folders) to load.
        allow_missing_keys: skip absent keys instead of raising KeyError; default False.
    """

    def __init__(self, keys: Any, allow_missing_keys: bool = False) -> None:
        self.reader = MedicalImageReader()
        super().__init__(
            keys,
            reader=self.reader,
            dtype=np.float32,
            image_only=True,
            ensure_channel_first=True,
            allow_missing_keys=allow_missing_keys,
        )

    def __call__(self, data: Any, reader: ImageReader | None = None) -> Any:
        return super().__call__(data, reader=reader or self.reader)

