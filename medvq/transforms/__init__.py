"""MONAI dictionary transforms for fundus photographs: border crop, square pad, circular mask, full pipeline."""

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

__all__ = [
    "FOREGROUND_THRESHOLD",
    "CircularMaskd",
    "ForegroundAbove",
    "FundusBorderCropd",
    "SquarePadd",
    "fundus_preprocessing",
    "make_dataset",
]
