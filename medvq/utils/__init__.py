"""Utilities shared across medvq (distributed helpers)."""

from medvq.utils.distributed import (
    all_gather_rows,
    all_reduce_sum_,
    broadcast_,
    is_distributed,
    rank,
    unwrap_model,
    world_size,
)

__all__ = ["all_gather_rows", "all_reduce_sum_", "broadcast_", "is_distributed", "rank", "unwrap_model", "world_size"]
