"""Optimizer and learning-rate schedule: SGD (nesterov) without decay on steps/BN/biases, warm-up + cosine."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ['param_groups', 'build_optimizer', 'PhasedWarmupCosine', 'build_scheduler', 'is_no_decay']

_NO_DECAY_SUFFIXES = ('act_step', 'weight_step', 'bias')


def is_no_decay(name: str, param: nn.Parameter, module: nn.Module) -> bool:
    """Step sizes, biases and BN parameters are not decayed (decay would shrink the quantizer's range)."""
    return name.endswith(_NO_DECAY_SUFFIXES) or isinstance(module, nn.modules.batchnorm._BatchNorm) or param.dim() <= 1


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two SGD groups: decayed conv/linear weights and everything else with ``weight_decay=0``."""
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f'{module_name}.{name}' if module_name else name
            (no_decay if is_no_decay(full, param, module) else decay).append(param)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def build_optimizer(model: nn.Module, *, lr: float, momentum: float, nesterov: bool,
                    weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, weight_decay=weight_decay), lr=lr, momentum=momentum,
                           nesterov=nesterov)


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
