"""Joint training of a quantized supernet with the sandwich rule and in-place distillation.

Per step: the largest subnet (at the largest resolution) learns from the labels with
label-smoothed cross-entropy; the smallest and ``N`` random subnets, each at its own resolution
(the batch is resized; ``Recipe.resolution_sampling`` may draw one resolution for all), learn
from the largest's detached soft logits. Each subnet's backward runs right after its forward
(only one graph alive), the gradients add up, and one optimizer step follows. All subnets share
every weight and every LSQ step size.

A run may start with a float phase (bits = 32), training the same sandwich or the largest subnet
alone (``Recipe.float_sampling``), and then switch every quantized conv to ``bits``; the first
quantized forward initialises each step LSQ-style (all-reduced across ranks).
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from oqatnets.errors import InvalidArgumentError
from oqatnets.evaluation import resize_batch
from oqatnets.quant import FLOAT_BITS, set_bits, set_fused_quantizer, validate_bits
from oqatnets.spec import SearchSpace, SubnetSpec
from oqatnets.supernet import OQATSupernet

from .calibrate import evaluate_subnet
from .checkpoint import seeded_global_rng
from .distributed import DistContext
from .loop import Amp, LoopSettings, TrainResult, finish_run, resolve_fused_quantizer, run_loop
from .losses import soft_target_loss
from .optim import build_optimizer, build_scheduler
from .recipes import Recipe, ResolutionSampling

__all__ = ['sandwich_specs', 'sandwich_step', 'train_supernet']


def sandwich_specs(space: SearchSpace, bits: int, rng: random.Random, *, num_random: int,
                   resolution_sampling: ResolutionSampling = 'per_subnet') -> list[SubnetSpec]:
    """Largest, smallest and ``num_random`` random subnets.

    ``per_subnet``: the largest at the maximum resolution, the smallest at the minimum, each random
    subnet at its own; ``per_step``: every one at a single resolution drawn for the step.
    """
    specs = [space.largest(bits), space.smallest(bits)] + [space.sample(bits, rng) for _ in range(num_random)]
    if resolution_sampling == 'per_step':
        resolution = rng.choice(space.resolutions)
        specs = [replace(spec, resolution=resolution) for spec in specs]
    return specs


def sandwich_step(supernet: OQATSupernet, images: torch.Tensor, target: torch.Tensor, *,
                  specs: list[SubnetSpec], amp: Amp, label_smoothing: float, kd_ratio: float,
                  kd_temperature: float = 1.0) -> torch.Tensor:
    """Forward/backward every subnet of ``specs`` (the first is the teacher); returns the summed loss.

    Gradients accumulate in the supernet's parameters; the caller zeroes them and steps.
    """
    total = torch.zeros((), device=images.device)
    teacher: torch.Tensor | None = None
    for spec in specs:
        supernet.set_active_subnet(spec)
        x = resize_batch(images, spec.resolution)
        with amp.autocast():
            logits = supernet(x)
            if teacher is None:
                loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
            else:
                loss = kd_ratio * soft_target_loss(logits, teacher, temperature=kd_temperature)
        if teacher is None:
            teacher = logits.detach()
        amp.backward(loss)
        total += loss.detach()
    return total


def train_supernet(*, supernet: OQATSupernet, train_set: Dataset, recipe: Recipe, bits: int, epochs: int,
                   out_dir: 'str | Path', ctx: DistContext, float_epochs: int = 0, resume: bool = False,
                   seed: int = 0, checkpoint_every: int = 0, log_every: int = 20, amp: bool = True,
                   fused_quantizer: bool | None = None,
                   calib_batches: Iterable | None = None, eval_batches: Iterable | None = None,
                   run_info: dict[str, Any] | None = None, loop_options: dict[str, Any] | None = None) -> TrainResult:
    """Jointly train ``supernet`` in place: ``float_epochs`` at 32 bits, then ``epochs`` at ``bits``.

    ``loop_options`` are further :class:`LoopSettings` fields (workers, pin_memory, clip_grad, tensorboard,
    ema_decay) and ``optimizer`` (a timm optimizer name; default the recipe's SGD).
    ``fused_quantizer``: train through the one-pass LSQ kernels (True), eager (False), or the default
    (None: fused on the CPU when the C kernel builds; :func:`~oqatnets.training.loop.resolve_fused_quantizer`).

    ``train_set`` must exclude any held-out images. With ``calib_batches`` and ``eval_batches``,
    each epoch ends with the largest and smallest subnets evaluated after BN recalibration.
    ``run_info`` (data source, init …) joins the fingerprint that a ``resume`` must match.
    Writes ``checkpoint.pt``, ``metrics.jsonl`` and ``summary.json`` under ``out_dir`` (rank 0).
    """
    validate_bits(bits)
    if epochs < 0 or float_epochs < 0 or epochs + float_epochs == 0:
        raise InvalidArgumentError(f'nothing to train: epochs={epochs}, float_epochs={float_epochs}; pass --epochs 1 or more')
    if recipe.batch_size % ctx.world_size:
        raise InvalidArgumentError(f'batch size {recipe.batch_size} does not split over {ctx.world_size} ranks; '
                         f'pass a multiple of {ctx.world_size}')
    loop_options = dict(loop_options or {})
    opt = loop_options.pop('optimizer', 'sgd')
    settings = LoopSettings(epochs=float_epochs + epochs, batch_size=recipe.batch_size // ctx.world_size,
                            checkpoint_every=checkpoint_every, log_every=log_every, data_seed=seed,
                            desc=(f'supernet {float_epochs} float + {epochs} {bits}-bit epochs' if float_epochs
                                  else f'supernet {bits}-bit'), **loop_options)
    spe = settings.steps_per_epoch(len(train_set), ctx.world_size)
    float_steps = float_epochs * spe
    quant_steps = epochs * spe
    space = supernet.space
    # channels-last: the CPU and GPU convolution kernels run their backward 2-6× faster on it
    supernet.to(ctx.device, memory_format=torch.channels_last)
    set_fused_quantizer(supernet, resolve_fused_quantizer(fused_quantizer, ctx.device))
    optimizer = build_optimizer(supernet, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                                weight_decay=recipe.weight_decay, opt=opt, step_lr_factor=recipe.step_lr_factor)
    warmup = round(recipe.warmup_epochs * spe)
    # after a float phase the quantized one starts from trained weights: it may peak lower
    quant_peak = recipe.quant_lr_factor if float_steps else 1.0
    phases = [(n, min(warmup, n), peak) for n, peak in ((float_steps, 1.0), (quant_steps, quant_peak)) if n > 0]
    scheduler = build_scheduler(optimizer, phases=phases)
    mixed = Amp(ctx.device, enabled=amp)
    subnet_rng = random.Random(seed)  # the same seed on every rank → the same subnets everywhere

    def before_step(step: int) -> None:
        want = FLOAT_BITS if step < float_steps else bits
        if supernet.bits != want:
            set_bits(supernet, want)

    def step_fn(images: torch.Tensor, target: torch.Tensor, step: int) -> torch.Tensor:
        if step < float_steps and recipe.float_sampling == 'largest':
            specs = [space.largest(supernet.bits)]
        else:
            specs = sandwich_specs(space, supernet.bits, subnet_rng, num_random=recipe.num_random_subnets,
                                   resolution_sampling=recipe.resolution_sampling)
        return sandwich_step(supernet, images, target, specs=specs, amp=mixed,
                             label_smoothing=recipe.label_smoothing, kd_ratio=recipe.kd_ratio,
                             kd_temperature=recipe.kd_temperature)

    def on_epoch_end(epoch: int, step: int) -> dict[str, Any]:
        if calib_batches is None or eval_batches is None:
            return {'bits': supernet.bits}
        out: dict[str, Any] = {'bits': supernet.bits}
        for name, spec in (('largest', space.largest(supernet.bits)), ('smallest', space.smallest(supernet.bits))):
            result = evaluate_subnet(supernet, spec, calib_batches=calib_batches, eval_batches=eval_batches,
                                     mode=recipe.bn_calibration)
            out[f'{name}_top1'] = round(result['top1'], 3)
        return out

    fingerprint = {'kind': 'joint', 'space': space.to_dict(), 'bits': bits, 'epochs': epochs,
                   'float_epochs': float_epochs, 'recipe': recipe.to_dict(), 'seed': seed,
                   'world_size': ctx.world_size, 'train_images': len(train_set),
                   'num_classes': supernet.num_classes, **(run_info or {})}
    # augmentation differs per rank, like separate data workers
    with seeded_global_rng(seed + ctx.rank, device=ctx.device):
        result = run_loop(model=supernet, step_fn=step_fn, optimizer=optimizer, scheduler=scheduler, amp=mixed,
                          dataset=train_set, settings=settings, ctx=ctx, out_dir=out_dir, fingerprint=fingerprint,
                          rng_streams={'subnets': subnet_rng}, resume=resume, before_step=before_step,
                          on_epoch_end=on_epoch_end)
    before_step(result.step)
    supernet.set_max_subnet()
    sandwich = 2 + recipe.num_random_subnets
    float_subnets = 1 if recipe.float_sampling == 'largest' else sandwich
    per_step = (float_steps * float_subnets + quant_steps * sandwich) / (float_steps + quant_steps)
    return finish_run(result, out_dir=out_dir, ctx=ctx, subnets_per_step=round(per_step, 3),
                      bits=bits, space=space.name, epochs=epochs, float_epochs=float_epochs,
                      recipe=recipe.to_dict(), **(run_info or {}))
