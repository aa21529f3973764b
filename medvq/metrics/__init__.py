"""Codebook coverage metrics: functional forms over whole-set statistics, and the accumulating Ignite metric.

Fidelity metrics (FID, PSNR, SSIM, LPIPS) come later.
"""

from __future__ import annotations

from typing import Any

from medvq.metrics.coverage import (
    DISTANCE_CHUNK_SIZE,
    code_usage,
    dead_codes,
    mean_code_distance,
    perplexity_from_counts,
    shrinkage,
    trace_covariance,
)

__all__ = [
    "CodebookCoverage",
    "DISTANCE_CHUNK_SIZE",
    "code_usage",
    "dead_codes",
    "mean_code_distance",
    "perplexity_from_counts",
    "shrinkage",
    "trace_covariance",
]


def __getattr__(name: str) -> Any:
    # CodebookCoverage is imported on first use: medvq.quantizers imports medvq.metrics.coverage (this package's
    # __init__ runs first), and importing Ignite there would add ~0.6 s to `import medvq.quantizers`.
    if name == "CodebookCoverage":
        from medvq.metrics.coverage_metric import CodebookCoverage

        return CodebookCoverage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
