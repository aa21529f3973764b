"""Datalists from your own images of any modality: a folder, or a MONAI (Decathlon-style) datalist JSON.

:func:`build_image_datalist` lists PNG / JPEG, DICOM (single files, and a folder of one series as ONE volume) and
NIfTI images, checks each one by loading it with the training loader
(:class:`medvq.transforms.LoadMedicalImaged`), and splits them so that every image of one group (by default the
folder holding it) falls on one side. With ``spatial_dims=2`` a volume becomes one item per slice, near-empty
slices dropped; with ``spatial_dims=3`` 2-D images are skipped. Items are MONAI datalist dicts for
:func:`medvq.transforms.image_preprocessing`:

- ``image``: absolute path of the file, or of the folder of a DICOM series;
- ``group``: the split unit (see ``group_by``);
- ``label``: class index (with ``labels``: from a datalist's ``label`` field, or for a folder the folder holding
  the image file, or holding the series folder; class names sorted, then numbered);
- ``slice_index``, ``slice_axis``: for the slices of a volume (axis in RAS: 0 sagittal, 1 coronal, 2 axial);
- ``spacing``: for volumes (``spatial_dims=3``), the voxel sizes in mm along the RAS axes, as loaded;
- a datalist entry's other fields, unchanged.

Rules (each skipped file is in :attr:`ImageDatalist.skipped` with its reason, counted by reason in a log warning
and listed in ``output_dir/skipped_images.csv``):

- DICOM series: the ``.dcm`` files of one folder that share a SeriesInstanceUID, are single-frame, have one
  ImageOrientationPatient and size and each its own ImagePositionPatient form one volume, read by MONAI's ``PydicomReader`` (through
  :class:`medvq.transforms.DicomSeriesReader`, which sorts slices by position; ITK is not needed). A folder
  holding such a series and other DICOM files has its series files skipped (put each series in its own folder);
  other DICOMs are 2-D images, one item each.
- 4-D images (NIfTI with a 4th axis longer than 1: a time series, or modalities stacked) are skipped in 2D and
  3D alike: MONAI would read the 4th axis as channels, silently. Split them into 3-D files first.
- Multi-frame and PALETTE COLOR DICOMs, DICOMs without pixel data (reports, RT plans), files that do not decode,
  constant images and, for ``spatial_dims=3``, 2-D images are skipped.
- Near-empty slices (``spatial_dims=2``): in the RAS-oriented volume (channels averaged), a voxel is foreground
  when it exceeds ``low + foreground_level * (high - low)``, with ``low`` the volume's minimum and ``high`` its
  99.5th percentile (of at most ~1M evenly spaced voxels); a slice whose foreground fraction is below
  ``min_slice_foreground`` is dropped (CT: air-only slices; MR: slices of background noise). A volume with no
  slice left is skipped. Dropped slices are counted in the log and returned in
  :attr:`ImageDatalist.dropped_slices`.
- Channels: grayscale images have 1 channel, colour 3; a mix is an error naming the counts and files unless
  ``channels`` says which count the preprocessing converts to (:class:`medvq.transforms.MatchChannelsd`).
- A CT DICOM without RescaleSlope / RescaleIntercept is kept (its stored values taken as Hounsfield units) and
  named in a log warning.

The split: as the datalist's ``validation`` list when it has one; otherwise groups ranked by a seeded SHA-256
hash (:func:`medvq.data.split_datalist`), ``val_fraction`` of them in val. ``output_dir/datalist.json`` records
the split (MONAI's ``load_decathlon_datalist`` reads it back).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.data import load_decathlon_datalist
from monai.transforms import Orientation

from medvq.data.odir import split_datalist, write_datalist_json, write_skipped_csv
from medvq.transforms.readers import DICOM_SUFFIXES, IMAGE_SUFFIXES, LoadMedicalImaged, image_kind, slice_position

__all__ = [
    "FOREGROUND_LEVEL", "GROUP_BY", "MIN_SLICE_FOREGROUND", "ImageDatalist", "build_image_datalist", "median_spacing",
]

logger = logging.getLogger(__name__)

GROUP_BY: tuple[str, ...] = ("folder", "patient_id", "file")
FOREGROUND_LEVEL: float = 0.1
"""Fraction of a volume's range (minimum to 99.5th percentile) above which a voxel counts as foreground."""
MIN_SLICE_FOREGROUND: float = 0.05
"""Foreground fraction below which a slice counts as near-empty and is dropped."""
_SKIPPED_CSV = "skipped_images.csv"
_SKIPPED_FIELDS = ("file", "reason", "group")
_PERCENTILE_SAMPLES = 1_000_000


class ImageDatalist(NamedTuple):
    """Result of :func:`build_image_datalist`.

    Attributes:
        train: training items (module docstring for their fields).
        val: validation items; no ``group`` is in both lists (unless the datalist's own split says so).
        skipped: one dict per file or series left out, ``{"file", "reason", "group"}``.
        class_names: class names in label order (``label`` i is ``class_names[i]``); None without labels.
        channels: channel count the items have (or are converted to, with ``channels``): 1 or 3.
        spatial_dims: 2 or 3, as asked.
        source: what was read, e.g. ``"folder '/data/ct'"``.
        dropped_slices: near-empty slice indices dropped per volume path (``spatial_dims=2``).
    """

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    class_names: list[str] | None
    channels: int
    spatial_dims: int
    source: str
    dropped_slices: dict[str, list[int]]


class _Probe(NamedTuple):
    """What loading one image told."""

    channels: int
    slices: list[int] | None  # kept slice indices (2-D items from a volume), None for one 2-D image or a volume
    slice_axis: int | None
    dropped: list[int]
    patient_id: str | None
    ct_without_rescale: bool
    spacing: list[float] | None = None  # voxel sizes in mm along the RAS axes (volumes, spatial_dims=3)


def _check_fraction(value: Any, name: str, upper_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value and (
        value < 1 if upper_open else value <= 1
    )
    if not ok:
        raise ValueError(f"{name} must be a number in [0, 1{')' if upper_open else ']'}, got {value!r}.")
    return float(value)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())  # decoders report on several lines; one line reads well in a csv and a log


def _dicom_folder(folder: Path, paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """Entries of one folder's ``.dcm`` files: one series item, or one item per file; and the files skipped."""
    entries: list[dict] = []
    skipped: list[dict] = []
    headers: dict[Path, Any] = {}
    for path in paths:
        try:
            headers[path] = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as e:  # noqa: BLE001  pydicom raises InvalidDicomError, OSError, ValueError, ...
            skipped.append({"file": str(path), "reason": f"unreadable: {type(e).__name__}: {_one_line(e)}"})
    by_series: dict[str, list[Path]] = defaultdict(list)
    for path, ds in headers.items():
        by_series[str(ds.get("SeriesInstanceUID", ""))].append(path)

    def stack(uid: str) -> bool:
        """Whether the series' files are slices of one volume: single-frame, one orientation and size, each at
        its own position (copies of one image in several encodings share a series and a position: not a stack)."""
        members = [headers[p] for p in by_series[uid]]
        if not uid or len(members) < 2:
            return False
        if any(int(ds.get("NumberOfFrames", 1) or 1) != 1 for ds in members):
            return False
        positions = [slice_position(ds) for ds in members]
        if any(p is None for p in positions) or len({round(p, 3) for p in positions}) < len(positions):
            return False
        layout = {
            (tuple(round(float(v), 4) for v in ds.ImageOrientationPatient), ds.get("Rows"), ds.get("Columns"))
            for ds in members
        }
        return len(layout) == 1

    stacks = [uid for uid in by_series if stack(uid)]
    if len(stacks) == 1 and len(by_series[stacks[0]]) == len(headers):
        return [{"image": str(folder)}], skipped
    for uid in stacks:
        for path in by_series[uid]:
            skipped.append({
                "file": str(path),
                "reason": f"several DICOM series in one folder: '{folder}' holds {len(by_series)} series; this "
                f"file belongs to series {uid} ({len(by_series[uid])} slices). Put each series in its own folder.",
            })
    in_stack = {p for uid in stacks for p in by_series[uid]}
    entries += [{"image": str(p)} for p in headers if p not in in_stack]
    return entries, skipped


def _scan_folder(root: Path) -> tuple[list[dict], list[dict]]:
    """Entries ``{"image"}`` of the images under ``root`` (DICOM series folders as one entry) and files skipped."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    listed = [p for p in files if p.name.lower().endswith(IMAGE_SUFFIXES)]
    ignored = [p for p in files if not p.name.lower().endswith(IMAGE_SUFFIXES)]
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        more = f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
        logger.info("'%s': %d file(s) not read (not one of %s): %s%s", root, len(ignored), IMAGE_SUFFIXES, shown, more)
    entries: list[dict] = []
    skipped: list[dict] = []
    dicoms: dict[Path, list[Path]] = defaultdict(list)
    for path in listed:
        if path.name.lower().endswith(DICOM_SUFFIXES):
            dicoms[path.parent].append(path)
        else:
            entries.append({"image": str(path)})
    for folder, paths in dicoms.items():
        found, left_out = _dicom_folder(folder, paths)
        entries += found
        skipped += left_out
    return sorted(entries, key=lambda e: e["image"]), skipped


def _read_datalist(path: Path) -> tuple[list[dict], list[dict], bool]:
    """Training and validation entries of a Decathlon-style JSON (paths made absolute), and whether it had a
    non-empty ``validation`` list."""
    if not path.is_file():
        raise FileNotFoundError(f"datalist '{path}' does not exist.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"datalist '{path}' is not JSON: {e}.") from None
    if not isinstance(content, dict) or not isinstance(content.get("training"), list):
        raise ValueError(  # noqa: TRY004  a malformed file is a bad value, not a caller's wrong type
            f"datalist '{path}' needs a 'training' list, as a MONAI Decathlon datalist: "
            '{"training": [{"image": "img1.nii.gz", "label": 0}, ...], "validation": [...]} '
            "(paths relative to the JSON's folder)."
        )
    # is_segmentation=False: a string label is a class name, not a mask path to resolve
    train = load_decathlon_datalist(path, is_segmentation=False, data_list_key="training")
    has_val = isinstance(content.get("validation"), list) and len(content["validation"]) > 0
    val = load_decathlon_datalist(path, is_segmentation=False, data_list_key="validation") if has_val else []
    for key, items in (("training", train), ("validation", val)):
        raw = content.get(key) or []
        for i, item in enumerate(items):
            if "image" not in item:
                raise ValueError(f"datalist '{path}': {key} item {i} has no 'image': {item!r}.")
            # MONAI's loader turns every string field that names an existing relative path into an absolute path:
            # a class name "ct" beside a ct/ folder would come back as '/data/ct'; keep the label as written
            if isinstance(raw[i], dict) and isinstance(raw[i].get("label"), str):
                item["label"] = raw[i]["label"]
    return train, val, has_val


def _foreground_fractions(volume: torch.Tensor, axis: int, level: float) -> np.ndarray:
    """Foreground fraction of each slice along ``axis`` of a ``(C, X, Y, Z)`` volume (module docstring)."""
    values = np.asarray(volume.float().mean(0))  # (X, Y, Z)
    flat = values.reshape(-1)
    sample = flat[:: max(1, flat.size // _PERCENTILE_SAMPLES)]
    low, high = float(flat.min()), float(np.percentile(sample, 99.5))
    if not high > low:
        return np.zeros(values.shape[axis])
    foreground = values > low + level * (high - low)
    return np.moveaxis(foreground, axis, 0).reshape(values.shape[axis], -1).mean(1)


def _header_problem(path: str, kind: str) -> str | None:
    """A reason to skip the file found from its header, or None."""
    if kind == "nifti":
        shape = tuple(nib.load(path).shape)  # header only: nibabel loads the data lazily
        if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
            return (
                f"4-D image: shape {shape}; medvq reads one 2-D or 3-D image per file (MONAI would take the 4th "
                "axis as channels). Split it into 3-D files (nibabel.funcs.four_to_three) and list those"
            )
    elif kind == "dicom" and Path(path).is_file():
        ds = pydicom.dcmread(path)
        if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            sop = ds.get("SOPClassUID")
            return "not an image: DICOM without pixel data" + (f" ({getattr(sop, 'name', sop)})" if sop else "")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            return f"multi-frame DICOM: {frames} frames; medvq reads single-frame files (export the frames)"
        if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
            return "unsupported DICOM: PALETTE COLOR (convert it to RGB)"
    return None


def _probe(
    entry: dict, loader: LoadMedicalImaged, spatial_dims: int, slice_axis: int, level: float, min_fraction: float
) -> _Probe | str:
    """Load one entry as training will and decide what it gives; a string is the reason to skip it."""
    path = entry["image"]
    if not isinstance(path, str):
        return f"unsupported entry: 'image' must be one path, got {type(path).__name__}"
    if not os.path.exists(path):
        return "file not found"
    try:
        kind = image_kind(path)
        problem = _header_problem(path, kind)
        if problem:
            return problem
        img = loader({"image": path})["image"]  # (C, *spatial) float32 MetaTensor
    except Exception as e:  # noqa: BLE001  readers raise many types; the reason names it
        return f"unreadable: {type(e).__name__}: {_one_line(e)}"
    channels, spatial = int(img.shape[0]), tuple(int(s) for s in img.shape[1:])
    if float(img.max()) == float(img.min()):
        return f"constant image: every value is {float(img.min()):g}"
    meta = img.meta
    patient = None
    if kind == "dicom":
        first = path if Path(path).is_file() else min(Path(path).glob("*.[dD][cC][mM]"))
        patient = str(pydicom.dcmread(first, stop_before_pixels=True).get("PatientID", "") or "") or None
    no_rescale = str(meta.get("dicom_modality", "")).upper() == "CT" and not bool(meta.get("rescale_tags", True))
    if len(spatial) == 2:
        if spatial_dims == 3:
            return f"2-D image: shape {spatial}; spatial_dims=3 needs volumes"
        return _Probe(channels, None, None, [], patient, no_rescale)
    ras = Orientation(axcodes="RAS", labels=None)(img)  # (C, X, Y, Z): slice axes counted as the pipeline cuts them
    flat_axes = [a for a, s in enumerate(ras.shape[1:]) if s == 1]
    if len(flat_axes) > 1:
        return f"degenerate image: shape {spatial}"
    if flat_axes:  # a 2-D image stored as a volume of one slice
        if spatial_dims == 3:
            return f"2-D image: shape {spatial} (one slice); spatial_dims=3 needs volumes"
        return _Probe(channels, [0], flat_axes[0], [], patient, no_rescale)
    if spatial_dims == 3:
        spacing = [round(float(v), 6) for v in ras.pixdim]
        return _Probe(channels, None, None, [], patient, no_rescale, spacing)
    fractions = _foreground_fractions(ras, slice_axis, level)
    kept = [int(i) for i in np.flatnonzero(fractions >= min_fraction)]
    dropped = [int(i) for i in np.flatnonzero(fractions < min_fraction)]
    if not kept:
        return (
            f"no foreground slice: all {len(fractions)} slices along axis {slice_axis} have under "
            f"{min_fraction:g} of their voxels above {level:g} of the volume's range"
        )
    return _Probe(channels, kept, slice_axis, dropped, patient, no_rescale)


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix() or "."
        except ValueError:
            pass
    return str(path)


def _labels(items: list[dict], from_datalist: bool, root: Path | None, names: Any = None) -> list[str] | None:
    """Set each item's ``label`` to a class index (in place); return the class names, or None without labels.
    ``names``: a datalist's ``"labels"`` mapping (``{"0": "ct", ...}``), naming integer labels."""
    if from_datalist:
        values = [item.get("label") for item in items]
        if all(v is None for v in values):
            return None
        missing = next((item["image"] for item, v in zip(items, values) if v is None), None)
        if missing is not None:
            raise ValueError(
                f"some datalist items have a 'label' and others not (first without: '{missing}'); give every item "
                "a label, or none."
            )
        if all(isinstance(v, str) for v in values):
            if any(v.lower().endswith(IMAGE_SUFFIXES) or os.path.isabs(v) for v in values):
                logger.info("datalist: 'label' fields are file paths (segmentation masks?), not classes: kept as is.")
                return None
            names = sorted(set(values))
            for item in items:
                item["label"] = names.index(item["label"])
            return names
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            count = max(values) + 1
            if isinstance(names, dict) and all(str(i) in names for i in range(count)):
                return [str(names[str(i)]) for i in range(count)]  # the datalist's own "labels": {"0": name, ...}
            return [str(i) for i in range(count)]
        raise ValueError(
            "datalist 'label' fields must be all class names (strings) or all class indices (integers >= 0); "
            f"got {sorted({type(v).__name__ for v in values})}."
        )
    folders = []
    for item in items:
        path = Path(item["image"])
        folders.append(_relative(path.parent, root))  # the folder holding the file, or holding the series folder
    names = sorted(set(folders))
    for item, folder in zip(items, folders):
        item["label"] = names.index(folder)
    return names


def build_image_datalist(
    dataset_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    spatial_dims: int = 2,
    slice_axis: int = 2,
    val_fraction: float = 0.1,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    group_by: str = "folder",
    labels: bool = True,
    channels: int | None = None,
    min_slice_foreground: float = MIN_SLICE_FOREGROUND,
    foreground_level: float = FOREGROUND_LEVEL,
) -> ImageDatalist:
    """Train / val datalists from a folder of images or a Decathlon-style datalist JSON (rules in the module doc).

    Steps: 1. list the entries (folder: recursive scan for :data:`medvq.transforms.IMAGE_SUFFIXES`, DICOM series
    folders as one entry; datalist: MONAI's ``load_decathlon_datalist``); 2. load each one with the training
    loader and skip what cannot be used; 3. check the channel counts; 4. labels; 5. groups; 6. slice volumes
    (``spatial_dims=2``); 7. split; 8. write ``skipped_images.csv`` and ``datalist.json``.

    Args:
        dataset_dir: folder scanned recursively; exclusive with ``datalist``.
        datalist: MONAI Decathlon-style JSON, ``{"training": [{"image": ..., "label"?: ...}], "validation"?:
            [...]}``, paths relative to its folder (or absolute; a folder is a DICOM series).
        spatial_dims: 2 (volumes sliced) or 3 (volumes; 2-D images skipped); default 2.
        slice_axis: RAS axis volumes are sliced along when ``spatial_dims=2``: 0 sagittal, 1 coronal, 2 axial
            (default).
        val_fraction: fraction of groups in val when the datalist gives no validation list, in [0, 1); default 0.1.
        seed: split seed; default 0.
        output_dir: where ``datalist.json`` and ``skipped_images.csv`` (written even when empty) go; default
            None writes nothing.
        group_by: the split unit: ``"folder"`` (default: the folder holding the file; a series' own folder),
            ``"patient_id"`` (a datalist item's ``patient_id``, else the DICOM PatientID, else the folder) or
            ``"file"`` (each file or series alone). In a class-folder layout (``root/<class>/<image>``) the folder
            is the class: pass ``"file"`` there (a warning says so).
        labels: give items a class ``label`` (datalist: its ``label`` fields, when every item has one; folder:
            the folder holding the image file, or holding the series folder, relative to ``dataset_dir``);
            default True.
        channels: None (default): every image must have the same channel count; 1 or 3: the count the
            preprocessing converts every image to (``image_preprocessing(channels=...)``).
        min_slice_foreground: foreground fraction below which a slice is dropped, in [0, 1]; default
            :data:`MIN_SLICE_FOREGROUND` (0.05); 0 keeps every slice.
        foreground_level: foreground threshold as a fraction of the volume's range, in [0, 1]; default
            :data:`FOREGROUND_LEVEL` (0.1).

    Returns:
        :class:`ImageDatalist`.

    Raises:
        ValueError: bad arguments (named), a malformed datalist, mixed channel counts without ``channels``, or
            no usable image (the message names the folder or datalist, the endings looked for and the first
            reasons).
        FileNotFoundError: ``dataset_dir`` or ``datalist`` does not exist, or the folder holds no file with one of
            the endings (the message names the folder and the endings).

    Example:
        >>> result = build_image_datalist("/data/ct_scans", spatial_dims=3, output_dir="runs/image_vq")  # doctest: +SKIP
        >>> len(result.train), len(result.val), len(result.skipped), result.channels  # doctest: +SKIP
    """
    # 0. arguments
    if (dataset_dir is None or str(dataset_dir) == "") == (datalist is None or str(datalist) == ""):
        raise ValueError("pass exactly one of dataset_dir (a folder of images) and datalist (a JSON datalist).")
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    if slice_axis not in (0, 1, 2) or isinstance(slice_axis, bool):
        raise ValueError(f"slice_axis must be 0, 1 or 2 (RAS: sagittal, coronal, axial), got {slice_axis!r}.")
    _check_fraction(val_fraction, "val_fraction", upper_open=True)
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {list(GROUP_BY)}, got {group_by!r}.")
    if channels is not None and (channels not in (1, 3) or isinstance(channels, bool)):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}.")
    min_fraction = _check_fraction(min_slice_foreground, "min_slice_foreground")
    level = _check_fraction(foreground_level, "foreground_level")

    # 1. entries
    skipped: list[dict] = []
    if dataset_dir:
        root = Path(dataset_dir).expanduser().absolute()
        if not root.is_dir():
            raise FileNotFoundError(f"dataset_dir '{root}' is not a folder of images.")
        source = f"folder '{root}'"
        entries, skipped = _scan_folder(root)
        for entry in entries:
            entry["_split"] = "training"
        has_val = False
    else:
        json_path = Path(datalist).expanduser().absolute()
        root = json_path.parent
        source = f"datalist '{json_path}'"
        train_entries, val_entries, has_val = _read_datalist(json_path)
        entries = [dict(e, _split="training") for e in train_entries] + [dict(e, _split="validation") for e in val_entries]

    # 2. load and check each entry (the reader's own warnings are summarised below)
    loader = LoadMedicalImaged("image")
    usable: list[tuple[dict, _Probe]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for entry in entries:
            probe = _probe(entry, loader, spatial_dims, slice_axis, level, min_fraction)
            if isinstance(probe, str):
                skipped.append({"file": str(entry["image"]), "reason": probe})
            else:
                usable.append((entry, probe))
    for w in caught:
        logger.debug("while checking images: %s", w.message)
    no_rescale = [e["image"] for e, p in usable if p.ct_without_rescale]
    if no_rescale:
        logger.warning(
            "%d CT DICOM image(s) lack RescaleSlope / RescaleIntercept: their stored values are read as Hounsfield "
            "units (first: %s).", len(no_rescale), ", ".join(f"'{n}'" for n in no_rescale[:3]),
        )
    for s in skipped:
        s.setdefault("group", _relative(Path(s["file"]).parent, root))
    if output_dir is not None:
        write_skipped_csv(Path(output_dir) / _SKIPPED_CSV, skipped, _SKIPPED_FIELDS)
    total = len(skipped) + len(usable)
    if skipped:
        reasons = Counter(s["reason"].split(":")[0] for s in skipped)
        where = f"listed in '{Path(output_dir) / _SKIPPED_CSV}'" if output_dir is not None else "see result.skipped"
        logger.warning(
            "images: skipped %d of %d files (%s); %s.",
            len(skipped), total, ", ".join(f"{n} {r}" for r, n in reasons.most_common()), where,
        )
    looked = f"files ending in {list(IMAGE_SUFFIXES)} and folders of one DICOM series"
    if not entries and not skipped:
        raise FileNotFoundError(f"no image in {source}: looked for {looked}.")
    if not any(e["_split"] == "training" for e, _ in usable):
        first = "; ".join(f"'{s['file']}': {s['reason']}" for s in skipped[:3]) or "no file found"
        raise ValueError(
            f"no readable image in {source} (looked for {looked}; spatial_dims={spatial_dims}): {len(skipped)} "
            f"skipped. First: {first}."
        )

    # 3. channels
    counts = Counter(p.channels for _, p in usable)
    if len(counts) > 1 and channels is None:
        detail = "; ".join(
            f"{n} with {c} channel(s), e.g. " + ", ".join([f"'{e['image']}'" for e, p in usable if p.channels == c][:3])
            for c, n in sorted(counts.items())
        )
        raise ValueError(
            f"images in {source} mix channel counts: {detail}. Pass channels=1 (colour images become grayscale) or "
            "channels=3 (grayscale images are repeated to RGB), in a bundle --channels 1|3; the same value goes to "
            "image_preprocessing(channels=...)."
        )
    out_channels = channels if channels is not None else next(iter(counts))

    # 4. labels, 5. groups
    items = [{k: v for k, v in e.items() if k != "_split"} for e, _ in usable]
    label_names = None
    if datalist and not dataset_dir:
        label_names = json.loads(Path(datalist).expanduser().read_text(encoding="utf-8")).get("labels")
    class_names = (_labels(items, from_datalist=datalist is not None and not dataset_dir, root=root, names=label_names)
                   if labels else None)
    for item, (_, probe) in zip(items, usable):
        path = Path(item["image"])
        folder = path if path.is_dir() else path.parent
        if group_by == "file":
            group = _relative(path, root)
        elif group_by == "patient_id" and item.get("patient_id") not in (None, ""):
            group = f"patient:{item['patient_id']}"
        elif group_by == "patient_id" and probe.patient_id:
            group = f"patient:{probe.patient_id}"
        else:
            group = _relative(folder, root)
        item["group"] = group
    if labels and class_names and dataset_dir and group_by == "folder" and len(class_names) > 1:
        label_of_group = {item["group"]: class_names[item["label"]] for item in items}
        if all(group == name for group, name in label_of_group.items()):
            logger.warning(
                "images: each label folder is also one split unit (group_by='folder'). If the folders are classes "
                "(root/<class>/<image>), validation holds whole classes: pass group_by='file'. If they are "
                "patients, the labels are patient folders: pass labels=False."
            )

    # 6. slices
    dropped_slices: dict[str, list[int]] = {}
    train: list[dict] = []
    val: list[dict] = []
    for item, (entry, probe) in zip(items, usable):
        target = val if entry["_split"] == "validation" else train
        if probe.slices is None:
            target.append(item if probe.spacing is None else dict(item, spacing=probe.spacing))
            continue
        target += [dict(item, slice_index=k, slice_axis=probe.slice_axis) for k in probe.slices]
        if probe.dropped:
            dropped_slices[item["image"]] = probe.dropped
    if dropped_slices:
        logger.info(
            "images: dropped %d near-empty slice(s) of %d volume(s) (foreground fraction < %g).",
            sum(map(len, dropped_slices.values())), len(dropped_slices), min_fraction,
        )

    # 7. split
    if not has_val:
        keyed = [{"patient_id": item["group"], "index": i} for i, item in enumerate(train)]
        split = split_datalist(keyed, val_fraction=val_fraction, seed=seed, split_by="patient")
        train, val = [train[k["index"]] for k in split.train], [train[k["index"]] for k in split.val]

    # 8. outputs
    if output_dir is not None:
        write_datalist_json(
            Path(output_dir) / "datalist.json", train, val, name="images",
            description=f"{source}, spatial_dims={spatial_dims}, channels={out_channels}", class_names=class_names,
            channels=out_channels,
        )
    logger.info(
        "images: %s, %d train and %d val items from %d image(s); spatial_dims=%d, %d channel(s)%s",
        source, len(train), len(val), len(usable), spatial_dims, out_channels,
        f", {len(class_names)} class(es)" if class_names else "",
    )
    return ImageDatalist(train, val, skipped, class_names, out_channels, spatial_dims, source, dropped_slices)


def median_spacing(items: Any, pixdim: float | list[float] | None = None) -> list[float] | None:
    """The voxel spacing (mm, RAS axes) generated volumes should carry: ``pixdim`` when the preprocessing resamples
    to it, else the per-axis median of the items' ``spacing`` (:func:`build_image_datalist` records it for volumes);
    None for 2-D data (no item has a spacing)."""
    if pixdim is not None:
        return [float(v) for v in ([pixdim] * 3 if isinstance(pixdim, (int, float)) else pixdim)]
    spacings = [item["spacing"] for item in items if isinstance(item, dict) and item.get("spacing") is not None]
    if not spacings:
        return None
    return [float(v) for v in np.median(np.asarray(spacings, dtype=np.float64), axis=0)]
