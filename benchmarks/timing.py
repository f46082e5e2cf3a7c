"""Timing shared by the benchmarks: interleaved rounds in one process, medians, ratios against a baseline,
and the float Once-for-All supernet that the training benchmarks time as their baseline."""
from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from unittest import mock

import torch
from torch import nn

import oqatnets.quant

__all__ = ['median_times', 'nothing_absorbed', 'onednn_depthwise', 'ofa_supernet']


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


@contextlib.contextmanager
def onednn_depthwise() -> Iterator[None]:
    """Within it fused training takes every depthwise conv's weight gradient from oneDNN (autograd's own), not from
    the C kernel, to measure what the kernel saves."""
    with mock.patch.object(oqatnets.quant, '_DEPTHWISE_MIN_KERNEL', sys.maxsize):
        yield


def ofa_supernet() -> nn.Module | None:
    """The ``ofa`` package's float MobileNetV3 supernet (ks 3/5/7, expand 3/4/6, depth 2/3/4, width 1.0) in
    train mode, seeded; None, with a note, when the package is not installed (it is optional)."""
    try:
        from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
    except ImportError:
        print('note: `ofa` is not installed; skipping the Once-for-All float baseline', file=sys.stderr)
        return None
    torch.manual_seed(0)
    return OFAMobileNetV3(dropout_rate=0, width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                          depth_list=[2, 3, 4]).train()
