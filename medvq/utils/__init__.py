"""Utilities shared across medvq: distributed helpers, and the start-up checks of a bundle's settings."""

from medvq.utils.checks import (
    SettingsError,
    check_generator_settings,
    check_tokenizer_settings,
    check_training_data,
)
from medvq.utils.distributed import (
    all_gather_rows,
    all_reduce_sum_,
    broadcast_,
    is_distributed,
    rank,
    unwrap_model,
    world_size,
)

__all__ = [
    "SettingsError",
    "all_gather_rows",
    "all_reduce_sum_",
    "broadcast_",
    "check_generator_settings",
    "check_tokenizer_settings",
    "check_training_data",
    "is_distributed",
    "rank",
    "unwrap_model",
    "world_size",
]
