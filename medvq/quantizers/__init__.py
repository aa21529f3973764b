"""Quantizers: exact chunked nearest-code search, k-means, and the deferred-quantization VectorQuantizer."""

from medvq.quantizers.kmeans import KMeansResult, kmeans
from medvq.quantizers.multiscale import MultiScaleQuantizerOutput, MultiScaleResidualQuantizer
from medvq.quantizers.search import DEFAULT_CHUNK_SIZE, NearestCodes, nearest_codes
from medvq.quantizers.vector_quantizer import ActivationReport, QuantizerOutput, VectorQuantizer

__all__ = [
    "ActivationReport",
    "DEFAULT_CHUNK_SIZE",
    "KMeansResult",
    "MultiScaleQuantizerOutput",
    "MultiScaleResidualQuantizer",
    "NearestCodes",
    "QuantizerOutput",
    "VectorQuantizer",
    "kmeans",
    "nearest_codes",
]
