"""Finetuning a static quantized subnet (or zoo model) on a new data set, bits and step sizes kept.

The classifier is replaced when the class count differs (its step-free float layer starts
fresh); every quantized conv keeps its bit-width and its trained step sizes, which go on
learning with LSQ. Optionally a teacher (any model taking the same images, e.g. the float or
larger network) adds a soft-target distillation term.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from oqatnets.errors import InvalidArgumentError
from oqatnets.evaluation import evaluate, resize_batch
from oqatnets.net import OQATNet
from oqatnets.quant import set_fused_quantizer
from oqatnets.supernet import OQATSupernet

from .checkpoint import seeded_global_rng
from .distributed import DistContext
from .loop import Amp, LoopSettings, TrainResult, finish_run, resolve_fused_quantizer, run_loop
from .losses import soft_target_loss
from .optim import build_optimizer, build_scheduler
from .recipes import Recipe

__all__ = ['finetune']


def finetune(*, model: nn.Module, train_set: Dataset, recipe: Recipe, epochs: int, resolution: int,
             out_dir: 'str | Path', ctx: DistContext, lr: float | None = None, teacher: nn.Module | None = None,
             kd_ratio: float = 1.0, kd_temperature: float = 1.0, resume: bool = False, seed: int = 0,
             checkpoint_every: int = 0, log_every: int = 20, amp: bool = True, fused_quantizer: bool | None = None,
             eval_batches: Iterable | None = None, run_info: dict[str, Any] | None = None,
             loop_options: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` in place on ``train_set`` at ``resolution`` for ``epochs`` (LR ``lr`` or the recipe's).

    The model becomes what it was trained to be: its spec takes ``resolution`` (so its profile, cfg and
    saved folder say the input size it was trained at) and its cfg is derived (the weights are no longer
    its source's: no hub id or accuracy of the source is kept).

    ``loop_options`` are further :class:`LoopSettings` fields (workers, pin_memory, clip_grad, tensorboard,
    ema_decay) and ``optimizer`` (a timm optimizer name; default the recipe's SGD).
    ``fused_quantizer``: train through the one-pass LSQ kernels (True), eager (False), or the default
    (None: fused on the CPU when the C kernel builds; :func:`~oqatnets.training.loop.resolve_fused_quantizer`).

    ``eval_batches`` (validation images) give a top-1 per epoch. Writes ``checkpoint.pt``,
    ``metrics.jsonl`` and ``summary.json`` under ``out_dir`` on the main rank.
    """
    if epochs < 1:
        raise InvalidArgumentError(f'finetuning needs --epochs 1 or more, got {epochs}')
    if isinstance(model, OQATSupernet):
        raise InvalidArgumentError('finetune takes a static subnet; extract one first (supernet.get_subnet(spec)) '
                         'or search the supernet with `oqat search`')
    if recipe.batch_size % ctx.world_size:
        raise InvalidArgumentError(f'batch size {recipe.batch_size} does not split over {ctx.world_size} ranks')
    lr = recipe.finetune_lr if lr is None else lr
    if not lr > 0:
        raise InvalidArgumentError(f'lr must be positive, got {lr}')
    loop_options = dict(loop_options or {})
    opt = loop_options.pop('optimizer', 'sgd')
    settings = LoopSettings(epochs=epochs, batch_size=recipe.batch_size // ctx.world_size,
                            checkpoint_every=checkpoint_every, log_every=log_every, data_seed=seed, desc='finetune',
                            **loop_options)
    spe = settings.steps_per_epoch(len(train_set), ctx.world_size)
    if isinstance(model, OQATNet):
        model.set_resolution(resolution)
        model.derive_pretrained_cfg()
    model.to(ctx.device, memory_format=torch.channels_last)  # faster conv backward, as in joint training
    set_fused_quantizer(model, resolve_fused_quantizer(fused_quantizer, ctx.device))
    optimizer = build_optimizer(model, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                                weight_decay=recipe.weight_decay, opt=opt, step_lr_factor=recipe.step_lr_factor)
    total = epochs * spe
    scheduler = build_scheduler(optimizer, phases=[(total, min(total, round(recipe.warmup_epochs * spe)))])
    mixed = Amp(ctx.device, enabled=amp)
    if teacher is not None:
        teacher.to(ctx.device).eval()

    def step_fn(images: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        x = resize_batch(images, resolution)
        with mixed.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=recipe.label_smoothing)
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(x).detach()
                loss = loss + kd_ratio * soft_target_loss(logits, soft, temperature=kd_temperature)
        mixed.backward(loss)
        return loss.detach()

    def on_epoch_end(epoch: int, step: int) -> dict[str, Any]:
        if eval_batches is None:
            return {}
        result = evaluate(model, eval_batches, resolution=resolution)
        return {'val_top1': round(result['top1'], 3), 'val_top5': round(result['top5'], 3)}

    fingerprint = {'kind': 'finetune', 'epochs': epochs, 'lr': lr, 'resolution': resolution,
                   'recipe': recipe.to_dict(), 'seed': seed, 'world_size': ctx.world_size,
                   'train_images': len(train_set), 'num_classes': model.num_classes,
                   'teacher': teacher is not None, 'kd_ratio': kd_ratio, **(run_info or {})}
    with seeded_global_rng(seed + ctx.rank, device=ctx.device):
        result = run_loop(model=model, step_fn=step_fn, optimizer=optimizer, scheduler=scheduler, amp=mixed,
                          dataset=train_set, settings=settings, ctx=ctx, out_dir=out_dir, fingerprint=fingerprint,
                          rng_streams={}, resume=resume, on_epoch_end=on_epoch_end)
    model.eval()
    return finish_run(result, out_dir=out_dir, ctx=ctx, epochs=epochs, lr=lr, resolution=resolution,
                      **(run_info or {}))
