"""Ignite handlers: the deferred-quantization switch, codebook statistics and image grids for TensorBoard."""

from medvq.handlers.deferred_quantization import DeferredQuantizationHandler

__all__ = ["DeferredQuantizationHandler"]
