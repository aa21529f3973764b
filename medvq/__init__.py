"""medvq: medical image tokenizers whose codebook does not collapse (deferred quantization), as a MONAI extension.

Subpackages are imported on demand (``medvq.quantizers``, ``medvq.metrics``, ...); importing ``medvq`` itself is
cheap and has no side effects.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
