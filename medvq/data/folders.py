"""Datalists from a plain folder of images (JPEG, PNG, BMP, TIFF, DICOM, NIfTI), e.g. for inference.

Files are listed in sorted order, one item ``{"image": absolute path}`` each; MONAI's ``LoadImaged`` reads every
listed format (PIL for 2D photographs, pydicom for DICOM, nibabel for NIfTI). Limitations: a DICOM series is listed
file by file (one item per slice file), not as one volume; files are not opened here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_EXTENSIONS", "build_folder_datalist"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")
"""File name endings listed by default (compared case-insensitively)."""


def build_folder_datalist(
    directory: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True
) -> list[dict[str, Any]]:
    """List the images under ``directory`` as datalist items ``{"image": absolute path}``.

    Files with other endings are not listed; their number and first names are reported by ``logging.warning``.

    Args:
        directory: folder to scan.
        extensions: file name endings to list, with the dot (``".nii.gz"`` works); default :data:`IMAGE_EXTENSIONS`.
        recursive: also scan sub-folders; default True.

    Returns:
        Items in sorted path order.

    Raises:
        FileNotFoundError: ``directory`` does not exist or holds no file with one of ``extensions``.
        ValueError: an empty ``extensions`` or one without a leading dot.
    """
    if isinstance(extensions, str) or not extensions or not all(str(e).startswith(".") for e in extensions):
        raise ValueError(f"extensions must be a non-empty sequence of endings such as '.png', got {extensions!r}.")
    root = Path(directory).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder '{root}' does not exist; pass the folder that holds the images.")
    endings = tuple(e.lower() for e in extensions)
    files = sorted(p for p in (root.rglob("*") if recursive else root.iterdir()) if p.is_file())
    listed = [p for p in files if p.name.lower().endswith(endings)]
    ignored = [p for p in files if not p.name.lower().endswith(endings)]
    if not listed:
        raise FileNotFoundError(f"no file ending in {list(endings)} under '{root}' (recursive={recursive}).")
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        more = f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
        logger.warning(
            "'%s': %d file(s) not listed (not one of %s): %s%s", root, len(ignored), list(endings), shown, more
        )
    return [{"image": str(p)} for p in listed]
