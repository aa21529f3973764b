"""MONAI dictionary transforms: fundus photographs (border crop, square pad, circular mask, full pipeline) and images
of any modality (readers for PNG / JPEG, DICOM files and series, NIfTI; CT / MR / X-ray / RGB intensity to [-1, 1]
and back)."""

from __future__ import annotations

from medvq.transforms.fundus import (
    FOREGROUND_THRESHOLD,
    CircularMaskd,
    ForegroundAbove,
    FundusBorderCropd,
    SquarePadd,
    fundus_preprocessing,
    make_dataset,
)
from medvq.transforms.modality import (
    CT_WINDOW,
    MODALITIES,
    MR_PERCENTILES,
    PHOTO_RANGE,
    MatchChannelsd,
    ScaleIntensityToUnitd,
    SelectSliced,
    image_preprocessing,
    preprocessing_record,
    to_input_units,
)
from medvq.transforms.natural import VAR_RESIZE_RATIO, ResizeShorterSided, natural_preprocessing
from medvq.transforms.pipelines import TOKENIZER_MODALITIES, preprocessing_settings, tokenizer_preprocessing
from medvq.transforms.readers import (
    IMAGE_SUFFIXES,
    DicomSeriesReader,
    LoadMedicalImaged,
    MedicalImageReader,
    image_kind,
)

__all__ = [
    "CT_WINDOW",
    "FOREGROUND_THRESHOLD",
    "IMAGE_SUFFIXES",
    "MODALITIES",
    "MR_PERCENTILES",
    "PHOTO_RANGE",
    "TOKENIZER_MODALITIES",
    "VAR_RESIZE_RATIO",
    "CircularMaskd",
    "DicomSeriesReader",
    "ForegroundAbove",
    "FundusBorderCropd",
    "LoadMedicalImaged",
    "MatchChannelsd",
    "MedicalImageReader",
    "ResizeShorterSided",
    "ScaleIntensityToUnitd",
    "SelectSliced",
    "SquarePadd",
    "fundus_preprocessing",
    "image_kind",
    "image_preprocessing",
    "make_dataset",
    "natural_preprocessing",
    "preprocessing_record",
    "preprocessing_settings",
    "to_input_units",
    "tokenizer_preprocessing",
]
