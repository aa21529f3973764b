"""Quantizers: exact chunked nearest-code search, k-means, and the deferred-quantization VectorQuantizer."""

from medvq.quantizers.kmeans import KMeansResult, kmeans
from medvq.quantizers.multiscale import (
    MultiScaleQuantizerOutput,
    MultiScaleResidualQuantizer,
    fold_codebook_projections,
)
from medvq.quantizers.search import DEFAULT_CHUNK_SIZE, NearestCodes, nearest_codes
from medvq.quantizers.vector_quantizer import (
    ACTIVE_FLAG,
    ActivationReport,
    QuantizerOutput,
    VectorQuantizer,
    upgrade_state_dict,
)

__all__ = [
    "ACTIVE_FLAG",
    "DEFAULT_CHUNK_SIZE",
    "ActivationReport",
    "KMeansResult",
    "MultiScaleQuantizerOutput",
    "MultiScaleResidualQuantizer",
    "NearestCodes",
    "QuantizerOutput",
    "VectorQuantizer",
    "fold_codebook_projections",
    "kmeans",
    "nearest_codes",
    "upgrade_state_dict",
]
