"""Bit inheritance: the (b−1)-bit supernet starts from the b-bit one with every step size doubled.

Doubling keeps the clipping range (≈ s·Qp) and makes every new grid point an old one, so the
inherited network is already close to the trained one (the paper's bounded-error argument).
Everything else — weights, BN parameters and statistics, kernel transforms, classifier — is
copied unchanged.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from oqatnets.errors import InvalidArgumentError
from oqatnets.quant import FLOAT_BITS, get_bits, iter_quant_convs, set_bits, validate_bits

__all__ = ['inherit_bits', 'step_scale']

def step_scale(from_bits: int, to_bits: int) -> float:
    """The factor every step size is multiplied by: 2 per bit dropped."""
    return float(2 ** (from_bits - to_bits))


def inherit_bits(model: nn.Module, bits: int) -> nn.Module:
    """A deep copy of ``model`` (a supernet or a static net) at ``bits``, steps scaled by 2^(b_old − bits).

    The source must be quantized (its steps initialised by training or loading) and ``bits``
    lower than its bit-width; the source is not modified.
    """
    validate_bits(bits)
    source_bits = get_bits(model)
    if source_bits >= FLOAT_BITS:
        raise InvalidArgumentError('a float (32-bit) model has no step sizes to inherit; train it quantized first '
                         '(oqat train supernet --bits 4)')
    if bits >= source_bits:
        raise InvalidArgumentError(f'bit inheritance goes down: the model is {source_bits}-bit, asked for {bits}; '
                         f'pass --bits below {source_bits}')
    uninitialised = [name for name, conv in iter_quant_convs(model) if not bool(conv.step_initialized)]
    if uninitialised:
        raise InvalidArgumentError(f'{len(uninitialised)} quantized convs (e.g. {uninitialised[0]}) have no trained step '
                         f'sizes; train the {source_bits}-bit model before inheriting from it')
    child = copy.deepcopy(model)
    scale = step_scale(source_bits, bits)
    with torch.no_grad():
        for _, conv in iter_quant_convs(child):
            conv.act_step.mul_(scale)
            conv.weight_step.mul_(scale)
    set_bits(child, bits)  # spec and pretrained_cfg follow: the copy's cfg is derived, without the parent's identity
    return child
