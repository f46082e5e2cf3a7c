"""Optimizer and learning-rate schedule: SGD (nesterov) without decay on steps/BN/biases, warm-up + cosine."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2, param_groups_weight_decay

__all__ = ['param_groups', 'build_optimizer', 'PhasedWarmupCosine', 'build_scheduler']


def _step_names(model: nn.Module) -> set[str]:
    return set(model.no_weight_decay()) if hasattr(model, 'no_weight_decay') else set()


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """timm's ``param_groups_weight_decay``: conv/linear weights decayed; biases, BN and the LSQ step sizes
    (``model.no_weight_decay()``; decay would shrink the quantizer's range) not. The decayed group comes
    first, as before, so the optimizer state of earlier checkpoints still loads."""
    groups = param_groups_weight_decay(model, weight_decay=weight_decay, no_weight_decay_list=_step_names(model))
    return sorted(groups, key=lambda group: group['weight_decay'] == 0)


def build_optimizer(model: nn.Module, *, lr: float, momentum: float, nesterov: bool,
                    weight_decay: float, opt: str = 'sgd', step_lr_factor: float = 1.0) -> torch.optim.Optimizer:
    """The recipe's SGD (nesterov as the recipe says), or any optimizer timm's ``create_optimizer_v2`` knows
    (``adamw``, ``lamb`` …) on the same parameter groups. ``step_lr_factor`` ≠ 1 moves the LSQ step sizes
    into a group of their own at ``lr · step_lr_factor`` (the schedule scales it like the others)."""
    groups = param_groups(model, weight_decay=weight_decay)
    if step_lr_factor != 1.0:
        names = _step_names(model)
        steps = {id(p) for name, p in model.named_parameters() if name in names}
        rest = [{**g, 'params': [p for p in g['params'] if id(p) not in steps]} for g in groups]
        step_params = [p for g in groups for p in g['params'] if id(p) in steps]
        groups = [g for g in rest if g['params']]
        if step_params:
            groups.append({'params': step_params, 'weight_decay': 0.0, 'lr': lr * step_lr_factor})
    if opt == 'sgd':
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    return create_optimizer_v2(groups, opt=opt, lr=lr, weight_decay=weight_decay, momentum=momentum)


@dataclass
class PhasedWarmupCosine:
    """LR factor per step: each phase warms up linearly and then decays with a cosine to zero.

    ``phases`` are (steps, warmup_steps) or (steps, warmup_steps, peak) tuples (peak defaults
    to 1); the float phase and the quantized phase of a run each get their own warm-up and
    cosine, because LSQ starts from freshly initialised steps, and the quantized phase after a
    float one may peak lower (it starts from trained weights). A plain dataclass (not a
    closure) so that LambdaLR's state dict can hold it.
    """

    phases: list[tuple]

    def __call__(self, step: int) -> float:
        for phase in self.phases:
            total, warmup = phase[0], phase[1]
            peak = phase[2] if len(phase) > 2 else 1.0
            if step < total:
                if step < warmup:
                    return peak * (step + 1) / warmup
                progress = (step - warmup) / max(1, total - warmup)
                return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
            step -= total
        return 0.0


def build_scheduler(optimizer: torch.optim.Optimizer, *, phases: list[tuple]) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, PhasedWarmupCosine([tuple(p) for p in phases]))
