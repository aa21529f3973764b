"""VAR's preprocessing of natural photographs (ImageNet): shorter side to 1.125x the size (Lanczos), a crop, [-1, 1].

VAR (``utils/data.py``, ``build_dataset``) trains on ``Resize(round(1.125 * size), LANCZOS)`` then ``RandomCrop(size)``
and evaluates on ``CenterCrop(size)`` of the same resize, with ``ToTensor`` and ``x * 2 - 1``; no flip by default.
:func:`natural_preprocessing` does the same with MONAI transforms around one own transform,
:class:`ResizeShorterSided`: MONAI's ``Resize`` has no Lanczos filter and no "shorter side" mode, and VAR's numbers
are for PIL's Lanczos on 8-bit pixels, so the resize is PIL's on the uint8 image (the rest is MONAI's:
``LoadImaged`` with ``PILReader``, ``RandSpatialCropd`` / ``CenterSpatialCropd``, ``ScaleIntensityRanged``).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandSpatialCropd,
    ScaleIntensityRanged,
)
from PIL import Image

__all__ = ["VAR_RESIZE_RATIO", "ResizeShorterSided", "natural_preprocessing"]

VAR_RESIZE_RATIO = 1.125
"""VAR's ``mid_reso``: the shorter side is resized to ``round(1.125 * size)`` before the crop."""


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


class ResizeShorterSided(MapTransform):
    """Resize ``(C, H, W)`` 8-bit images so that the shorter side is ``size`` pixels, with PIL's Lanczos filter,
    optionally followed by torchvision's centre crop.

    The longer side is ``round(size * long / short)`` (torchvision's rule for ``Resize(int)``). Values are rounded and
    clipped to 0..255 first (the images are 8-bit photographs); the output is uint8, so a cache of it (the bundles'
    ``PersistentDataset``) takes a quarter of float32's room: ImageNet-100's 126,689 training images at 256 px
    (shorter side 288) are about 42 GB instead of 168 GB. ``center_crop`` crops
    ``(S, S)`` starting at ``round((H - S) / 2)``, ``round((W - S) / 2)`` as torchvision's ``CenterCrop``; MONAI's
    ``CenterSpatialCrop`` starts at ``H // 2 - S // 2``, one pixel off when ``H - S`` is 3 mod 4, so the evaluation
    crop is done here to match VAR's images exactly.

    Args:
        keys: image keys.
        size: the shorter side in pixels, >= 1.
        center_crop: the side of a centre crop after the resize (<= ``size``), or None.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: a bad ``size``; at call, an image that is not ``(C, H, W)`` with 1 or 3 channels.
    """

    def __init__(
        self, keys: KeysCollection, size: int, center_crop: int | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}.")
        if center_crop is not None and (isinstance(center_crop, bool) or not isinstance(center_crop, int)
                                        or not 1 <= center_crop <= size):
            raise ValueError(f"center_crop must be None or an integer in [1, size={size}], got {center_crop!r}.")
        self.size, self.center_crop = size, center_crop

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim != 3 or img.shape[0] not in (1, 3):
                raise ValueError(f"ResizeShorterSided: '{key}' must be (C, H, W) with 1 or 3 channels, got "
                                 f"{tuple(img.shape)}.")
            c, h, w = (int(s) for s in img.shape)
            scale = self.size / min(h, w)
            out_w, out_h = (self.size, round(h * scale)) if w <= h else (round(w * scale), self.size)
            pixels = np.clip(np.rint(torch.as_tensor(img).cpu().numpy()), 0, 255).astype(np.uint8)  # (C, H, W)
            pil = Image.fromarray(pixels[0] if c == 1 else np.moveaxis(pixels, 0, -1))
            resized = np.asarray(pil.resize((out_w, out_h), Image.Resampling.LANCZOS), dtype=np.uint8)
            resized = resized[None] if c == 1 else np.moveaxis(resized, -1, 0)
            if self.center_crop is not None:
                side = self.center_crop
                top, left = round((out_h - side) / 2), round((out_w - side) / 2)  # torchvision's CenterCrop
                resized = resized[:, top:top + side, left:left + side]
            meta = dict(getattr(img, "meta", {}))
            meta["spatial_shape"] = np.asarray(resized.shape[1:])
            d[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(resized)), meta=meta)
        return d


def natural_preprocessing(
    keys: KeysCollection = "image",
    image_size: int = 256,
    train: bool = True,
    resize_ratio: float = VAR_RESIZE_RATIO,
    label_key: str | None = "label",
) -> Compose:
    """Load RGB photographs into ``(3, S, S)`` float32 tensors in [-1, 1], as VAR does (module docstring).

    Pipeline: ``LoadImaged`` (``PILReader``, RGB, channel first) → :class:`ResizeShorterSided` (``round(resize_ratio
    * image_size)``, Lanczos; not training: torchvision's centre crop) → [train: ``RandSpatialCropd``] →
    ``ScaleIntensityRanged`` (0..255 → -1..1) → ``EnsureTyped`` (label: long, if present; image float32). The head up
    to the resize is deterministic, so ``medvq.transforms.make_dataset`` caches the decoded, resized images.

    Args:
        keys: image key(s); default ``"image"``.
        image_size: output side S, >= 8; default 256.
        train: a random crop position (else the centre); default True.
        resize_ratio: shorter side over S before the crop, >= 1; default VAR's 1.125.
        label_key: the class-index key made a long tensor when present; None leaves it.

    Raises:
        ValueError: a bad argument, named.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}.")
    if isinstance(resize_ratio, bool) or not isinstance(resize_ratio, (int, float)) or resize_ratio < 1:
        raise ValueError(f"resize_ratio must be a number >= 1, got {resize_ratio!r}.")
    crop = (image_size, image_size)
    transforms: list = [
        LoadImaged(keys, reader=PILReader(converter=_to_rgb, reverse_indexing=False), ensure_channel_first=True),
        EnsureTyped(keys, dtype=torch.float32),
        ResizeShorterSided(keys, size=round(resize_ratio * image_size), center_crop=None if train else image_size),
    ]
    if train:
        transforms.append(RandSpatialCropd(keys, roi_size=crop, random_size=False))
    transforms.append(ScaleIntensityRanged(keys, a_min=0.0, a_max=255.0, b_min=-1.0, b_max=1.0, clip=True))
    if label_key is not None:
        transforms.append(EnsureTyped(label_key, dtype=torch.long, track_meta=False, allow_missing_keys=True))
    transforms.append(EnsureTyped(keys, dtype=torch.float32))
    return Compose(transforms)
