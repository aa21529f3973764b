"""Generation: named conditions, writing synthetic images (2D PNG, 3D NIfTI) with provenance sidecars, and the
memorization check of synthetic images against the training images."""

from medvq.generation.conditions import NULL_CONDITION, condition_vectors
from medvq.generation.memorization import (
    Calibration,
    MemorizationReport,
    SpaceResult,
    calibrate,
    memorization_check,
    nearest_neighbours,
    pixel_features,
    tokenizer_features,
    tokenizer_reconstruction,
)
from medvq.generation.sample_check import check_sample_memorization
from medvq.generation.writer import (
    NIFTI_DESCRIPTION,
    SYNTHETIC_NOTICE,
    batch_seed,
    provenance_info,
    sample_batches,
    sample_record,
    sample_views,
    sampling_settings,
    write_samples,
)

__all__ = [
    "NIFTI_DESCRIPTION",
    "NULL_CONDITION",
    "SYNTHETIC_NOTICE",
    "Calibration",
    "MemorizationReport",
    "SpaceResult",
    "batch_seed",
    "calibrate",
    "check_sample_memorization",
    "condition_vectors",
    "memorization_check",
    "nearest_neighbours",
    "pixel_features",
    "provenance_info",
    "sample_batches",
    "sample_record",
    "sample_views",
    "sampling_settings",
    "tokenizer_features",
    "tokenizer_reconstruction",
    "write_samples",
]
