"""Ignite handlers: the deferred-quantization switch, reconstruction grids, code frequencies, progress bar."""

from medvq.handlers.checkpoint import CheckpointHandler, ResumeFromCheckpoint, latest_checkpoint
from medvq.handlers.deferred_quantization import DeferredQuantizationHandler
from medvq.handlers.evaluation_report import EvaluationReportHandler, file_sha256
from medvq.handlers.monitoring import CodeFrequencyHandler, ProgressBarHandler, ReconstructionGridHandler, make_grid

__all__ = [
    "CheckpointHandler",
    "CodeFrequencyHandler",
    "DeferredQuantizationHandler",
    "EvaluationReportHandler",
    "ProgressBarHandler",
    "ReconstructionGridHandler",
    "ResumeFromCheckpoint",
    "file_sha256",
    "latest_checkpoint",
    "make_grid",
]
