"""Whole-evaluation-set metrics of a tokenizer: codebook coverage and image fidelity.

Coverage: functional forms over whole-set statistics (:mod:`medvq.metrics.coverage`) and the accumulating Ignite
metric ``CodebookCoverage``. Fidelity: FID math, offline feature extractors and streaming feature statistics
(:mod:`medvq.metrics.fid`), and the Ignite metrics ``FID`` and ``ImageFidelity`` (PSNR, SSIM, MS-SSIM, LPIPS) in
:mod:`medvq.metrics.fidelity`.
"""

from __future__ import annotations

from typing import Any

from medvq.metrics.coverage import (
    DISTANCE_CHUNK_SIZE,
    code_usage,
    covariance_from_moments,
    dead_codes,
    effective_dimension,
    mean_code_distance,
    perplexity_from_counts,
    shrinkage,
    trace_covariance,
)
from medvq.metrics.fid import (
    EXTRACTOR_KINDS,
    FID_EXTRACTOR_CONFIG_KEY,
    INCEPTION_NAME,
    INCEPTION_URL,
    ExtractorInfo,
    FeatureExtractor,
    FeatureStatistics,
    FIDResult,
    default_extractor_dirs,
    feature_statistics,
    fid_from_batches,
    frechet_distance,
    load_feature_extractor,
)

# defined in medvq.metrics.fidelity, which imports Ignite and MONAI's metrics: imported on first use (see __getattr__)
_FIDELITY_NAMES = (
    "FID",
    "ImageFidelity",
    "LPIPSStatus",
    "ScaleCoverage",
    "TokenAccuracy",
    "MS_SSIM_WEIGHTS",
    "image_fidelity",
    "lpips_status",
    "ms_ssim_min_size",
)

__all__ = [
    "DISTANCE_CHUNK_SIZE",
    "EXTRACTOR_KINDS",
    "FID",
    "FID_EXTRACTOR_CONFIG_KEY",
    "FID_REFERENCES",
    "INCEPTION_NAME",
    "INCEPTION_URL",
    "MS_SSIM_WEIGHTS",
    "CodebookCoverage",
    "ExtractorInfo",
    "FIDResult",
    "FeatureExtractor",
    "FeatureStatistics",
    "ImageFidelity",
    "LPIPSStatus",
    "code_usage",
    "covariance_from_moments",
    "dead_codes",
    "effective_dimension",
    "default_extractor_dirs",
    "feature_statistics",
    "fid_from_batches",
    "gfid_reference_statistics",
    "frechet_distance",
    "image_fidelity",
    "load_feature_extractor",
    "lpips_status",
    "mean_code_distance",
    "ms_ssim_min_size",
    "perplexity_from_counts",
    "reference_statistics",
    "shrinkage",
    "trace_covariance",
]


def __getattr__(name: str) -> Any:
    # CodebookCoverage is imported on first use: medvq.quantizers imports medvq.metrics.coverage (this package's
    # __init__ runs first), and importing Ignite there would add ~0.6 s to `import medvq.quantizers`.
    if name == "CodebookCoverage":
        from medvq.metrics.coverage_metric import CodebookCoverage

        return CodebookCoverage
    if name == "ScaleCoverage":
        from medvq.metrics.scale_coverage import ScaleCoverage

        return ScaleCoverage
    if name == "TokenAccuracy":
        from medvq.metrics.token_accuracy import TokenAccuracy

        return TokenAccuracy
    if name in ("reference_statistics", "gfid_reference_statistics", "FID_REFERENCES"):
        from medvq.metrics import fid_reference  # imports MONAI's data tools on use

        return getattr(fid_reference, name)
    if name in _FIDELITY_NAMES:
        from medvq.metrics import fidelity

        return getattr(fidelity, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
