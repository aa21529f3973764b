"""Generation: named conditions and writing synthetic images with provenance sidecars."""

from medvq.generation.conditions import NULL_CONDITION, condition_vectors
from medvq.generation.writer import SYNTHETIC_NOTICE, batch_seed, write_samples

__all__ = ["NULL_CONDITION", "SYNTHETIC_NOTICE", "batch_seed", "condition_vectors", "write_samples"]
