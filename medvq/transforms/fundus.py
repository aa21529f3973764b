"""Fundus photograph preprocessing as MONAI dictionary transforms: border crop, square pad, circular mask.

A fundus photograph is a circular field of view on a black background, in a rectangular frame whose size depends
on the camera (ODIR-5K mixes Canon, Zeiss and Kowa). The usual preprocessing (e.g. the Kaggle diabetic retinopathy
winners, Graham 2015) crops to the bounding box of the non-black pixels, pads to a square, resizes and blacks out
everything outside the circle, so that every image shows one centred disc of the same size.
:func:`fundus_preprocessing` chains these with MONAI's loading, resizing and intensity transforms and ends with
channel-first float32 tensors in [-1, 1], the input contract of medvq networks.

All transforms take channel-first arrays or tensors ``(C, H, W)`` with intensities on the 0-255 scale, as
``LoadImaged(..., ensure_channel_first=True)`` gives them. Orientation: MONAI's ``PILReader`` reverses the axes by
default and yields ``(C, W, H)`` for JPEG / PNG; :func:`fundus_preprocessing` loads with
``PILReader(reverse_indexing=False)`` so tensors are ``(C, H, W)`` as in numpy / PIL / torchvision, and an image
written back to disk is not transposed.

Caching: everything before the random flip is deterministic, so :func:`make_dataset` (MONAI ``CacheDataset`` or
``PersistentDataset``) stores preprocessed images and only the flip runs every epoch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import CacheDataset, PersistentDataset, PILReader
from monai.data.utils import pickle_hashing
from monai.transforms import (
    Compose,
    CropForeground,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandFlipd,
    Resized,
    ScaleIntensityRanged,
    SpatialPad,
)

__all__ = [
    "FOREGROUND_THRESHOLD",
    "CircularMaskd",
    "ForegroundAbove",
    "FundusBorderCropd",
    "SquarePadd",
    "fundus_preprocessing",
    "make_dataset",
]


FOREGROUND_THRESHOLD: float = 10.0
"""Default channel-mean intensity (0-255 scale) above which a pixel belongs to the field of view: JPEG noise in the
black border of ODIR images stays below it. :class:`FundusBorderCropd` crops to such pixels, and
:func:`medvq.data.build_odir_datalist` skips images that have none, so they never reach training."""


def _describe(img: Any, key: str) -> str:
    """The image's file name when its metadata has one, else the key it sits under."""
    meta = getattr(img, "meta", None)
    name = meta.get("filename_or_obj") if isinstance(meta, dict) else None
    return f"image '{name}'" if name else f"image under key '{key}'"


def _check_channel_first(img: Any, key: str, transform: str, spatial_dims: int | None = None) -> None:
    if not hasattr(img, "shape") or len(img.shape) < 3:
        raise ValueError(
            f"{transform}: {_describe(img, key)} must be channel-first (C, H, W), got shape "
            f"{tuple(getattr(img, 'shape', ()))}; load it with LoadImaged(..., ensure_channel_first=True)."
        )
    if spatial_dims is not None and len(img.shape) - 1 != spatial_dims:
        raise ValueError(
            f"{transform}: {_describe(img, key)} must have {spatial_dims} spatial dims (C, H, W), got shape "
            f"{tuple(img.shape)}."
        )


class ForegroundAbove:
    """``select_fn`` for MONAI's ``CropForeground``: pixels whose channel mean exceeds ``threshold``.

    A class rather than a lambda so pipelines pickle (DataLoader workers, ``PersistentDataset`` hashing).

    Args:
        threshold: intensity (0-255 scale) the mean over channels must exceed.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, img: Any) -> Any:
        """``(C, *spatial)`` image → ``(1, *spatial)`` boolean mask."""
        if isinstance(img, torch.Tensor):
            return img.float().mean(0, keepdim=True) > self.threshold
        return np.asarray(img, dtype=np.float32).mean(0, keepdims=True) > self.threshold


class FundusBorderCropd(MapTransform):
    """Crop each image to the bounding box of its non-black pixels (the field of view).

    A pixel belongs to the field of view when its mean over channels exceeds ``threshold`` (0-255 scale; JPEG
    noise in the black border of ODIR images stays below ~10). Uses MONAI's ``CropForeground`` with
    ``allow_smaller=True``; unlike ``CropForegroundd``, each key is cropped by its own foreground.

    Args:
        keys: keys of the images to crop.
        threshold: channel-mean intensity above which a pixel is foreground, >= 0; default
            :data:`FOREGROUND_THRESHOLD` (10).
        margin: pixels kept around the box (clipped at the image border), >= 0; default 0.
        allow_missing_keys: skip absent keys instead of raising KeyError; default False.

    Raises:
        ValueError (at call): an image with no pixel above ``threshold`` (all black, or already scaled to
            [0, 1]); the message names the file when the image carries MONAI metadata.
            :func:`medvq.data.build_odir_datalist` skips such files when it builds the datalist.
    """

    def __init__(
        self,
        keys: KeysCollection,
        threshold: float = FOREGROUND_THRESHOLD,
        margin: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
            raise ValueError(f"threshold must be a number >= 0 (0-255 intensity scale), got {threshold!r}.")
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise ValueError(f"margin must be an integer >= 0, got {margin!r}.")
        self.select_fn = ForegroundAbove(threshold)
        self.cropper = CropForeground(select_fn=self.select_fn, margin=margin, allow_smaller=True)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            _check_channel_first(img, key, type(self).__name__)
            if not bool(self.select_fn(img).any()):
                raise ValueError(
                    f"FundusBorderCropd: {_describe(img, key)} has no pixel whose channel mean exceeds "
                    f"{self.select_fn.threshold:g} (0-255 scale): it is all black or not on the 0-255 scale. "
                    "Remove the file from the datalist, or lower threshold."
                )
            d[key] = self.cropper(img)
        return d


class SquarePadd(MapTransform):
    """Pad each image with zeros to a square (a cube in 3D), keeping it centred.

    Every spatial side becomes the longest one; the padding is split evenly between both ends (the extra pixel,
    if any, at the end). Uses MONAI's ``SpatialPad(method="symmetric")``, so the padding is traced in a MetaTensor.

    Args:
        keys: keys of the images to pad.
        allow_missing_keys: skip absent keys instead of raising KeyError; default False.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            _check_channel_first(img, key, type(self).__name__)
            side = max(img.shape[1:])
            d[key] = SpatialPad(spatial_size=[side] * (len(img.shape) - 1), method="symmetric", mode="constant")(img)
        return d


class CircularMaskd(MapTransform):
    """Set every pixel outside the circle inscribed in the image to zero.

    The circle is centred in the image with radius ``min(H, W) / 2 - margin``; a pixel is inside when its centre
    is. On a square image this is the fundus field of view after :class:`FundusBorderCropd` and
    :class:`SquarePadd`; it removes the bright rim artefacts some cameras leave and makes every image's border
    identical. 2D only.

    Args:
        keys: keys of the images to mask.
        margin: pixels by which the radius is shrunk, >= 0; default 0.
        allow_missing_keys: skip absent keys instead of raising KeyError; default False.

    Raises:
        ValueError (at call): an image that is not ``(C, H, W)`` or smaller than ``2 * margin``.
    """

    def __init__(self, keys: KeysCollection, margin: float = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
            raise ValueError(f"margin must be a number >= 0 (pixels), got {margin!r}.")
        self.margin = float(margin)

    def mask(self, height: int, width: int) -> torch.Tensor:
        """``(H, W)`` boolean mask, True inside the circle."""
        radius = min(height, width) / 2 - self.margin
        y = torch.arange(height, dtype=torch.float64) + 0.5 - height / 2  # pixel centres, origin at the middle
        x = torch.arange(width, dtype=torch.float64) + 0.5 - width / 2
        return y[:, None] ** 2 + x[None, :] ** 2 <= radius**2

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            _check_channel_first(img, key, type(self).__name__, spatial_dims=2)
            height, width = img.shape[1:]
            if min(height, width) <= 2 * self.margin:
                raise ValueError(
                    f"CircularMaskd: {_describe(img, key)} of size {height}x{width} is too small for margin "
                    f"{self.margin:g}."
                )
            inside = self.mask(height, width)  # (H, W)
            if isinstance(img, torch.Tensor):
                d[key] = img * inside.to(device=img.device, dtype=img.dtype)  # a MetaTensor keeps its metadata
            else:
                d[key] = img * inside.numpy().astype(img.dtype)
        return d


def _to_rgb(image: Any) -> Any:
    """PIL converter: every photograph becomes 3-channel RGB (grayscale / palette / RGBA inputs included)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def fundus_preprocessing(
    keys: KeysCollection = "image",
    image_size: int = 256,
    train: bool = True,
    threshold: float = FOREGROUND_THRESHOLD,
    flip_prob: float = 0.5,
    label_key: str | None = "label",
) -> Compose:
    """Load and preprocess fundus photographs (JPEG / PNG paths) into ``(3, S, S)`` float32 tensors in [-1, 1].

    Pipeline (deterministic up to the flip, so caching datasets store its output):
    ``LoadImaged`` (``PILReader(reverse_indexing=False)``, RGB, channel first: ``(3, H, W)``) →
    ``EnsureTyped`` (float32) → :class:`FundusBorderCropd` → :class:`SquarePadd` → ``Resized`` (``(S, S)``,
    ``mode="area"``: averaging, no aliasing when shrinking multi-megapixel photographs) → :class:`CircularMaskd` →
    ``ScaleIntensityRanged`` (0..255 → -1..1, clipped; the masked outside becomes -1) → ``EnsureTyped`` on
    ``label_key`` (plain float32 tensor, if present) → [train: ``RandFlipd`` left-right with ``flip_prob``] →
    ``EnsureTyped`` (float32).

    Args:
        keys: image key(s); default ``"image"``.
        image_size: output side S in pixels, >= 8; default 256 (the paper-scale setting).
        train: add the random horizontal flip; default True. Use False for validation and inference.
        threshold: border-crop threshold on the 0-255 scale (:class:`FundusBorderCropd`); default
            :data:`FOREGROUND_THRESHOLD` (10). Pass the same value to ``build_odir_datalist(foreground_threshold=)``
            so the images it keeps all pass the crop.
        flip_prob: probability of the flip when ``train``; default 0.5 (0 disables it).
        label_key: key of a label list to turn into a float32 tensor (absent keys are fine); default ``"label"``;
            ``None`` leaves labels alone.

    Returns:
        A ``monai.transforms.Compose``; images come out as MetaTensors whose ``meta["filename_or_obj"]`` is the
        source file.

    Example:
        >>> from monai.data import DataLoader
        >>> ds = make_dataset(items, fundus_preprocessing(image_size=256), cache_dir="cache/odir256")  # doctest: +SKIP
        >>> batch = next(iter(DataLoader(ds, batch_size=8)))  # doctest: +SKIP
        >>> batch["image"].shape  # (8, 3, 256, 256), values in [-1, 1]  # doctest: +SKIP
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}.")
    if isinstance(flip_prob, bool) or not isinstance(flip_prob, (int, float)) or not 0 <= flip_prob <= 1:
        raise ValueError(f"flip_prob must be a number in [0, 1], got {flip_prob!r}.")
    transforms: list = [
        LoadImaged(keys, reader=PILReader(converter=_to_rgb, reverse_indexing=False), ensure_channel_first=True),
        EnsureTyped(keys, dtype=torch.float32),
        FundusBorderCropd(keys, threshold=threshold),
        SquarePadd(keys),
        Resized(keys, spatial_size=(image_size, image_size), mode="area"),
        CircularMaskd(keys),
        ScaleIntensityRanged(keys, a_min=0.0, a_max=255.0, b_min=-1.0, b_max=1.0, clip=True),
    ]
    if label_key is not None:
        transforms.append(EnsureTyped(label_key, dtype=torch.float32, track_meta=False, allow_missing_keys=True))
    if train and flip_prob > 0:
        transforms.append(RandFlipd(keys, prob=flip_prob, spatial_axis=1))  # axis 1 of (H, W): left-right
    transforms.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(transforms)


class _PersistentDataset(PersistentDataset):
    """MONAI's ``PersistentDataset`` whose items look the same whether they came from the cache or not.

    MONAI's returns a freshly computed item with its metadata (MetaTensors: a 2D image's 3x3 affine) but a cached one
    as stored, without it (plain tensors, which the random transforms after the cache turn into MetaTensors with a
    default 4x4 affine). A batch mixing both fails to collate ("stack expects each tensor to be equal size, but got
    [3, 3] ... and [4, 4]"): it happens whenever an epoch sees an item for the first time while others come from the
    cache (``drop_last`` left it out of epoch 1, the deferred switch's pass over the data, a resumed run). Here both
    paths drop the metadata, as the cache stores it.
    """

    def _cachecheck(self, item_transformed: Any) -> Any:
        from monai.utils import convert_to_tensor

        return convert_to_tensor(super()._cachecheck(item_transformed), convert_numeric=False,
                                 track_meta=self.track_meta)


def make_dataset(
    datalist: Sequence[dict],
    transform: Compose,
    cache_dir: str | os.PathLike | None = None,
    cache_rate: float = 1.0,
    num_workers: int = 1,
    progress: bool = True,
) -> CacheDataset | PersistentDataset:
    """A dataset that caches the deterministic head of ``transform`` (everything before its first random transform).

    With ``cache_dir``: a MONAI ``PersistentDataset`` that stores each preprocessed item as a ``.pt`` file, kept
    across runs; its file names hash the item AND the deterministic transforms (``hash_transform=pickle_hashing``),
    so changing e.g. ``image_size`` writes a new cache instead of reading stale images. Items are stored without
    their metadata (``PersistentDataset``'s default) and returned without it also when computed afresh, so cached and
    new items batch together; use the in-memory cache when a later step needs ``meta["filename_or_obj"]``. Without ``cache_dir``: a MONAI ``CacheDataset`` filled in memory at construction
    (256 px RGB float32: 0.75 MiB per image, about 5 GiB for ODIR's 7,000).

    Args:
        datalist: items as built by :func:`medvq.data.build_odir_datalist` or
            :func:`medvq.data.make_fundus_dataset`.
        transform: e.g. :func:`fundus_preprocessing`.
        cache_dir: folder of the persistent cache (created); default None (in-memory cache).
        cache_rate: fraction of items cached in memory, in [0, 1]; ignored with ``cache_dir``; default 1.0.
        num_workers: threads filling the in-memory cache; default 1.
        progress: show MONAI's progress bar while the in-memory cache fills; default True.

    Returns:
        ``monai.data.PersistentDataset`` or ``monai.data.CacheDataset``.

    Raises:
        ValueError: ``cache_rate`` outside [0, 1] or ``num_workers`` < 1.
    """
    if isinstance(cache_rate, bool) or not isinstance(cache_rate, (int, float)) or not 0 <= cache_rate <= 1:
        raise ValueError(f"cache_rate must be a number in [0, 1], got {cache_rate!r}.")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}.")
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return _PersistentDataset(list(datalist), transform, cache_dir=cache_dir, hash_transform=pickle_hashing)
    return CacheDataset(list(datalist), transform, cache_rate=cache_rate, num_workers=num_workers, progress=progress)
