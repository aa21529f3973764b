"""Shared timing helper of the benchmark scripts (run as ``python benchmarks/<script>.py``, so this folder is on the
import path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after one warm-up call (allocator, kernels); CUDA work is
    synchronised around each call so the time covers the kernels, not only their launch."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
