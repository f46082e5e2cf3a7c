"""BN recalibration and top-1/top-5 evaluation, shared by the zoo builder, the CLI and training."""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import InvalidArgumentError

__all__ = ['recalibrate_bn', 'evaluate', 'resize_batch', 'accuracy_counts', 'CalibrationMode', 'CALIBRATION_MODES']

CalibrationMode = Literal['batch', 'population']
CALIBRATION_MODES: tuple[str, ...] = get_args(CalibrationMode)


def resize_batch(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Bilinearly resize a batch to ``resolution`` (no-op when it already has that size), antialiased as PIL's
    resize of an image file is: a subnet sees what the evaluation transform of its cfg gives it."""
    if resolution is None or (x.shape[-1] == resolution and x.shape[-2] == resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode='bilinear', align_corners=False, antialias=True)


def _batches(loader: Iterable, num_batches: int | None) -> Iterable:
    for i, batch in enumerate(loader):
        if num_batches is not None and i >= num_batches:
            break
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, *, resolution: int | None = None,
                   num_batches: int | None = None, device: 'torch.device | str | None' = None,
                   mode: CalibrationMode = 'batch') -> nn.Module:
    """Reset every BN's running statistics from the images of ``loader``; weights and step sizes are untouched.

    ``mode='batch'`` (the authors' ``set_running_statistics``): the batches pass one by one, each
    BN normalises with the batch's statistics and keeps their mean. The layers after it then
    see activations the deployed net never computes; at 2 bits that swings top-1 by up to 10
    points with the draw of images or float rounding (docs/TRAINING.md). ``mode='population'``:
    every image in one forward, so each BN normalises with exactly the statistics it keeps and
    the calibration forward is the deployed one. Its memory grows with the number of images.
    Works on static nets and on a supernet's active subnet (elastic BN slices are filled).
    """
    if mode not in CALIBRATION_MODES:
        raise InvalidArgumentError(f'mode={mode!r}: choose one of {", ".join(CALIBRATION_MODES)}')
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sums: dict[nn.Module, list] = {}

    def record(module: nn.BatchNorm2d, inputs: tuple) -> None:
        x = inputs[0]
        mean = x.mean((0, 2, 3))
        var = (x - mean[None, :, None, None]).pow_(2).mean((0, 2, 3))  # in place: the same values, one tensor fewer
        entry = sums.setdefault(module, [torch.zeros_like(mean), torch.zeros_like(var), 0])
        entry[0] += mean
        entry[1] += var
        entry[2] += 1

    batches: Iterable[torch.Tensor] = (resize_batch(images.to(device, non_blocking=True), resolution)
                                       for images in _batches(loader, num_batches))
    if mode == 'population':
        kept = list(batches)
        batches = [torch.cat(kept)] if kept else []
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m.momentum, m.training) for m in bns]
    was_training = model.training
    handles = [m.register_forward_pre_hook(record) for m in bns]
    try:
        model.eval()
        for m in bns:
            m.train()
            m.momentum = 0.0  # normalise with batch statistics, leave running stats for us to set
        seen = 0
        for images in batches:
            model(images)
            seen += 1
        if seen == 0:
            raise InvalidArgumentError('recalibrate_bn got no batches; pass a loader over some training images')
    finally:
        for h in handles:
            h.remove()
        for m, (momentum, training) in zip(bns, saved):
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
    for module, (mean_sum, var_sum, count) in sums.items():
        c = mean_sum.shape[0]
        module.running_mean[:c] = mean_sum / count
        module.running_var[:c] = var_sum / count
    return model


def accuracy_counts(logits: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of correct predictions within each top-k (k clipped to the number of classes)."""
    kmax = min(max(topk), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hits = pred.eq(target[:, None])
    return [int(hits[:, :min(k, kmax)].any(dim=1).sum()) for k in topk]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, resolution: int | None = None,
             device: 'torch.device | str | None' = None, progress: bool = False,
             desc: str = 'eval') -> dict[str, float]:
    """Top-1/top-5 (%), mean cross-entropy and throughput of ``model`` over ``loader``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    start = time.perf_counter()
    iterator = loader
    if progress:
        iterator = tqdm(loader, desc=desc, leave=False)
    try:
        for images, target in iterator:
            images, target = resize_batch(images.to(device), resolution), target.to(device)
            logits = model(images)
            loss_sum += float(F.cross_entropy(logits, target, reduction='sum'))
            c1, c5 = accuracy_counts(logits, target)
            correct1, correct5, total = correct1 + c1, correct5 + c5, total + target.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise InvalidArgumentError('evaluate got an empty loader; check the validation data')
    seconds = time.perf_counter() - start
    return {'top1': 100.0 * correct1 / total, 'top5': 100.0 * correct5 / total, 'loss': loss_sum / total,
            'images': total, 'seconds': seconds, 'images_per_s': total / seconds}
