"""Datalist builders: ODIR-5K (per-eye labels, unusable images reported, split by patient), images of any modality
from a folder or a Decathlon-style datalist (PNG / JPEG, DICOM files and series, NIfTI; 2D slices or 3D volumes,
split by group), synthetic fundus images.

Items are MONAI datalist dicts, ``{"image": path, ...}``, ready for ``monai.data.Dataset`` and the transforms of
:mod:`medvq.transforms`; :func:`write_datalist_json` saves them for ``monai.data.load_decathlon_datalist``.
"""

from __future__ import annotations

from medvq.data.folders import build_folder_datalist
from medvq.data.imagenet import (
    IMAGENET100,
    IMAGENET100_WNIDS,
    ImageNetDatalist,
    build_imagenet100_datalist,
    make_imagenet100_tree,
)
from medvq.data.images import (
    FOREGROUND_LEVEL,
    GROUP_BY,
    MIN_SLICE_FOREGROUND,
    ImageDatalist,
    build_image_datalist,
    median_spacing,
)
from medvq.data.odir import (
    CLASS_NAMES,
    CLASSES,
    UNUSABLE_KEYWORDS,
    DatalistSplit,
    OdirDatalist,
    OdirLayout,
    build_odir_datalist,
    detect_odir_layout,
    keywords_to_label,
    split_datalist,
    write_datalist_json,
)
from medvq.data.sources import DATA_FORMATS, tokenizer_datalists
from medvq.data.synthetic import make_fundus_dataset
from medvq.data.tokens import tokenize_datalist


def __getattr__(name: str):
    # imported on first use, so `python -m medvq.data.examples` does not find its module already imported
    if name == "make_example_dataset":
        from medvq.data.examples import make_example_dataset

        return make_example_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "DATA_FORMATS",
    "FOREGROUND_LEVEL",
    "GROUP_BY",
    "IMAGENET100",
    "IMAGENET100_WNIDS",
    "MIN_SLICE_FOREGROUND",
    "UNUSABLE_KEYWORDS",
    "DatalistSplit",
    "ImageDatalist",
    "ImageNetDatalist",
    "OdirDatalist",
    "OdirLayout",
    "build_folder_datalist",
    "build_image_datalist",
    "build_imagenet100_datalist",
    "build_odir_datalist",
    "detect_odir_layout",
    "keywords_to_label",
    "make_example_dataset",
    "make_fundus_dataset",
    "make_imagenet100_tree",
    "median_spacing",
    "split_datalist",
    "tokenize_datalist",
    "tokenizer_datalists",
    "write_datalist_json",
]
