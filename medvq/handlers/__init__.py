"""Ignite handlers: the deferred-quantization switch, reconstruction grids, code frequencies, progress bar."""

from medvq.handlers.checkpoint import (
    CheckpointHandler,
    ResumeFromCheckpoint,
    check_run_folder,
    latest_checkpoint,
    list_checkpoints,
    resume_command,
    tensorboard_purge_step,
)
from medvq.handlers.deferred_quantization import DeferredQuantizationHandler
from medvq.handlers.evaluation_report import EvaluationReportHandler, file_sha256
from medvq.handlers.generation_report import GenerationReportHandler
from medvq.handlers.gradient_clip import GradientClipHandler
from medvq.handlers.monitoring import CodeFrequencyHandler, ProgressBarHandler, ReconstructionGridHandler, make_grid
from medvq.handlers.sample_grid import SampleGridHandler

__all__ = [
    "CheckpointHandler",
    "CodeFrequencyHandler",
    "DeferredQuantizationHandler",
    "EvaluationReportHandler",
    "GenerationReportHandler",
    "GradientClipHandler",
    "ProgressBarHandler",
    "ReconstructionGridHandler",
    "ResumeFromCheckpoint",
    "SampleGridHandler",
    "check_run_folder",
    "file_sha256",
    "latest_checkpoint",
    "list_checkpoints",
    "make_grid",
    "resume_command",
    "tensorboard_purge_step",
]
