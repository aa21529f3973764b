"""Ignite handlers: the deferred-quantization switch, reconstruction grids, code frequencies, progress bar."""

from medvq.handlers.deferred_quantization import DeferredQuantizationHandler
from medvq.handlers.monitoring import CodeFrequencyHandler, ProgressBarHandler, ReconstructionGridHandler, make_grid

__all__ = [
    "CodeFrequencyHandler",
    "DeferredQuantizationHandler",
    "ProgressBarHandler",
    "ReconstructionGridHandler",
    "make_grid",
]
