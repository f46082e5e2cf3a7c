"""BN recalibration and evaluation of subnets, without disturbing the supernet they come from.

Every subnet is evaluated after its BN running statistics are recomputed on a fixed set of
training images (its batch statistics differ from the supernet's mixture). The helpers here
wrap :func:`oqatnets.evaluation.recalibrate_bn` for a supernet's subnets and restore the
supernet's buffers afterwards, so evaluating never changes what training or a checkpoint sees.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn as nn

from oqatnets.evaluation import CalibrationMode, evaluate, recalibrate_bn
from oqatnets.net import OQATNet
from oqatnets.spec import SubnetSpec
from oqatnets.supernet import OQATSupernet

__all__ = ['preserved_state', 'evaluate_subnet', 'calibrated_subnet', 'calibrate_model']


@contextlib.contextmanager
def preserved_state(supernet: OQATSupernet) -> Iterator[None]:
    """Restore the buffers (BN running stats), active subnet and train/eval mode on exit."""
    buffers = {name: b.clone() for name, b in supernet.named_buffers()}
    spec, training = supernet.active_spec, supernet.training
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in supernet.named_buffers():
                b.copy_(buffers[name])
        supernet.set_active_subnet(spec)
        supernet.train(training)


def evaluate_subnet(supernet: OQATSupernet, spec: SubnetSpec, *, calib_batches: Iterable,
                    eval_batches: Iterable, mode: CalibrationMode = 'batch') -> dict[str, Any]:
    """Top-1/top-5/loss of ``spec`` taken from ``supernet`` after BN recalibration (``mode``) at its resolution."""
    with preserved_state(supernet):
        supernet.set_active_subnet(spec)
        recalibrate_bn(supernet, calib_batches, resolution=spec.resolution, mode=mode)
        return evaluate(supernet, eval_batches, resolution=spec.resolution)


def calibrated_subnet(supernet: OQATSupernet, spec: SubnetSpec, *, calib_batches: Iterable,
                      mode: CalibrationMode = 'batch') -> OQATNet:
    """The static :class:`OQATNet` of ``spec`` with BN statistics recalibrated (``mode``); supernet untouched."""
    with preserved_state(supernet):
        supernet.set_active_subnet(spec)
        recalibrate_bn(supernet, calib_batches, resolution=spec.resolution, mode=mode)
        net = supernet.get_subnet(spec)
    return net.eval()


def calibrate_model(model: nn.Module, *, calib_batches: Iterable, resolution: int,
                    mode: CalibrationMode = 'batch') -> nn.Module:
    """Recalibrate a static network's BN statistics in place (``oqat calibrate`` on a zoo model); its cfg is then
    derived (other BN statistics: the source's hub id and accuracy are not its own)."""
    recalibrate_bn(model, calib_batches, resolution=resolution, mode=mode)
    if isinstance(model, OQATNet):
        model.derive_pretrained_cfg()
    return model
