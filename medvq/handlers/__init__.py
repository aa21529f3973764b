"""Ignite handlers: the deferred-quantization switch, reconstruction grids, code frequencies, progress bar, TensorBoard
layout (tag groups, run settings, hparams)."""

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
from medvq.handlers.memorization import MemorizationHandler
from medvq.handlers.monitoring import CodeFrequencyHandler, ProgressBarHandler, ReconstructionGridHandler, make_grid
from medvq.handlers.sample_grid import SampleGridHandler
from medvq.handlers.tensorboard import MetricsWriter, RunSummaryHandler, grouped_scalars, grouped_tag

__all__ = [
    "CheckpointHandler",
    "CodeFrequencyHandler",
    "DeferredQuantizationHandler",
    "EvaluationReportHandler",
    "GenerationReportHandler",
    "GradientClipHandler",
    "MemorizationHandler",
    "MetricsWriter",
    "ProgressBarHandler",
    "ReconstructionGridHandler",
    "ResumeFromCheckpoint",
    "RunSummaryHandler",
    "SampleGridHandler",
    "check_run_folder",
    "file_sha256",
    "grouped_scalars",
    "grouped_tag",
    "latest_checkpoint",
    "list_checkpoints",
    "make_grid",
    "resume_command",
    "tensorboard_purge_step",
]
