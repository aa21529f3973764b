"""A small real CT / MR dataset built offline from the images that ship inside installed packages.

:func:`make_example_dataset` writes a folder that :func:`medvq.data.build_image_datalist` reads, one class per
modality folder (``ct/``, ``mr/``; labels 0 and 1), for quickstarts, tests and codebook studies that need real
medical images but no download. Nothing is redistributed by medvq: the files are made on your machine from test
data of pydicom, nibabel and matplotlib (all hard dependencies of medvq).

Sources (decoded with pydicom's own decoders and Pillow; a source that is missing or does not decode is left out
with a warning and the dataset is built from the others):

- CT (pydicom ``data/test_files``): ``CT_small.dcm`` (axial slice through a vertebra, 128 x 128, NEMA WG04 sample
  CT1 downsized), ``693_J2KI.dcm`` (head CT, CQ500, 512 x 512, lossy JPEG 2000), ``J2K_pixelrep_mismatch.dcm``
  (head CT at the skull base, tilted gantry, 512 x 512, JPEG 2000): three real axial slices, in Hounsfield units.
- MR: pydicom's ``MR_small.dcm`` (64 x 64, NEMA WG04 sample MR1 downsized) and ``examples_overlay.dcm`` (axial
  abdominal MR, 300 x 484); matplotlib's ``s1045.ima.gz`` (sagittal head MR, 256 x 256, 16-bit raw); nibabel's
  ``tests/data/anatomical.nii`` (T1 brain volume, 33 x 41 x 25, 2 mm) and ``example4d.nii.gz`` (EPI fMRI, 128 x 96
  x 24, two time points, split into two 3-D volumes).

``spatial_dims=2`` (default): 2-D images, each its own file: the real 2-D slices and, from each MR volume,
``slices_per_volume`` evenly spaced axial slices with foreground; then ``num_variants`` seeded augmentations per
class (default 100), drawn in turn from the class's real images. ``image_format="dicom"`` (default) writes
single-frame DICOMs in real units (CT: stored HU + 1024 with RescaleSlope 1 / RescaleIntercept -1024; MR: the
source's positive values), each its own series, PatientID ``medvq-<source>`` (so ``group_by="patient_id"`` keeps a
source and its variants together); ``"png"`` writes 8-bit grayscale PNGs (CT windowed by
:data:`medvq.transforms.CT_WINDOW`, MR scaled from 0 to its 99.5th percentile).

``spatial_dims=3``: volumes. MR: ``anatomical`` as a DICOM series folder (``mr/anatomical/``, one single-frame MR
file per axial slice, one SeriesInstanceUID, ImagePositionPatient / ImageOrientationPatient / PixelSpacing /
SliceThickness from the NIfTI affine), the two ``example4d`` volumes as NIfTI; CT: no CT volume ships with these
packages, so each real CT slice becomes a **pseudo-volume** of 15 slices, 5 mm apart (the slices' own thickness),
the real slice in the middle and copies of it shrunk (up to 20 %) and turned (up to 3 degrees) towards the ends:
real in-plane texture and HU, invented through-plane anatomy. ``CT_small`` is written as a DICOM CT series folder
(``ct/CT_small/``), the two head CTs as NIfTI; then ``num_variants`` augmented NIfTI volumes per class (default 6).

Augmentations (seeded: variant ``i`` of class ``c`` depends only on ``(seed, c, i)``; the parameters of each are in
``provenance.json``): rotation (2D: +-10 degrees; 3D: +-8 about the S axis, +-3 about the others), zoom 0.9-1.1
(3D: 0.92-1.08), shift up to 6 % (3D: 5 %) of the extent, a left-right mirror half of the time (2D: the columns),
linear interpolation (scipy); intensities: CT ``HU' = (HU + 1024) * c - 1024``, ``c`` in 0.98-1.02 (a
calibration-like change of +-20 HU at water, air stays -1024), MR ``v' = s * m * (v / m) ** gamma`` with ``gamma``
in 0.8-1.25, ``s`` in 0.9-1.1 and ``m`` the image's 99.5th percentile.

Units and clean-up: CT values are clipped to [-1024, 3071] HU (the padding outside the scanner's field of view, -2000
or below, becomes air), MR values below 0 are set to 0; images larger than ``max_size`` (default 128) along their
longest axis are downsized (anti-aliased; pixel spacing and position updated). Volumes are stored RAS (nibabel's
closest canonical orientation), CT as int16 HU, MR as uint16.

The folder also holds ``README.txt`` (what was built, from what, how to read it), ``provenance.json`` (the
manifest of parameters and source checksums, every item with its source, kind and augmentation parameters, package
versions and licences), ``examples_datalist.json`` (a MONAI Decathlon-style datalist: ``label`` 0 (ct) or 1 (mr),
names in its ``labels``, and ``patient_id`` ``medvq-<source>``, for ``build_image_datalist(datalist=...,
group_by="patient_id")``, which keeps a source and its variants on one side of the split) and ``licenses/`` (the
licence files of the packages the images come from: pydicom MIT, nibabel MIT, matplotlib's licence agreement).

Determinism and idempotency: the same arguments and source files give the same bytes (on one machine: numpy /
scipy / scikit-image versions may change interpolation in the last bits). The dataset is built in a temporary
sibling folder and moved into place when complete; running again into a folder whose ``provenance.json`` has the
same manifest does nothing, a different manifest (or a non-empty folder that is not an example dataset) is an
error. Run ``python -m medvq.data.examples OUT_DIR [--spatial_dims 2|3] [--seed S] [--num_variants N]``.

Limitations: three CT slices only (the CT class is mostly augmentations, and its volumes are pseudo-3D); MR images
differ in contrast, size and anatomy (brain, abdomen, an unnamed MR_small); the images are test data of imaging
libraries, fit for smoke tests, tutorials and codebook-usage studies, not for clinical claims.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy import ndimage
from skimage.transform import resize

from medvq.transforms.modality import CT_WINDOW

__all__ = ["EXAMPLE_CLASSES", "EXAMPLE_IMAGE_FORMATS", "main", "make_example_dataset"]

logger = logging.getLogger(__name__)

EXAMPLE_CLASSES: tuple[str, ...] = ("ct", "mr")
"""Class folders, in label order."""
EXAMPLE_IMAGE_FORMATS: tuple[str, ...] = ("dicom", "png")
"""2-D file formats of :func:`make_example_dataset`."""
DEFAULT_NUM_VARIANTS: dict[int, int] = {2: 100, 3: 6}
"""Augmented variants per class by ``spatial_dims``."""
CT_RANGE: tuple[float, float] = (-1024.0, 3071.0)
"""Hounsfield units kept (12-bit CT): air to dense bone and metal."""

_GENERATOR = "medvq.data.examples"
_FORMAT_VERSION = 1
_PROVENANCE = "provenance.json"
_README = "README.txt"
_DATALIST = "examples_datalist.json"
_LICENSES = "licenses"
_PSEUDO_DEPTH = 15  # slices of a CT pseudo-volume; the real slice is the middle one
_PSEUDO_SHRINK = 0.2  # the end slices are this much smaller than the real one
_PSEUDO_TURN_DEG = 3.0  # and turned by this much
_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS (its own inverse)
_DICOM_KEEP = (  # acquisition attributes copied from a DICOM source to the files made from it
    "StudyDate", "StudyTime", "StudyDescription", "BodyPartExamined", "PatientSex", "PatientAge", "PatientPosition",
    "Manufacturer", "ManufacturerModelName", "KVP", "ConvolutionKernel", "ContrastBolusAgent", "ScanningSequence",
    "SequenceVariant", "MRAcquisitionType", "RepetitionTime", "EchoTime", "ImagedNucleus", "MagneticFieldStrength",
    "FlipAngle", "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
)
_LICENCE_NAMES = {"pydicom": "MIT", "nibabel": "MIT", "matplotlib": "Matplotlib License Agreement"}
_LICENCE_NOTES = {
    "pydicom": "MIT License (pydicom's LICENSE, copied to licenses/); its data/test_files/README.txt says of the "
    "test images: 'I believe there is no restriction on using any of these files in this manner'.",
    "nibabel": "MIT License (nibabel's COPYING, copied to licenses/), which covers the package's data files.",
    "matplotlib": "Matplotlib License Agreement (PSF-based; matplotlib's LICENSE, copied to licenses/); matplotlib "
    "ships the image as sample data for its MRI demo and does not document its origin.",
}


@dataclass(frozen=True)
class _Spec:
    """One source file: where it ships and what it is."""

    name: str
    modality: str
    package: str
    relpath: str
    description: str
    dims: tuple[int, ...] = (2, 3)  # the datasets it is used in


_SPECS: tuple[_Spec, ...] = (
    _Spec("CT_small", "ct", "pydicom", "data/test_files/CT_small.dcm",
          "CT, axial slice through a vertebra (contrast-enhanced), 128 x 128, 0.66 mm pixels; NEMA WG04 sample "
          "CT1 downsized by pydicom"),
    _Spec("693_J2KI", "ct", "pydicom", "data/test_files/693_J2KI.dcm",
          "head CT (CQ500 dataset), axial slice, 512 x 512, 0.48 mm pixels, lossy JPEG 2000"),
    _Spec("J2K_pixelrep_mismatch", "ct", "pydicom", "data/test_files/J2K_pixelrep_mismatch.dcm",
          "head CT at the skull base, axial slice (tilted gantry), 512 x 512, 0.43 mm pixels, JPEG 2000"),
    _Spec("MR_small", "mr", "pydicom", "data/test_files/MR_small.dcm",
          "MR spin-echo slice, 64 x 64, 0.31 mm pixels; NEMA WG04 sample MR1 downsized by pydicom", dims=(2,)),
    _Spec("examples_overlay", "mr", "pydicom", "data/test_files/examples_overlay.dcm",
          "abdominal MR (liver), axial slice, 300 x 484, 0.72 mm pixels (its overlay plane is not used)", dims=(2,)),
    _Spec("s1045", "mr", "matplotlib", "mpl-data/sample_data/s1045.ima.gz",
          "head MR, sagittal slice, 256 x 256, 16-bit raw (no geometry: pixel spacing unknown)", dims=(2,)),
    _Spec("anatomical", "mr", "nibabel", "tests/data/anatomical.nii",
          "T1-weighted brain MR volume, 33 x 41 x 25, 2 mm voxels"),
    _Spec("example4d", "mr", "nibabel", "tests/data/example4d.nii.gz",
          "EPI fMRI time series, 128 x 96 x 24 voxels of 2 x 2 x 2.2 mm, 2 time points (split into two volumes)"),
)


@dataclass
class _Plane:
    """A 2-D image in real units (HU or MR values) with what is known of its geometry."""

    name: str  # file stem
    source: str  # _Spec.name
    modality: str
    values: np.ndarray  # (rows, columns) float64
    spacing: tuple[float, float]  # (between rows, between columns) in mm; (1, 1) when unknown
    position: np.ndarray | None = None  # ImagePositionPatient (LPS, mm) of pixel (0, 0)
    orientation: np.ndarray | None = None  # ImageOrientationPatient: row direction, column direction (LPS)
    thickness: float | None = None
    template: Any = None  # the DICOM source's dataset, for acquisition attributes
    note: str = ""


@dataclass
class _Volume:
    """A 3-D image in real units with its RAS affine."""

    name: str
    source: str
    modality: str
    data: np.ndarray  # float64, axes as the affine says
    affine: np.ndarray  # (4, 4) RAS
    template: Any = None
    note: str = ""
    kind: str = "real"


@dataclass
class _Built:
    """What was written: provenance items, in order."""

    items: list[dict] = field(default_factory=list)

    def add(self, path: str, plane_or_volume: _Plane | _Volume, kind: str, augmentation: dict | None, fmt: str,
            shape: Sequence[int], spacing: Sequence[float]) -> None:
        self.items.append({
            "image": path,
            "label": plane_or_volume.modality,
            "source": plane_or_volume.source,
            "kind": kind,
            "format": fmt,
            "shape": [int(s) for s in shape],
            "spacing_mm": [round(float(s), 4) for s in spacing],
            "augmentation": augmentation,
        })


# ------------------------------------------------------------------------------------------------------ arguments
def _check_int(value: Any, name: str, low: int, none_ok: bool = False) -> int | None:
    if value is None and none_ok:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        extra = " or None" if none_ok else ""
        raise ValueError(f"{name} must be an integer >= {low}{extra}, got {value!r}.")
    return int(value)


# -------------------------------------------------------------------------------------------------------- sources
def _source_path(spec: _Spec) -> Path | None:
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        return None
    path = Path(found.origin).parent / spec.relpath
    return path if path.is_file() else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plane_from_dicom(spec: _Spec, path: Path) -> _Plane:
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom notes the J2K files' bit-depth quirks it corrects
        stored = ds.pixel_array.astype(np.float64)
    values = stored * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    spacing = tuple(float(v) for v in ds.get("PixelSpacing", (1.0, 1.0)))
    position = np.asarray(ds.ImagePositionPatient, float) if "ImagePositionPatient" in ds else None
    orientation = np.asarray(ds.ImageOrientationPatient, float) if "ImageOrientationPatient" in ds else None
    thickness = float(ds.SliceThickness) if ds.get("SliceThickness") not in (None, "") else None
    return _Plane(spec.name, spec.name, spec.modality, values, spacing, position, orientation, thickness, ds)


def _plane_from_raw(spec: _Spec, path: Path) -> _Plane:
    with gzip.open(path, "rb") as f:
        values = np.frombuffer(f.read(), "<u2").reshape(256, 256).astype(np.float64)
    return _Plane(spec.name, spec.name, spec.modality, values, (1.0, 1.0), note="pixel spacing unknown")


def _load_sources(spatial_dims: int) -> tuple[dict[str, Any], list[dict], list[str]]:
    """Decoded sources of the ``spatial_dims`` dataset by name, their provenance records, and the reasons some were
    left out."""
    loaded: dict[str, Any] = {}
    records: list[dict] = []
    missing: list[str] = []
    for spec in (s for s in _SPECS if spatial_dims in s.dims):
        path = _source_path(spec)
        if path is None:
            missing.append(f"{spec.package}/{spec.relpath}: not installed")
            continue
        try:
            if spec.package == "pydicom":
                loaded[spec.name] = _plane_from_dicom(spec, path)
            elif spec.package == "matplotlib":
                loaded[spec.name] = _plane_from_raw(spec, path)
            else:
                loaded[spec.name] = nib.load(path)
                np.asanyarray(loaded[spec.name].dataobj)  # decode now: a broken file is left out here
        except Exception as e:  # noqa: BLE001  decoders raise many types; the warning names it
            loaded.pop(spec.name, None)
            missing.append(f"{spec.package}/{spec.relpath}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
            continue
        records.append({
            "name": spec.name,
            "modality": spec.modality,
            "package": spec.package,
            "package_version": importlib.metadata.version(spec.package),
            "file": f"{spec.package}/{spec.relpath}",
            "sha256": _sha256(path),
            "description": spec.description,
            "licence": _LICENCE_NOTES[spec.package],
        })
    for reason in missing:
        logger.warning("examples: source left out: %s", reason)
    return loaded, records, missing


# ------------------------------------------------------------------------------------------------------- geometry
def _reorient(data: np.ndarray, affine: np.ndarray, codes: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray]:
    """``data`` and ``affine`` with array axes along ``codes`` (nibabel orientation codes, e.g. ``("P","L","S")``)."""
    img = nib.Nifti1Image(data, affine)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt(codes))
    out = img.as_reoriented(ornt)
    return np.asarray(out.dataobj), out.affine


def _slice_geometry(affine: np.ndarray, k: float) -> dict:
    """DICOM geometry of slice ``k`` of a volume whose axes are (rows, columns, slices), from its RAS affine."""
    column_step, row_step, slice_step = (_LPS @ affine[:3, a] for a in range(3))  # LPS steps along each axis
    position = _LPS @ (affine @ np.array([0.0, 0.0, k, 1.0]))[:3]
    return {
        # ImageOrientationPatient: direction along a row (columns increasing), then down a column (rows increasing)
        "orientation": np.concatenate([row_step / np.linalg.norm(row_step), column_step / np.linalg.norm(column_step)]),
        "spacing": (float(np.linalg.norm(column_step)), float(np.linalg.norm(row_step))),
        "position": position,
        "thickness": float(np.linalg.norm(slice_step)),
    }


def _plane_affine(plane: _Plane, slice_step: float, first: float) -> np.ndarray:
    """RAS affine of a stack of ``plane``-like slices ``slice_step`` mm apart along the plane's normal, slice 0 at
    ``first`` slice steps from the plane (array axes: rows, columns, slices)."""
    row_dir, column_dir = plane.orientation[:3], plane.orientation[3:]
    normal = np.cross(row_dir, column_dir)
    lps = np.eye(4)
    lps[:3, 0] = column_dir * plane.spacing[0]
    lps[:3, 1] = row_dir * plane.spacing[1]
    lps[:3, 2] = normal * slice_step
    lps[:3, 3] = plane.position + first * slice_step * normal
    ras = lps.copy()
    ras[:3] = _LPS @ lps[:3]
    return ras


def _shrink(values: np.ndarray, max_size: int | None, axes: int) -> tuple[np.ndarray, np.ndarray]:
    """Downsize the first ``axes`` axes so the longest is at most ``max_size`` (one factor for all, anti-aliased);
    returns the array and the per-axis factors (1 when kept)."""
    shape = values.shape[:axes]
    if max_size is None or max(shape) <= max_size:
        return values, np.ones(axes)
    factor = max(shape) / max_size
    new = tuple(max(1, round(s / factor)) for s in shape) + values.shape[axes:]
    out = resize(values, new, order=1, anti_aliasing=True, preserve_range=True, mode="edge")
    return out, np.array(shape, float) / np.array(new[:axes], float)


def _shrink_plane(plane: _Plane, max_size: int | None) -> _Plane:
    values, factors = _shrink(plane.values, max_size, 2)
    if values is plane.values:
        return plane
    position = plane.position
    if position is not None and plane.orientation is not None:  # pixel (0, 0)'s centre moves by (f - 1) / 2 pixels
        row_dir, column_dir = plane.orientation[:3], plane.orientation[3:]
        position = position + column_dir * plane.spacing[0] * (factors[0] - 1) / 2
        position = position + row_dir * plane.spacing[1] * (factors[1] - 1) / 2
    spacing = (plane.spacing[0] * factors[0], plane.spacing[1] * factors[1])
    return _Plane(plane.name, plane.source, plane.modality, values, spacing, position, plane.orientation,
                  plane.thickness, plane.template, plane.note)


def _shrink_volume(volume: _Volume, max_size: int | None) -> _Volume:
    data, factors = _shrink(volume.data, max_size, 3)
    if data is volume.data:
        return volume
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factors)
    scale[:3, 3] = (factors - 1) / 2
    return _Volume(volume.name, volume.source, volume.modality, data, volume.affine @ scale, volume.template,
                   volume.note, volume.kind)


def _clean(values: np.ndarray, modality: str) -> np.ndarray:
    """Values in realistic units: CT clipped to :data:`CT_RANGE`, MR to >= 0."""
    return np.clip(values, *CT_RANGE) if modality == "ct" else np.maximum(values, 0.0)


def _fill(modality: str) -> float:
    return CT_RANGE[0] if modality == "ct" else 0.0


def _rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation of array axes: 2-D one angle; 3-D angles about axes 0, 1 and 2 (applied in that order)."""
    if len(angles_deg) == 1:
        a = math.radians(angles_deg[0])
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    rotation = np.eye(3)
    for axis, angle in enumerate(angles_deg):
        a = math.radians(angle)
        i, j = [d for d in range(3) if d != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
        rotation = r @ rotation
    return rotation


def _warp(values: np.ndarray, spacing: Sequence[float], matrix_mm: np.ndarray, shift_mm: Sequence[float],
          fill: float) -> np.ndarray:
    """Resample ``values`` (same grid) moved by ``x -> matrix_mm @ x + shift_mm`` about its centre, in mm."""
    s = np.diag(np.asarray(spacing, float))
    s_inv = np.linalg.inv(s)
    m_inv = np.linalg.inv(matrix_mm)
    matrix = s_inv @ m_inv @ s  # output voxel -> input voxel
    centre = (np.array(values.shape, float) - 1) / 2
    offset = centre - matrix @ centre - s_inv @ m_inv @ np.asarray(shift_mm, float)
    return ndimage.affine_transform(values, matrix, offset=offset, order=1, mode="constant", cval=fill)


# --------------------------------------------------------------------------------------------------- augmentation
def _draw(rng: np.random.Generator, modality: str, dims: int) -> dict:
    """Seeded augmentation parameters (rounded: provenance.json reproduces them exactly)."""
    if dims == 2:
        rotate = [rng.uniform(-10, 10)]
        zoom, shift = rng.uniform(0.9, 1.1), rng.uniform(-0.06, 0.06, 2)
    else:
        rotate = [rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-8, 8)]
        zoom, shift = rng.uniform(0.92, 1.08), rng.uniform(-0.05, 0.05, 3)
    params: dict[str, Any] = {
        "rotate_deg": [round(float(a), 3) for a in rotate],
        "zoom": round(float(zoom), 4),
        "shift_fraction": [round(float(v), 4) for v in shift],
        "mirror": bool(rng.random() < 0.5),
    }
    if modality == "ct":
        params["hu_scale"] = round(float(rng.uniform(0.98, 1.02)), 4)
    else:
        params["gamma"] = round(float(rng.uniform(0.8, 1.25)), 4)
        params["scale"] = round(float(rng.uniform(0.9, 1.1)), 4)
    return params


def _augment(values: np.ndarray, spacing: Sequence[float], modality: str, params: dict, mirror_axis: int) -> np.ndarray:
    matrix = params["zoom"] * _rotation(params["rotate_deg"])
    shift = np.asarray(params["shift_fraction"]) * np.array(values.shape) * np.asarray(spacing)
    out = _warp(values, spacing, matrix, shift, _fill(modality))
    if params["mirror"]:
        out = np.flip(out, mirror_axis)
    if modality == "ct":
        out = (out - CT_RANGE[0]) * params["hu_scale"] + CT_RANGE[0]
    else:
        top = float(np.percentile(out, 99.5)) or 1.0
        out = params["scale"] * top * np.power(np.maximum(out, 0.0) / top, params["gamma"])
    return _clean(out, modality)


def _rng(seed: int, label: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, label, index])


# -------------------------------------------------------------------------------------------------------- writers
def _uid(*parts: Any) -> str:
    return generate_uid(entropy_srcs=[_GENERATOR, *(str(p) for p in parts)])


def _dicom(values: np.ndarray, plane: _Plane, geometry: dict | None, *, key: str, series: str, instance: int,
           description: str) -> Dataset:
    """A single-frame CT or MR DICOM dataset of ``values`` (real units). UIDs are derived from ``key`` (series and
    instance: one per series, the seed in it for a variant) and from the source (study, frame of reference)."""
    ct = plane.modality == "ct"
    sop_class = CTImageStorage if ct else MRImageStorage
    sop_instance = _uid("instance", key, instance)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    if plane.template is not None:
        for keyword in _DICOM_KEEP:
            if keyword in plane.template and plane.template.data_element(keyword).value not in (None, ""):
                setattr(ds, keyword, plane.template.data_element(keyword).value)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
    ds.Modality = "CT" if ct else "MR"
    ds.PatientName = f"medvq^{plane.source}"
    ds.PatientID = f"medvq-{plane.source}"
    ds.StudyInstanceUID = _uid("study", plane.source)
    ds.SeriesInstanceUID = _uid("series", key)
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, instance
    ds.SeriesDescription = f"medvq example: {series}"[:64]
    ds.DerivationDescription = description[:1024]
    ds.BurnedInAnnotation = "NO"
    if geometry is not None:
        ds.FrameOfReferenceUID = _uid("frame", plane.source)
        ds.ImagePositionPatient = [round(float(v), 4) for v in geometry["position"]]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in geometry["orientation"]]
        ds.PixelSpacing = [round(float(v), 6) for v in geometry["spacing"]]
        if geometry.get("thickness"):
            ds.SliceThickness = round(float(geometry["thickness"]), 4)
        if geometry.get("between"):
            ds.SpacingBetweenSlices = round(float(geometry["between"]), 4)
        normal = np.cross(geometry["orientation"][:3], geometry["orientation"][3:])
        ds.SliceLocation = round(float(np.dot(normal, geometry["position"])), 4)
    if ct:  # stored HU + 1024, the RescaleIntercept gives HU back
        stored = np.round(_clean(values, "ct") - CT_RANGE[0]).astype(np.uint16)
        ds.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = int(CT_RANGE[0]), 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
    else:
        stored = np.round(np.clip(values, 0, 65535)).astype(np.uint16)
        ds.set_pixel_data(stored, "MONOCHROME2", 16, generate_instance_uid=False)
        low, high = (float(v) for v in np.percentile(stored, (0.5, 99.5)))
        ds.WindowCenter, ds.WindowWidth = round((low + high) / 2, 1), round(max(high - low, 1.0), 1)
    return ds


def _write_dicom(path: Path, ds: Dataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _write_png(path: Path, values: np.ndarray, modality: str) -> None:
    if modality == "ct":
        low, high = CT_WINDOW
    else:
        low, high = 0.0, float(np.percentile(values, 99.5)) or 1.0
    pixels = np.round(np.clip((values - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)


def _write_nifti(path: Path, volume: _Volume, data: np.ndarray, description: str) -> tuple[np.ndarray, np.ndarray]:
    """Write RAS (closest canonical) int16 HU / uint16 MR; returns the written array's shape and voxel sizes."""
    data, affine = _reorient(data, volume.affine, ("R", "A", "S"))
    stored = np.round(data).astype(np.int16) if volume.modality == "ct" else np.round(np.clip(data, 0, 65535)).astype(np.uint16)
    img = nib.Nifti1Image(stored, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = description[:79].encode("ascii", "replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return np.array(stored.shape), np.sqrt((affine[:3, :3] ** 2).sum(0))


def _write_series(folder: Path, volume: _Volume, description: str) -> tuple[np.ndarray, np.ndarray]:
    """One single-frame DICOM per axial slice (array reoriented to P, L, S: rows towards posterior, columns
    towards the patient's left, as a radiologist views an axial slice)."""
    data, affine = _reorient(volume.data, volume.affine, ("P", "L", "S"))
    plane = _Plane(volume.name, volume.source, volume.modality, data[:, :, 0], (1.0, 1.0), template=volume.template)
    for k in range(data.shape[2]):
        geometry = _slice_geometry(affine, k)
        geometry["between"] = geometry["thickness"]
        ds = _dicom(data[:, :, k], plane, geometry, key=f"3d/{volume.name}", series=volume.name, instance=k + 1,
                    description=f"{description}; slice {k + 1} of {data.shape[2]}")
        _write_dicom(folder / f"{volume.name}_{k:03d}.dcm", ds)
    return np.array(data.shape), np.sqrt((affine[:3, :3] ** 2).sum(0))


# ------------------------------------------------------------------------------------------------------ 2-D build
def _volumes(sources: dict[str, Any]) -> list[_Volume]:
    """The real MR volumes: anatomical, example4d split into its two time points (MR values clipped at 0)."""
    volumes = []
    if "anatomical" in sources:
        img = sources["anatomical"]
        data = _clean(np.asanyarray(img.dataobj).astype(np.float64), "mr")
        volumes.append(_Volume("anatomical", "anatomical", "mr", data, img.affine))
    if "example4d" in sources:
        img = sources["example4d"]
        data = np.asanyarray(img.dataobj).astype(np.float64)
        for t in range(data.shape[3]):
            volumes.append(_Volume(f"example4d_t{t}", "example4d", "mr", _clean(data[..., t], "mr"), img.affine,
                                   note=f"time point {t} of {data.shape[3]}"))
    return volumes


def _pick_slices(data: np.ndarray, count: int, phase: float) -> list[int]:
    """``count`` evenly spaced slice indices (last axis) among the slices with at least 25 % foreground."""
    level = 0.1 * float(np.percentile(data, 99.5))
    fraction = (data > level).reshape(-1, data.shape[-1]).mean(0)
    candidates = np.flatnonzero(fraction >= 0.25)
    if candidates.size == 0:
        candidates = np.arange(data.shape[-1])
    count = min(count, candidates.size)
    positions = (np.arange(count) + 0.25 + 0.5 * phase) / count * candidates.size
    return sorted({int(candidates[min(int(p), candidates.size - 1)]) for p in positions})


def _planes_2d(sources: dict[str, Any], slices_per_volume: int) -> list[_Plane]:
    planes = [sources[s.name] for s in _SPECS if isinstance(sources.get(s.name), _Plane)]
    for v, volume in enumerate(_volumes(sources)):
        data, affine = _reorient(volume.data, volume.affine, ("P", "L", "S"))
        for k in _pick_slices(data, slices_per_volume, phase=v % 2):
            geometry = _slice_geometry(affine, k)
            planes.append(_Plane(f"{volume.name}_z{k:02d}", volume.source, "mr", data[:, :, k], geometry["spacing"],
                                 geometry["position"], geometry["orientation"], geometry["thickness"],
                                 note=f"axial slice {k} of {volume.name}"))
    return planes


def _build_2d(root: Path, sources: dict[str, Any], seed: int, num_variants: int, image_format: str,
              max_size: int | None, slices_per_volume: int) -> _Built:
    built = _Built()
    suffix = ".dcm" if image_format == "dicom" else ".png"
    planes = [_shrink_plane(p, max_size) for p in _planes_2d(sources, slices_per_volume)]

    def write(plane: _Plane, values: np.ndarray, name: str, kind: str, params: dict | None) -> None:
        rel = f"{plane.modality}/{name}{suffix}"
        what = f"{plane.note + '; ' if plane.note else ''}{kind}" + (f" {json.dumps(params)}" if params else "")
        description = f"medvq example from {plane.source}: {what}"
        if image_format == "dicom":
            geometry = None
            if plane.position is not None and plane.orientation is not None:
                geometry = {"position": plane.position, "orientation": plane.orientation, "spacing": plane.spacing,
                            "thickness": plane.thickness}
            key = f"2d/{name}" + (f"/seed={seed}" if kind == "variant" else "")
            _write_dicom(root / rel, _dicom(values, plane, geometry, key=key, series=name, instance=1,
                                            description=description))
        else:
            _write_png(root / rel, values, plane.modality)
        built.add(rel, plane, kind, params, image_format, values.shape, plane.spacing)

    for label, modality in enumerate(EXAMPLE_CLASSES):
        own = [p for p in planes if p.modality == modality]
        if not own:
            raise RuntimeError(f"no {modality.upper()} source image could be read (see the warnings above).")
        for plane in own:
            write(plane, _clean(plane.values, modality), plane.name, "real", None)
        for i in range(num_variants):
            plane = own[i % len(own)]
            params = _draw(_rng(seed, label, i), modality, 2)
            values = _augment(plane.values, plane.spacing, modality, params, mirror_axis=1)
            write(plane, values, f"{plane.name}_v{i:03d}", "variant", params)
        logger.info("examples: %s: %d real and %d augmented 2-D images", modality, len(own), num_variants)
    return built


# ------------------------------------------------------------------------------------------------------ 3-D build
def _pseudo_volume(plane: _Plane) -> _Volume:
    """A CT pseudo-volume: the real slice in the middle, shrunk and turned copies towards the ends."""
    half = (_PSEUDO_DEPTH - 1) / 2
    step = plane.thickness or 5.0
    slices = []
    for k in range(_PSEUDO_DEPTH):
        u = (k - half) / half
        matrix = (1 - _PSEUDO_SHRINK * u * u) * _rotation([_PSEUDO_TURN_DEG * u])
        slices.append(_clean(_warp(plane.values, plane.spacing, matrix, (0.0, 0.0), _fill("ct")), "ct"))
    affine = _plane_affine(plane, step, -half)
    note = (f"pseudo-volume: real slice {plane.source} as slice {int(half) + 1} of {_PSEUDO_DEPTH}, {step:g} mm apart; "
            f"copies shrunk by up to {_PSEUDO_SHRINK:.0%} and turned by up to {_PSEUDO_TURN_DEG:g} degrees towards "
            "the ends")
    return _Volume(plane.name, plane.source, "ct", np.stack(slices, axis=2), affine, plane.template, note, "pseudo3d")


def _build_3d(root: Path, sources: dict[str, Any], seed: int, num_variants: int, max_size: int | None) -> _Built:
    built = _Built()
    ct_planes = [_shrink_plane(sources[s.name], max_size) for s in _SPECS
                 if s.modality == "ct" and isinstance(sources.get(s.name), _Plane)]
    by_class = {
        "ct": [_pseudo_volume(p) for p in ct_planes if p.position is not None and p.orientation is not None],
        "mr": [_shrink_volume(v, max_size) for v in _volumes(sources)],
    }
    series_of = {"ct": "CT_small", "mr": "anatomical"}  # written as a DICOM series folder; the others as NIfTI
    for label, modality in enumerate(EXAMPLE_CLASSES):
        own = by_class[modality]
        if not own:
            raise RuntimeError(f"no {modality.upper()} source volume could be read (see the warnings above).")
        for volume in own:
            what = volume.note or "real volume"
            description = f"medvq example from {volume.source}: {what}"
            if volume.name == series_of[modality]:
                rel = f"{modality}/{volume.name}"
                shape, spacing = _write_series(root / rel, volume, description)
                fmt = "dicom-series"
            else:
                rel = f"{modality}/{volume.name}.nii.gz"
                shape, spacing = _write_nifti(root / rel, volume, volume.data, description)
                fmt = "nifti"
            built.add(rel, volume, volume.kind, {"pseudo_volume": volume.note} if volume.kind == "pseudo3d" else None,
                      fmt, shape, spacing)
        for i in range(num_variants):
            volume = own[i % len(own)]
            params = _draw(_rng(seed, label, i), modality, 3)
            data, affine = _reorient(volume.data, volume.affine, ("R", "A", "S"))  # axis 0: left-right
            spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
            data = _augment(data, spacing, modality, params, mirror_axis=0)
            variant = _Volume(f"{volume.name}_v{i:03d}", volume.source, modality, data, affine, kind="variant")
            rel = f"{modality}/{variant.name}.nii.gz"
            shape, spacing = _write_nifti(root / rel, variant, data, f"medvq example: variant {i} of {volume.name}")
            built.add(rel, variant, "variant", params, "nifti", shape, spacing)
        logger.info("examples: %s: %d real and %d augmented volumes", modality, len(own), num_variants)
    return built


# ---------------------------------------------------------------------------------------------------- bookkeeping
def _readme(manifest: dict, records: list[dict], counts: dict, missing: list[str]) -> str:
    dims = manifest["spatial_dims"]
    lines = [
        f"medvq example dataset ({dims}D): real CT and MR images from installed Python packages",
        "=" * 78,
        "",
        f"Built by medvq.data.examples.make_example_dataset(spatial_dims={dims}, seed={manifest['seed']}, "
        f"num_variants={manifest['num_variants']}, image_format={manifest['image_format']!r}, "
        f"max_size={manifest['max_size']}" + (f", slices_per_volume={manifest['slices_per_volume']}" if dims == 2 else "")
        + ").",
        "Nothing here was downloaded: every image is made from a file that ships inside pydicom, nibabel or",
        "matplotlib. The medvq.data.examples module docstring describes every step.",
        "",
        "Layout: one folder per class (label = folder): "
        + ", ".join(f"{name}/ ({counts[name]['total']} {'images' if dims == 2 else 'volumes'}: "
                    f"{counts[name]['real']} real, {counts[name]['variant']} augmented)" for name in EXAMPLE_CLASSES),
        "",
    ]
    if dims == 2:
        lines += [
            "2-D images, one file each, " + ("single-frame DICOM in real units (CT: stored HU + 1024, "
            "RescaleIntercept -1024; MR: positive stored values), each its own series; PatientID medvq-<source>."
            if manifest["image_format"] == "dicom" else "8-bit grayscale PNG (CT windowed at [-1000, 1000] HU, MR "
            "from 0 to its 99.5th percentile)."),
            "<source>_vNNN files are seeded augmentations of <source> (rotation, zoom, shift, mirror, intensity).",
        ]
    else:
        lines += [
            "Volumes: NIfTI (RAS; CT int16 HU, MR uint16) and one DICOM series folder per class (ct/CT_small/,",
            "mr/anatomical/: one single-frame file per slice, one SeriesInstanceUID). The CT volumes are",
            "PSEUDO-3D: no CT volume ships with these packages, so each real CT slice is stacked with shrunk and",
            "turned copies of itself (real in-plane texture and HU, invented through-plane anatomy).",
            "<source>_vNNN.nii.gz files are seeded augmentations (rotation, zoom, shift, mirror, intensity).",
        ]
    lines += [
        "",
        "Read it with medvq:",
        f"  build_image_datalist('<this folder>', spatial_dims={dims}, group_by='file')",
        f"  build_image_datalist(datalist='<this folder>/{_DATALIST}', spatial_dims={dims}, group_by='patient_id')",
        "    (the datalist's patient_id is the source, so a source and its variants stay on one side of the split)",
        "Intensity: CT and MR are mixed, so scale per image (image_preprocessing(modality='mr'): percentiles);",
        "or use one class folder alone with its own modality (ct/ with modality='ct').",
        "",
        "Sources (package file, sha256, licence):",
    ]
    for r in records:
        lines += [f"- {r['name']} ({r['modality']}): {r['file']} ({r['package']} {r['package_version']})",
                  f"    {r['description']}", f"    sha256 {r['sha256']}", f"    licence: {r['licence']}"]
    if missing:
        lines += ["", "Left out (missing or not decodable here):"] + [f"- {m}" for m in missing]
    lines += [
        "",
        "Licences: the files are derived from test / sample data distributed with "
        + ", ".join(f"{p} ({_LICENCE_NAMES[p]})" for p in sorted({r["package"] for r in records}))
        + f"; their licence files are copied to {_LICENSES}/.",
        "The images are test data of imaging libraries: fit for tutorials, tests and codebook studies, not for",
        "clinical claims.",
        f"Every item, its source and its augmentation parameters are listed in {_PROVENANCE}.",
        "",
    ]
    return "\n".join(lines)


def _copy_licences(root: Path, packages: Sequence[str]) -> list[str]:
    """Copy each package's licence files (from its installed metadata) to ``root/licenses/``."""
    written = []
    for package in packages:
        for f in importlib.metadata.distribution(package).files or []:
            name = Path(str(f)).name
            if ".dist-info" in str(f) and name.upper().startswith(("LICENSE", "COPYING")):
                rel = f"{_LICENSES}/{package}-{name}.txt"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
                written.append(rel)
    return written


def _summary(root: Path, provenance: dict, created: bool, seconds: float) -> dict:
    return {
        "output_dir": str(root),
        "spatial_dims": provenance["manifest"]["spatial_dims"],
        "image_format": provenance["manifest"]["image_format"],
        "class_names": list(EXAMPLE_CLASSES),
        "counts": {name: c["total"] for name, c in provenance["counts"].items()},
        "real": {name: c["real"] for name, c in provenance["counts"].items()},
        "items": provenance["items"],
        "sources": [r["name"] for r in provenance["sources"]],
        "datalist": str(root / _DATALIST),
        "created": created,
        "seconds": round(seconds, 2),
    }


def _existing(root: Path, manifest: dict) -> dict | None:
    """The provenance of an identical dataset already in ``root``, None for an empty / new folder; raises for a
    folder holding something else."""
    if not root.exists():
        return None
    if not root.is_dir():
        raise ValueError(f"output_dir '{root}' exists and is not a folder.")
    if not any(root.iterdir()):
        return None
    path = root / _PROVENANCE
    try:
        provenance = json.loads(path.read_text(encoding="utf-8"))
        old = provenance["manifest"]
        if old.get("generator") != _GENERATOR:
            raise KeyError("generator")
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"output_dir '{root}' is not empty and holds no {_PROVENANCE} of {_GENERATOR}: pass an empty or new "
            "folder (nothing there was changed)."
        ) from None
    if old != manifest:
        keys = sorted(set(old) | set(manifest))
        diff = "; ".join(f"{k}: {old.get(k)!r} there, {manifest.get(k)!r} now" for k in keys
                         if old.get(k) != manifest.get(k) and k != "sources")
        if old.get("sources") != manifest.get("sources"):
            diff += ("; " if diff else "") + "the source files differ (another pydicom / nibabel / matplotlib version?)"
        raise ValueError(
            f"output_dir '{root}' holds an example dataset built with other settings ({diff}): pass another "
            "output_dir, or delete this one to rebuild it."
        )
    lost = [item["image"] for item in provenance["items"] if not (root / item["image"]).exists()]
    if lost:
        raise ValueError(
            f"output_dir '{root}' holds an incomplete example dataset: {len(lost)} of {len(provenance['items'])} "
            f"items are missing (first: '{lost[0]}'); delete the folder and run again."
        )
    return provenance


# ------------------------------------------------------------------------------------------------------------ API
def make_example_dataset(
    output_dir: str | os.PathLike,
    spatial_dims: int = 2,
    seed: int = 0,
    num_variants: int | None = None,
    image_format: str | None = None,
    max_size: int | None = 128,
    slices_per_volume: int = 6,
) -> dict[str, Any]:
    """Write a small real CT / MR dataset (class folders ``ct/`` and ``mr/``) built from packaged test images.

    See the module docstring for the sources, the layout, the augmentations and the files written beside the images.

    Args:
        output_dir: folder to create (or an empty one); a folder already holding this very dataset (same
            ``provenance.json`` manifest) is left as it is.
        spatial_dims: 2 (default: 2-D images) or 3 (volumes: NIfTI and one DICOM series folder per class).
        seed: seed of the augmentations, an integer >= 0; default 0.
        num_variants: augmented images (2D) or volumes (3D) per class, added to the class's real ones and drawn
            in turn from them; default 100 (2D) or 6 (3D); 0 writes the real ones only.
        image_format: 2D only: ``"dicom"`` (default; real units, CT in HU through RescaleIntercept) or ``"png"``
            (8-bit grayscale). Must be None for ``spatial_dims=3``.
        max_size: images larger than this along their longest axis are downsized to it (volumes: all axes by one
            factor); an integer >= 16, or None to keep the native size; default 128.
        slices_per_volume: 2D only: axial slices taken from each MR volume (three volumes), an integer >= 1;
            default 6.

    Returns:
        A dict: ``output_dir``, ``spatial_dims``, ``image_format``, ``class_names`` (``["ct", "mr"]``), ``counts``
        (items per class), ``real`` (real items per class), ``items`` (one dict per image file or series folder:
        ``image`` relative path, ``label`` class name, ``source``, ``kind`` ``real`` / ``pseudo3d`` / ``variant``,
        ``format``, ``shape``, ``spacing_mm``, ``augmentation`` parameters), ``sources`` (names used),
        ``datalist`` (path of ``examples_datalist.json``), ``created`` (False when the folder already held the
        dataset) and ``seconds``.

    Raises:
        ValueError: a bad argument (named), or ``output_dir`` holding something else: a non-empty folder that is
            not an example dataset, one built with other settings (the message lists them), or an incomplete one.
        RuntimeError: no source image of a class could be read (the warnings name the files and errors).

    Example:
        >>> info = make_example_dataset("/tmp/medvq_examples")  # doctest: +SKIP
        >>> info["counts"]  # doctest: +SKIP
        {'ct': 103, 'mr': 121}
        >>> build_image_datalist("/tmp/medvq_examples", spatial_dims=2, group_by="file")  # doctest: +SKIP
    """
    start = time.perf_counter()
    if not isinstance(output_dir, (str, os.PathLike)) or str(output_dir) == "":
        raise ValueError(f"output_dir must be a folder path, got {output_dir!r}.")
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    seed = _check_int(seed, "seed", 0)
    num_variants = _check_int(num_variants, "num_variants", 0, none_ok=True)
    if num_variants is None:
        num_variants = DEFAULT_NUM_VARIANTS[spatial_dims]
    max_size = _check_int(max_size, "max_size", 16, none_ok=True)
    slices_per_volume = _check_int(slices_per_volume, "slices_per_volume", 1)
    if spatial_dims == 2:
        image_format = "dicom" if image_format is None else image_format
        if image_format not in EXAMPLE_IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {list(EXAMPLE_IMAGE_FORMATS)} or None, got {image_format!r}.")
    elif image_format is not None:
        raise ValueError(
            f"image_format applies to spatial_dims=2 only (3D writes NIfTI volumes and one DICOM series per class); "
            f"got {image_format!r}: leave it None."
        )
    else:
        image_format = "nifti+dicom-series"
    root = Path(output_dir).expanduser().absolute()

    sources, records, missing = _load_sources(spatial_dims)
    manifest = {
        "generator": _GENERATOR,
        "format_version": _FORMAT_VERSION,
        "spatial_dims": spatial_dims,
        "seed": seed,
        "num_variants": num_variants,
        "image_format": image_format,
        "max_size": max_size,
        "slices_per_volume": slices_per_volume if spatial_dims == 2 else None,
        "sources": {r["name"]: r["sha256"] for r in records},
    }
    old = _existing(root, manifest)
    if old is not None:
        logger.info("examples: '%s' already holds this %dD example dataset (%s matches): nothing to do.",
                    root, spatial_dims, _PROVENANCE)
        return _summary(root, old, created=False, seconds=time.perf_counter() - start)

    logger.info(
        "examples: building the %dD example dataset in '%s' (seed %d, %d augmented per class, %s) from %d source "
        "files...", spatial_dims, root, seed, num_variants, image_format, len(records),
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    work = root.parent / f".{root.name}.partial-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    try:
        work.mkdir()
        if spatial_dims == 2:
            built = _build_2d(work, sources, seed, num_variants, image_format, max_size, slices_per_volume)
        else:
            built = _build_3d(work, sources, seed, num_variants, max_size)
        counts = {
            name: {
                "total": sum(item["label"] == name for item in built.items),
                "real": sum(item["label"] == name and item["kind"] != "variant" for item in built.items),
                "variant": sum(item["label"] == name and item["kind"] == "variant" for item in built.items),
            }
            for name in EXAMPLE_CLASSES
        }
        licences = _copy_licences(work, sorted({r["package"] for r in records}))
        provenance = {
            "manifest": manifest,
            "counts": counts,
            "class_names": list(EXAMPLE_CLASSES),
            "sources": records,
            "left_out": missing,
            "licence_files": licences,
            "items": built.items,
        }
        datalist = {
            "name": f"medvq examples ({spatial_dims}D)",
            "description": f"real CT / MR test images of pydicom, nibabel and matplotlib; see {_README}",
            "labels": {str(i): name for i, name in enumerate(EXAMPLE_CLASSES)},
            # integer labels: MONAI's loader turns a string that names an existing path (the class folder) into
            # that path; patient_id is the DICOM PatientID, the source
            "training": [
                {"image": item["image"], "label": EXAMPLE_CLASSES.index(item["label"]),
                 "patient_id": f"medvq-{item['source']}"}
                for item in built.items
            ],
        }
        (work / _DATALIST).write_text(json.dumps(datalist, indent=1) + "\n", encoding="utf-8")
        (work / _README).write_text(_readme(manifest, records, counts, missing), encoding="utf-8")
        (work / _PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(work, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    logger.info(
        "examples: wrote %s in '%s' in %.1f s.",
        ", ".join(f"{name} {c['total']} ({c['real']} real)" for name, c in counts.items()), root, seconds,
    )
    return _summary(root, provenance, created=True, seconds=seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m medvq.data.examples OUT_DIR [--spatial_dims 2|3] [--seed S] [--num_variants N]
    [--image_format dicom|png] [--max_size PX] [--slices_per_volume K]``; prints what it wrote. Returns 0, or 2
    for a bad argument or an output folder holding something else (the message says what)."""
    parser = argparse.ArgumentParser(
        prog="python -m medvq.data.examples",
        description="Write a small real CT / MR dataset (class folders ct/ and mr/) from images that ship inside "
        "pydicom, nibabel and matplotlib: no download.",
    )
    parser.add_argument("output_dir", metavar="OUT_DIR", help="folder to create (or an empty one)")
    parser.add_argument("--spatial_dims", "--spatial-dims", type=int, default=2, choices=(2, 3),
                        help="2: 2-D images (default); 3: volumes")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed (default 0)")
    parser.add_argument("--num_variants", "--num-variants", type=int, default=None,
                        help="augmented images / volumes per class (default 100 in 2D, 6 in 3D)")
    parser.add_argument("--image_format", "--image-format", default=None, choices=EXAMPLE_IMAGE_FORMATS,
                        help="2D only: dicom (default, real units) or png (8-bit)")
    parser.add_argument("--max_size", "--max-size", type=int, default=128,
                        help="downsize images larger than this along their longest axis (default 128; 0 keeps them)")
    parser.add_argument("--slices_per_volume", "--slices-per-volume", type=int, default=6,
                        help="2D only: axial slices taken from each MR volume (default 6)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        info = make_example_dataset(
            args.output_dir, spatial_dims=args.spatial_dims, seed=args.seed, num_variants=args.num_variants,
            image_format=args.image_format, max_size=args.max_size or None, slices_per_volume=args.slices_per_volume,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    unit = "images" if info["spatial_dims"] == 2 else "volumes"
    verb = "wrote" if info["created"] else "already there (nothing written):"
    print(f"{verb} the {info['spatial_dims']}D example dataset in {info['output_dir']} "
          f"({info['image_format']}, {info['seconds']:.1f} s)")
    for name in info["class_names"]:
        real = info["real"][name]
        print(f"  {name}: {info['counts'][name]} {unit} ({real} real, {info['counts'][name] - real} augmented)")
    print(f"  total: {sum(info['counts'].values())} {unit}; sources: {', '.join(info['sources'])}")
    print(f"read it with: medvq.data.build_image_datalist({info['output_dir']!r}, spatial_dims={info['spatial_dims']}, "
          "group_by='file')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
