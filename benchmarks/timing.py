"""Timing shared by the benchmarks: interleaved rounds in one process, medians, ratios against a baseline."""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from unittest import mock

import oqatnets.quant

__all__ = ['median_times', 'nothing_absorbed']


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


@contextlib.contextmanager
def nothing_absorbed() -> Iterator[None]:
    """Within it no quantized conv absorbs the activation before it (``QuantConv2d.conv``'s ``act`` is applied
    apart, with the same values), to measure what absorbing saves."""
    with mock.patch.dict(oqatnets.quant._ACTIVATION_NAMES, clear=True):
        yield
