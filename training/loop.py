"""The resumable training loop shared by joint supernet training and finetuning.

It owns what every run needs and nothing model-specific: the epoch order per rank, skipping the
batches a resumed epoch already saw, zeroing/averaging gradients, the optimizer and scheduler
steps, AMP, periodic atomic checkpoints, progress bars, JSON-lines metrics and throughput. What
a step computes is the caller's ``step_fn``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.utils import ModelEmaV3
from torch.utils.data import Dataset

from oqatnets._lsq_kernel import load_kernel
from oqatnets.errors import InvalidArgumentError, KernelUnavailableError, MissingDependencyError
from oqatnets.weights import check_record, read_weights, save_weights

from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    TrainState,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from .datasets import batches_from, epoch_order
from .distributed import DistContext, all_reduce_gradients, broadcast_buffers
from .metrics import MetricsLog, StageTimer, progress, write_json

__all__ = ['Amp', 'resolve_fused_quantizer', 'LoopSettings', 'LoopResult', 'TrainResult', 'run_loop', 'finish_run',
           'StepFn', 'epoch_line']

logger = logging.getLogger('oqatnets.training')


def resolve_fused_quantizer(requested: bool | None, device: torch.device) -> bool:
    """Whether training on ``device`` runs the fused LSQ kernels: ``requested`` when given, else the default.

    True and False are honoured (True raises :class:`KernelUnavailableError` when the CPU kernel cannot
    be built). None is the default: fused on the CPU, where a sandwich step measured 1.05–1.21× faster
    (docs/BENCHMARKS.md §1), unless no C compiler can build it (then eager, with a warning); eager
    elsewhere (the compiled GPU kernels are unmeasured).
    """
    if requested is False or (requested is None and device.type != 'cpu'):
        return False
    if device.type == 'cpu':
        try:
            load_kernel()
        except KernelUnavailableError as error:
            if requested:
                raise
            logger.warning('%s; training with the eager quantizer', error)
            return False
    return True


class Amp:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler); a no-op on CPU."""

    def __init__(self, device: torch.device, *, enabled: bool):
        self.enabled = enabled and device.type == 'cuda'
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler('cuda') if self.enabled and self.dtype == torch.float16 else None
        self.device_type = device.type

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def clip(self, optimizer: torch.optim.Optimizer, max_norm: float | None) -> None:
        """Clip the global gradient norm to ``max_norm`` (unscaled first under fp16); None: no clipping."""
        if not max_norm:
            return
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()


# step_fn(images, target, step) runs forward/backward (gradients accumulate) and returns the
# step's loss as a detached tensor; the loop syncs it to a float only every ``log_every`` steps.
StepFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class LoopSettings:
    """How long to train and how often to log and checkpoint (per-rank batch size)."""

    epochs: int
    batch_size: int
    checkpoint_every: int = 0  # steps; 0 checkpoints only at epoch ends (always also at the end)
    log_every: int = 20
    data_seed: int = 0
    desc: str = 'train'
    num_workers: int = 0
    pin_memory: bool = False  # page-locked batches for faster host-to-GPU copies
    clip_grad: float | None = None  # max global gradient norm; None: no clipping
    tensorboard: bool = False  # also write the per-epoch records to OUT/tensorboard (needs the extra)
    ema_decay: float | None = None  # keep timm's ModelEmaV3 of the weights; the run ends with the EMA weights

    def steps_per_epoch(self, num_images: int, world_size: int) -> int:
        steps = (num_images // world_size) // self.batch_size
        if steps < 1:
            raise InvalidArgumentError(f'{num_images} training images give no full batch of {self.batch_size} per rank; '
                             f'lower --batch-size')
        return steps


@dataclass
class LoopResult:
    step: int
    resumed_from: int
    timer: StageTimer
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    """What a training command produced: the final step, per-epoch records and its summary."""

    step: int
    records: list[dict[str, Any]]
    summary: dict[str, Any]


def run_loop(*, model: nn.Module, step_fn: StepFn, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, amp: Amp, dataset: Dataset, settings: LoopSettings,
             ctx: DistContext, out_dir: 'str | Path', fingerprint: dict[str, Any],
             rng_streams: dict[str, random.Random], resume: bool,
             before_step: Callable[[int], None] | None = None,
             on_epoch_end: Callable[[int, int], dict[str, Any]] | None = None) -> LoopResult:
    """Train ``model`` for ``settings.epochs`` epochs of ``dataset``, resuming from ``out_dir`` if asked.

    ``before_step(step)`` runs before every step (e.g. to leave the float phase); ``on_epoch_end
    (epoch, step)`` returns extra metrics (evaluations) for the epoch's JSON line. The loop is
    deterministic given the checkpointed state, so a resumed run ends with the same weights as
    an uninterrupted one.
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    spe = settings.steps_per_epoch(len(dataset), ctx.world_size)
    total_steps = settings.epochs * spe
    metrics = MetricsLog(out_dir / 'metrics.jsonl', enabled=ctx.is_main)
    step = 0
    if resume:
        state = load_checkpoint(ckpt_path, expected_fingerprint=fingerprint)
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if amp.scaler is not None and state.scaler is not None:
            amp.scaler.load_state_dict(state.scaler)
        restore_rng(state.rng, rng_streams)
        step = state.step
        metrics.truncate_after(step)
    elif ckpt_path.exists():
        raise CheckpointError(f'{out_dir} already holds a checkpoint; pass --resume to continue it or choose another --out')
    resumed_from = step
    writer = _tensorboard_writer(out_dir) if settings.tensorboard and ctx.is_main else None
    ema = _ema(model, settings.ema_decay, out_dir / EMA_NAME if resume else None)

    def checkpoint() -> None:
        broadcast_buffers(model, ctx)
        if ctx.is_main:
            save_checkpoint(ckpt_path, TrainState(
                step=step, epoch=step // spe, model=model.state_dict(), optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(), rng=capture_rng(rng_streams), fingerprint=fingerprint,
                scaler=amp.scaler.state_dict() if amp.scaler is not None else None))
            if ema is not None:
                save_weights(ema.module, out_dir / EMA_NAME)
        ctx.barrier()

    timer = StageTimer()
    records: list[dict[str, Any]] = []
    model.train()
    for epoch in range(step // spe, settings.epochs):
        order = epoch_order(len(dataset), epoch=epoch, seed=settings.data_seed, rank=ctx.rank,
                            world_size=ctx.world_size)
        done = step - epoch * spe
        loader = batches_from(dataset, order[done * settings.batch_size:spe * settings.batch_size],
                              batch_size=settings.batch_size, num_workers=settings.num_workers,
                              pin_memory=settings.pin_memory)
        loss_sum = torch.zeros((), device=ctx.device)
        epoch_start, epoch_steps = time.perf_counter(), 0
        bar = progress(loader, enabled=ctx.is_main, total=spe, initial=done,
                       desc=f'{settings.desc} {epoch + 1}/{settings.epochs}')
        for images, target in bar:
            if before_step is not None:
                before_step(step)
            images = images.to(ctx.device, non_blocking=True, memory_format=torch.channels_last)
            target = target.to(ctx.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss_sum += step_fn(images, target, step)
            all_reduce_gradients(model, ctx)
            amp.clip(optimizer, settings.clip_grad)
            amp.step(optimizer)
            scheduler.step()
            step, epoch_steps = step + 1, epoch_steps + 1
            if ema is not None:
                ema.update(model, step=step)
            if ctx.is_main and step % settings.log_every == 0 and hasattr(bar, 'set_postfix'):
                bar.set_postfix(loss=f'{float(loss_sum) / epoch_steps:.3f}', lr=f'{scheduler.get_last_lr()[0]:.4f}')
            if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < total_steps:
                checkpoint()
        seconds = time.perf_counter() - epoch_start
        images_seen = epoch_steps * settings.batch_size * ctx.world_size
        timer.add('train', seconds=seconds, images=images_seen)
        record: dict[str, Any] = {'epoch': epoch + 1, 'step': step, 'lr': scheduler.get_last_lr()[0],
                                  'train_loss': float(loss_sum) / max(1, epoch_steps),
                                  'train_images_per_s': round(images_seen / seconds, 1) if seconds else 0.0}
        if on_epoch_end is not None:
            record.update(on_epoch_end(epoch, step))
        metrics.append(**record)
        records.append(record)
        if ctx.is_main:
            logger.info(epoch_line(settings.desc, record, epochs=settings.epochs))
        if writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ('epoch', 'step'):
                    writer.add_scalar(key, value, global_step=step)
            writer.flush()
        checkpoint()
    if writer is not None:
        writer.close()
    if ema is not None:  # what the run exports: the averaged weights
        model.load_state_dict(ema.module.state_dict())
    broadcast_buffers(model, ctx)
    return LoopResult(step=step, resumed_from=resumed_from, timer=timer, records=records)


def epoch_line(desc: str, record: dict[str, Any], *, epochs: int) -> str:
    """The one-line console summary of an epoch's record: loss, LR, throughput and any accuracy."""
    parts = [f'{desc} epoch {record["epoch"]}/{epochs}', f'step {record["step"]}',
             f'loss {record["train_loss"]:.4f}', f'lr {record["lr"]:.5f}', f'{record["train_images_per_s"]:.0f} img/s']
    parts += [f'{k} {v:.2f}' for k, v in record.items() if 'top1' in k and isinstance(v, (int, float))]
    return ' | '.join(parts)


EMA_NAME = 'ema.safetensors'


def _ema(model: nn.Module, decay: float | None, resume_from: Path | None) -> ModelEmaV3 | None:
    """timm's weight EMA of ``model`` (None without ``decay``), restored from ``resume_from`` when it exists."""
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f'the EMA decay must be in (0, 1), got {decay}')
    ema = ModelEmaV3(model, decay=decay)
    if resume_from is not None and resume_from.is_file():
        saved = read_weights(resume_from)
        check_record(saved.record, ema.module.model_args(), where=resume_from)
        ema.module.load_state_dict(saved.state)
    return ema


def _tensorboard_writer(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: the tensorboard extra
    except ModuleNotFoundError:
        raise MissingDependencyError("--tensorboard needs the optional dependency tensorboard: "
                                     "pip install 'oqatnets[tensorboard]'") from None
    return SummaryWriter(log_dir=str(out_dir / 'tensorboard'))


def finish_run(result: LoopResult, *, out_dir: 'str | Path', ctx: DistContext,
               subnets_per_step: float = 1, **fields: Any) -> TrainResult:
    """Build the run summary (throughput per stage, last epoch, ``fields``) and write ``summary.json``.

    ``subnets_per_step`` is the mean over the run's steps (a float phase may train fewer subnets)."""
    path = Path(out_dir) / 'summary.json'
    if result.resumed_from and result.step == result.resumed_from and path.is_file():
        # a finished run resumed: nothing was trained, and a summary of no steps would replace its own
        summary = json.loads(path.read_text(encoding='utf-8'))
        return TrainResult(step=result.step, records=[summary['last_epoch']] if summary.get('last_epoch') else [],
                           summary=summary)
    timing = result.timer.summary()
    if 'train' in timing and subnets_per_step > 1:
        timing['train']['subnet_images_per_s'] = round(timing['train']['images_per_s'] * subnets_per_step, 1)
    summary = {**fields, 'steps': result.step, 'resumed_from_step': result.resumed_from,
               'subnets_per_step': subnets_per_step, 'throughput': timing,
               'last_epoch': result.records[-1] if result.records else None}
    if ctx.is_main:
        write_json(path, summary)
    return TrainResult(step=result.step, records=result.records, summary=summary)
