"""Timing shared by the benchmarks: interleaved rounds in one process, medians, ratios against a baseline."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ['median_times']


def median_times(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds of each callable over ``rounds``, interleaved so machine noise hits all alike."""
    for fn in fns.values():  # warm-up: allocator, caches, LSQ init, onnxruntime's first run
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}
