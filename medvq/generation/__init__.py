"""Generation: named conditions and writing synthetic images (2D PNG, 3D NIfTI) with provenance sidecars."""

from medvq.generation.conditions import NULL_CONDITION, condition_vectors
from medvq.generation.writer import NIFTI_DESCRIPTION, SYNTHETIC_NOTICE, batch_seed, sample_views, write_samples

__all__ = [
    "NIFTI_DESCRIPTION",
    "NULL_CONDITION",
    "SYNTHETIC_NOTICE",
    "batch_seed",
    "condition_vectors",
    "sample_views",
    "write_samples",
]
