"""Preprocessing for images of any modality (CT, MR, X-ray, RGB photographs), 2D or 3D, and its inverse.

:func:`image_preprocessing` loads what :func:`medvq.data.build_image_datalist` lists (PNG / JPEG, DICOM files and
series folders, NIfTI; 2-D slices of volumes), makes it channel-first and maps intensities to [-1, 1]:

- ``ct``: a Hounsfield window, default [-1000, 1000] (air to dense bone), clipped. DICOM RescaleSlope /
  RescaleIntercept are applied by MONAI's ``PydicomReader`` when present; a CT DICOM without them is read as stored
  (taken as HU) with a ``UserWarning`` naming the file (:class:`~medvq.transforms.readers.DicomSeriesReader`).
  NIfTI CTs are taken to be in HU (nibabel applies the header's scaling).
- ``mr``: per image (per volume, also for its slices) the 0.5th and 99.5th percentiles of the values map to -1
  and 1, clipped: MR intensities have no absolute unit.
- ``xray``, ``rgb``: the 8-bit range [0, 255] (``window`` changes it, e.g. ``(0, 4095)`` for 12-bit radiographs).

Each item also gets ``<key>_intensity_range``, a float32 tensor ``[low, high]`` in input units (the window, or
the MR image's percentile values), which :func:`to_input_units` uses to map reconstructions back to HU / the
source scale; :func:`preprocessing_record` is the parameter record for a run's ``run_info.json``.

Spatial steps: 3D: ``Orientationd`` RAS, ``Spacingd`` to ``pixdim`` (optional), crop / pad to ``roi_size`` (centre;
a random position when training), padding -1. 2D: a slice item (``slice_index`` / ``slice_axis``) is cut from its
RAS-oriented volume (:class:`SelectSliced`); the longer side is resized to ``image_size`` (aspect ratio kept) and
the shorter one padded with -1 to a square (a slice keeps the RAS array order: an axial slice's rows run towards
the patient's right, its columns towards anterior, so plotted as rows x columns it is turned from the radiological
view; slices are not resampled to square pixels). No fundus border crop or circular mask. Channels stay as loaded
(grayscale 1, RGB 3) unless ``channels`` asks for a conversion (:class:`MatchChannelsd`).

MONAI transforms do the work (``LoadImaged`` with :class:`~medvq.transforms.readers.MedicalImageReader`,
``EnsureTyped``, ``Orientationd``, ``Spacingd``, ``ScaleIntensityRange``, ``Resized``, ``ResizeWithPadOrCropd``,
``SpatialPadd``, ``RandSpatialCropd``, ``RandFlipd``); the own ones here say why in their docstrings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    Orientation,
    Orientationd,
    RandFlipd,
    RandSpatialCropd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRange,
    Spacingd,
    SpatialCrop,
    SpatialPadd,
    SqueezeDim,
)
from monai.transforms.utils_pytorch_numpy_unification import percentile

from medvq.transforms.readers import LoadMedicalImaged

__all__ = [
    "CT_WINDOW",
    "MODALITIES",
    "MR_PERCENTILES",
    "PHOTO_RANGE",
    "MatchChannelsd",
    "ScaleIntensityToUnitd",
    "SelectSliced",
    "image_preprocessing",
    "preprocessing_record",
    "to_input_units",
]

logger = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("ct", "mr", "xray", "rgb")
CT_WINDOW: tuple[float, float] = (-1000.0, 1000.0)
"""Default CT window in Hounsfield units: air (-1000) to dense bone; soft tissue sits near the middle."""
MR_PERCENTILES: tuple[float, float] = (0.5, 99.5)
"""Default MR percentiles mapped to -1 and 1: robust to the few hot voxels (vessels, artefacts) of a volume."""
PHOTO_RANGE: tuple[float, float] = (0.0, 255.0)
"""Default X-ray / RGB range: 8-bit pixels."""
RANGE_POSTFIX = "intensity_range"
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, PIL's RGB -> "L" conversion


def _describe(img: Any, key: str) -> str:
    meta = getattr(img, "meta", None)
    name = meta.get("filename_or_obj") if isinstance(meta, dict) else None
    return f"image '{name}'" if name else f"image under key '{key}'"


def _pair(value: Any, name: str) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        or not value[0] < value[1]
    ):
        raise ValueError(f"{name} must be two numbers (low, high) with low < high, got {value!r}.")
    return float(value[0]), float(value[1])


def _intensity(modality: str, window: Sequence[float] | None, percentiles: Sequence[float] | None) -> dict:
    """The intensity part of :func:`preprocessing_record` (validated)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {list(MODALITIES)}, got {modality!r}.")
    if modality == "mr":
        if window is not None:
            raise ValueError("window applies to modality 'ct', 'xray' and 'rgb'; 'mr' is scaled by percentiles.")
        low, high = _pair(MR_PERCENTILES if percentiles is None else percentiles, "percentiles")
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles must lie in [0, 100], got {percentiles!r}.")
        return {"method": "percentiles", "percentiles": [low, high], "units": "per-image percentiles"}
    if percentiles is not None:
        raise ValueError(f"percentiles apply to modality 'mr'; {modality!r} uses a fixed window.")
    default = CT_WINDOW if modality == "ct" else PHOTO_RANGE
    low, high = _pair(default if window is None else window, "window")
    units = "Hounsfield units" if modality == "ct" else "stored pixel values"
    return {"method": "window", "window": [low, high], "units": units}


class ScaleIntensityToUnitd(MapTransform):
    """Map intensities to [-1, 1] (clipped) by a fixed window or per-image percentiles, and record the range used.

    Own transform rather than ``ScaleIntensityRanged`` / ``ScaleIntensityRangePercentilesd``: the percentile
    variant does not expose the values it computed, and :func:`to_input_units` needs them to map an MR
    reconstruction back to the source scale. The scaling itself is MONAI's ``ScaleIntensityRange``; percentiles
    are MONAI's ``percentile`` over all channels and voxels.

    Args:
        keys: image keys.
        window: ``(low, high)`` in input units mapped to -1 and 1; exclusive with ``percentiles``.
        percentiles: ``(low, high)`` percentiles in [0, 100] of each image mapped to -1 and 1.
        allow_missing_keys: skip absent keys; default False.

    Adds ``<key>_intensity_range``: float32 tensor ``[low, high]`` in input units. An image whose two
    percentiles are equal (a constant image) maps to -1 with a warning naming it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        window: Sequence[float] | None = None,
        percentiles: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if (window is None) == (percentiles is None):
            raise ValueError("pass exactly one of window and percentiles.")
        self.window = None if window is None else _pair(window, "window")
        self.percentiles = None if percentiles is None else _pair(percentiles, "percentiles")

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if self.window is not None:
                low, high = self.window
            else:
                low, high = (float(v) for v in percentile(img, np.asarray(self.percentiles)))  # one sort, both
                if not high > low:
                    logger.warning("%s is constant (%g): it maps to -1.", _describe(img, key), low)
                    high = low + 1.0
            d[key] = ScaleIntensityRange(a_min=low, a_max=high, b_min=-1.0, b_max=1.0, clip=True)(img)
            d[f"{key}_{RANGE_POSTFIX}"] = torch.tensor([low, high], dtype=torch.float32)
        return d


class SelectSliced(MapTransform):
    """Cut the 2-D slice named by an item's ``slice_index`` / ``slice_axis`` out of its volume, in RAS axes.

    The volume is first turned to RAS (MONAI ``Orientation``), so ``slice_axis`` 0, 1, 2 are sagittal, coronal
    and axial whatever the file's storage order, as :func:`medvq.data.build_image_datalist` counted them; the
    slice is MONAI's ``SpatialCrop`` + ``SqueezeDim`` (the affine follows). Items without ``slice_index`` pass
    unchanged (as do those with ``slice_index`` -1). Own transform because the index is per item, not a constructor
    argument.

    Args:
        keys: image keys.
        index_key: item key of the slice index; default ``"slice_index"``.
        axis_key: item key of the slice axis (0, 1 or 2, RAS); default ``"slice_axis"``.
        allow_missing_keys: skip absent image keys; default False.

    Raises:
        ValueError (at call): the image is not a ``(C, X, Y, Z)`` volume, or the index is out of range.
    """

    def __init__(
        self,
        keys: KeysCollection,
        index_key: str = "slice_index",
        axis_key: str = "slice_axis",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.index_key, self.axis_key = index_key, axis_key
        self.orient = Orientation(axcodes="RAS", labels=None)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        if d.get(self.index_key) is None or int(d[self.index_key]) < 0:  # -1: not a slice
            return d
        index, axis = int(d[self.index_key]), int(d.get(self.axis_key, 2))
        for key in self.key_iterator(d):
            img = d[key]
            if len(img.shape) != 4:
                raise ValueError(
                    f"SelectSliced: {_describe(img, key)} has shape {tuple(img.shape)}; slice items need a "
                    "(C, X, Y, Z) volume."
                )
            if axis not in (0, 1, 2) or not 0 <= index < img.shape[1 + axis]:
                raise ValueError(
                    f"SelectSliced: slice {index} along axis {axis} is outside {_describe(img, key)} of shape "
                    f"{tuple(img.shape)}."
                )
            img = self.orient(img)  # (C, X, Y, Z) in RAS
            roi = [slice(None)] * 3
            roi[axis] = slice(index, index + 1)
            d[key] = SqueezeDim(dim=1 + axis)(SpatialCrop(roi_slices=roi)(img))  # (C, *2 of X, Y, Z)
        return d


class _SliceKeysd:
    """Give every item ``slice_index`` and ``slice_axis`` (-1 for an image that is not a slice) and drop ``group``,
    so one batch can hold 2-D images and slices of volumes. Own transform: MONAI has none that sets default keys,
    and a ``Lambda`` would not pickle (``PersistentDataset`` hashes its transforms by pickling them)."""

    keys = ("slice_index", "slice_axis")

    def __call__(self, data: dict) -> dict:
        d = {k: v for k, v in data.items() if k != "group"}
        for key in self.keys:
            d[key] = -1 if d.get(key) is None else int(d[key])
        return d


class MatchChannelsd(MapTransform):
    """Convert images to ``channels`` channels: RGB to grayscale (ITU-R BT.601 luma) or grayscale to RGB (copies).

    Own transform: MONAI's ``RepeatChanneld`` repeats every image, while here each image is converted only when
    its count differs, so a dataset mixing grayscale and colour files reads as one channel count.

    Args:
        keys: image keys.
        channels: 1 or 3.
        allow_missing_keys: skip absent keys; default False.

    Raises:
        ValueError (at call): an image with another channel count than 1 or 3; the message names the file.
    """

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
        self.channels = channels

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            count = img.shape[0]
            if count == self.channels:
                continue
            if count == 1:  # (1, ...) -> (3, ...)
                d[key] = img.repeat(3, *[1] * (len(img.shape) - 1))
            elif count == 3:  # (3, ...) -> (1, ...)
                weights = torch.tensor(_LUMA, dtype=img.dtype, device=img.device).view(3, *[1] * (len(img.shape) - 1))
                d[key] = (img * weights).sum(0, keepdim=True)
            else:
                raise ValueError(
                    f"MatchChannelsd: {_describe(img, key)} has {count} channels; only 1 and 3 convert."
                )
        return d


class _CheckSpatialDimsd(MapTransform):
    """Fail early, naming the file, when an image does not fit the pipeline's ``spatial_dims``."""

    def __init__(self, keys: KeysCollection, spatial_dims: int, index_key: str = "slice_index") -> None:
        super().__init__(keys)
        self.spatial_dims, self.index_key = spatial_dims, index_key

    def __call__(self, data: dict) -> dict:
        for key in self.key_iterator(data):
            img = data[key]
            dims = len(img.shape) - 1
            ok = dims == 3 if self.spatial_dims == 3 else dims == 2 or (dims == 3 and data.get(self.index_key) is not None)
            if not ok:
                how = (
                    "a 3-D volume" if self.spatial_dims == 3 else "a 2-D image or a slice item (slice_index)"
                )
                raise ValueError(
                    f"{_describe(img, key)} of shape {tuple(img.shape)} (channel first) does not fit spatial_dims="
                    f"{self.spatial_dims}: expected {how}. Build the datalist with medvq.data.build_image_datalist("
                    f"spatial_dims={self.spatial_dims}), which slices volumes for 2-D and skips 2-D images for 3-D."
                )
        return data


class _CommonMetad(MapTransform):
    """Keep only the metadata every reader gives, in one form, so one batch can mix PNG, DICOM and NIfTI.

    MONAI collates a MetaTensor's metadata key by key and fails ("each element in list of batch should be of
    equal size") on keys one format has and another lacks (NIfTI header fields, DICOM tags, PIL's mode) or on
    shapes that differ (a slice's 3-D ``spatial_shape`` against a photograph's 2-D one). Own transform: no MONAI
    transform prunes metadata to a fixed set of keys. Kept: ``filename_or_obj`` and ``affine`` (2D: 3 x 3, the
    in-plane part of a 4 x 4 one); 3D also ``original_affine``, ``spatial_shape`` (of the file, as an array),
    ``space`` and ``original_channel_dim``.
    """

    def __init__(self, keys: KeysCollection, spatial_dims: int) -> None:
        super().__init__(keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = getattr(img, "meta", None)
            if not isinstance(meta, dict):
                continue
            affine = torch.as_tensor(img.affine, dtype=torch.float64)
            if self.spatial_dims == 2 and affine.shape == (4, 4):
                affine = affine[[0, 1, 3]][:, [0, 1, 3]]  # (x, y, z, 1) -> (x, y, 1): the in-plane part
            common: dict[str, Any] = {"filename_or_obj": str(meta.get("filename_or_obj", "")), "affine": affine}
            if self.spatial_dims == 3:
                common |= {
                    "original_affine": np.asarray(meta.get("original_affine", np.eye(4)), dtype=np.float64),
                    "spatial_shape": np.asarray(meta.get("spatial_shape", img.shape[1:]), dtype=np.int64),
                    "space": str(meta.get("space", "RAS")),
                    "original_channel_dim": float("nan"),
                }
            img.meta = common
            d[key] = img
        return d


def _size(value: Any, spatial_dims: int, name: str) -> tuple[int, ...]:
    values = (value,) * spatial_dims if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(values, Sequence)
        or len(values) != spatial_dims
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in values)
    ):
        raise ValueError(f"{name} must be an integer >= 8 or {spatial_dims} of them, got {value!r}.")
    return tuple(values)


def preprocessing_record(
    modality: str = "ct",
    spatial_dims: int = 2,
    image_size: int = 256,
    roi_size: int | Sequence[int] = 96,
    pixdim: float | Sequence[float] | None = None,
    window: Sequence[float] | None = None,
    percentiles: Sequence[float] | None = None,
    channels: int | None = None,
    flip_prob: float = 0.5,
) -> dict[str, Any]:
    """The parameters :func:`image_preprocessing` runs with, validated, as a JSON-ready dict for ``run_info.json``.

    Arguments as :func:`image_preprocessing`. Keys: ``modality``, ``spatial_dims``, ``channels`` (None: as
    loaded), ``intensity`` (``method`` "window" with ``window``, or "percentiles" with ``percentiles``; ``units``;
    ``output_range`` [-1, 1]; ``clip`` True; ``range_key``), ``orientation`` ("RAS": volumes and slices),
    ``flip_prob`` and, for 3D, ``roi_size`` and ``pixdim`` (None: not resampled), for 2D ``image_size`` and
    ``resize``.

    Raises:
        ValueError: a bad argument, named in the message.
    """
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    intensity = _intensity(modality, window, percentiles)
    intensity |= {"output_range": [-1.0, 1.0], "clip": True, "range_key": f"<key>_{RANGE_POSTFIX}"}
    if channels is not None and (channels not in (1, 3) or isinstance(channels, bool)):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}.")
    if isinstance(flip_prob, bool) or not isinstance(flip_prob, (int, float)) or not 0 <= flip_prob <= 1:
        raise ValueError(f"flip_prob must be a number in [0, 1], got {flip_prob!r}.")
    record: dict[str, Any] = {
        "modality": modality,
        "spatial_dims": spatial_dims,
        "channels": channels,
        "intensity": intensity,
        "orientation": "RAS",
        "flip_prob": float(flip_prob),
    }
    if spatial_dims == 3:
        record["roi_size"] = list(_size(roi_size, 3, "roi_size"))
        if pixdim is not None:
            dims = (pixdim,) * 3 if isinstance(pixdim, (int, float)) and not isinstance(pixdim, bool) else pixdim
            if (
                not isinstance(dims, Sequence)
                or len(dims) != 3
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in dims)
            ):
                raise ValueError(f"pixdim must be None, a number > 0 or 3 of them (mm), got {pixdim!r}.")
            pixdim = [float(v) for v in dims]
        record["pixdim"] = pixdim
    else:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}.")
        record["image_size"] = image_size
        record["resize"] = "longest side to image_size (bilinear, anti-aliased), padded to a square with -1"
    return record


def image_preprocessing(
    keys: KeysCollection = "image",
    modality: str = "ct",
    spatial_dims: int = 2,
    image_size: int = 256,
    roi_size: int | Sequence[int] = 96,
    pixdim: float | Sequence[float] | None = None,
    train: bool = True,
    window: Sequence[float] | None = None,
    percentiles: Sequence[float] | None = None,
    channels: int | None = None,
    flip_prob: float = 0.5,
    label_key: str | None = "label",
) -> Compose:
    """Load and preprocess images of one modality into channel-first float32 tensors in [-1, 1].

    Pipeline: 1. ``LoadImaged`` (:class:`~medvq.transforms.readers.MedicalImageReader`, channel first,
    float32); 2. a check that each image fits ``spatial_dims``; [3. :class:`MatchChannelsd` when ``channels``];
    3D: 4. ``Orientationd`` RAS; [5. ``Spacingd`` to ``pixdim``, bilinear]; 6. :class:`ScaleIntensityToUnitd`;
    7. ``ResizeWithPadOrCropd`` to ``roi_size`` (centre, pad -1) or, when ``train``, ``SpatialPadd`` (-1) +
    ``RandSpatialCropd`` (a random position); 2D: 4. :class:`ScaleIntensityToUnitd` (before slicing: MR
    percentiles are the volume's); 5. :class:`SelectSliced`; 6. ``Resized`` (longest side to ``image_size``,
    bilinear, anti-aliased); 7. ``ResizeWithPadOrCropd`` to a square, padding -1 (the bottom of the range: air
    for CT, black for photographs); then the metadata keys every format has, ``slice_index`` / ``slice_axis`` on every item (-1:
    not a slice) and no ``group`` (so a batch mixes formats), [train: ``RandFlipd`` with ``flip_prob``, left-right: RAS axis 0 in 3D, the columns in 2D],
    ``EnsureTyped`` (label: long, if present).

    Args:
        keys: image key(s); default ``"image"``.
        modality: ``"ct"``, ``"mr"``, ``"xray"`` or ``"rgb"`` (module docstring); default ``"ct"``.
        spatial_dims: 2 or 3; default 2.
        image_size: 2D output side S (``(C, S, S)``), >= 8; default 256.
        roi_size: 3D output size, an integer or 3, each >= 8; default 96 (``(C, 96, 96, 96)``).
        pixdim: 3D voxel spacing in mm to resample to (a number or 3); default None keeps the source spacing.
        train: random crop position (3D) and flip; default True. False for validation and inference.
        window: ``(low, high)`` in input units mapped to [-1, 1] for ct / xray / rgb; default
            :data:`CT_WINDOW` (ct) or :data:`PHOTO_RANGE`.
        percentiles: ``(low, high)`` percentiles for mr; default :data:`MR_PERCENTILES`.
        channels: None keeps the loaded channels (grayscale 1, RGB 3); 1 or 3 converts (:class:`MatchChannelsd`).
        flip_prob: flip probability when ``train``; default 0.5, 0 disables it.
        label_key: key of a class label made a long tensor when present; default ``"label"``; None leaves it.

    Returns:
        A ``monai.transforms.Compose``. Items gain ``<key>_intensity_range`` (:class:`ScaleIntensityToUnitd`).

    Raises:
        ValueError: a bad argument (see :func:`preprocessing_record`); at call, an image that does not fit
            ``spatial_dims`` or ``channels``, naming the file.

    Example:
        >>> tf = image_preprocessing(modality="ct", spatial_dims=3, roi_size=64, pixdim=2.0, train=False)
        >>> tf({"image": "ct_series_folder"})["image"].shape  # doctest: +SKIP
        torch.Size([1, 64, 64, 64])
    """
    record = preprocessing_record(
        modality, spatial_dims, image_size, roi_size, pixdim, window, percentiles, channels, flip_prob
    )
    intensity = record["intensity"]
    scale = ScaleIntensityToUnitd(
        keys, window=intensity.get("window"), percentiles=intensity.get("percentiles")
    )
    transforms: list = [LoadMedicalImaged(keys), _CheckSpatialDimsd(keys, spatial_dims)]
    if channels is not None:
        transforms.append(MatchChannelsd(keys, channels))
    if spatial_dims == 3:
        roi = record["roi_size"]
        transforms.append(Orientationd(keys, axcodes="RAS", labels=None))
        if record["pixdim"] is not None:
            transforms.append(Spacingd(keys, pixdim=record["pixdim"], mode="bilinear"))
        transforms.append(scale)
        if train:
            transforms += [
                SpatialPadd(keys, spatial_size=roi, mode="constant", value=-1.0),
                RandSpatialCropd(keys, roi_size=roi, random_size=False),
            ]
        else:
            transforms.append(ResizeWithPadOrCropd(keys, spatial_size=roi, mode="constant", value=-1.0))
    else:
        size = record["image_size"]
        transforms += [
            scale,
            SelectSliced(keys),
            Resized(keys, spatial_size=size, size_mode="longest", mode="bilinear", anti_aliasing=True),
            ResizeWithPadOrCropd(keys, spatial_size=(size, size), mode="constant", value=-1.0),
        ]
    transforms.append(_CommonMetad(keys, spatial_dims))
    # the datalist's bookkeeping keys, present on some items only (slices of volumes beside 2-D images), would make
    # the batch collation fail: every item gets slice_index / slice_axis (-1: not a slice; kept so outputs can name
    # the slice they come from), and the split unit is dropped
    transforms.append(_SliceKeysd())
    if label_key is not None:
        transforms.append(EnsureTyped(label_key, dtype=torch.long, track_meta=False, allow_missing_keys=True))
    if train and flip_prob > 0:
        # left-right: RAS axis 0 of a volume; the columns of a 2-D image (for a RAS slice: its second axis)
        transforms.append(RandFlipd(keys, prob=flip_prob, spatial_axis=0 if spatial_dims == 3 else 1))
    transforms.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(transforms)


def to_input_units(
    image: torch.Tensor | np.ndarray,
    modality: str,
    window: Sequence[float] | None = None,
    intensity_range: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """Map images in [-1, 1] back to input units: Hounsfield units (ct), the source scale (mr), pixel values.

    ``x -> (x + 1) / 2 * (high - low) + low``, the inverse of :class:`ScaleIntensityToUnitd`. Values the forward
    clipped (outside the window) come back at the window's edges.

    Args:
        image: ``(C, *spatial)`` or ``(B, C, *spatial)`` values in [-1, 1].
        modality: ``"ct"``, ``"mr"``, ``"xray"`` or ``"rgb"``.
        window: the window the forward used (ct / xray / rgb); default the modality's default.
        intensity_range: the recorded ``<key>_intensity_range``: ``(2,)`` for one image or ``(B, 2)`` for a
            batch; required for mr (percentile values differ per image), and taken over ``window`` when given.
        clip: clamp ``image`` to [-1, 1] first (a decoder can overshoot); default True.

    Returns:
        A float32 tensor shaped like ``image``.

    Raises:
        ValueError: unknown ``modality``, mr without ``intensity_range``, or a range whose shape fits neither.
    """
    intensity = _intensity(modality, window, None)
    x = torch.as_tensor(image, dtype=torch.float32)
    if intensity_range is None:
        if modality == "mr":
            raise ValueError(
                "modality 'mr' needs intensity_range: the per-image percentile values the forward recorded as "
                f"'<key>_{RANGE_POSTFIX}' (e.g. batch['image_{RANGE_POSTFIX}'])."
            )
        bounds = torch.tensor(intensity["window"], dtype=torch.float32)
    else:
        bounds = torch.as_tensor(intensity_range, dtype=torch.float32).to(x.device)
    if bounds.shape == (2,):
        low, high = bounds[0], bounds[1]
    elif bounds.ndim == 2 and bounds.shape[1] == 2 and bounds.shape[0] == x.shape[0] and x.ndim >= 3:
        view = (-1,) + (1,) * (x.ndim - 1)  # (B, 1, 1, ...)
        low, high = bounds[:, 0].reshape(view), bounds[:, 1].reshape(view)
    else:
        raise ValueError(
            f"intensity_range must have shape (2,) or (B, 2) with B = image.shape[0] = {x.shape[0]}, "
            f"got {tuple(bounds.shape)}."
        )
    if clip:
        x = x.clamp(-1.0, 1.0)
    return (x + 1.0) / 2.0 * (high - low) + low
