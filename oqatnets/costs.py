"""Cost accounting of any subnet: MACs, params, BitOPs, the authors' 8-bit-equivalent MACs, size.

Conventions (they reproduce the authors' counters to the last printed digit):

- ``macs`` (M): multiply-accumulates of every conv and linear, ``Cin·k²·Hout·Wout·Cout/groups``
  and ``in·out``; BN, activations and pooling count 0. The authors' README "FLOPs" are this.
- ``params`` (M): every trainable parameter, the two step sizes of each quantized conv included
  (the authors' ``count_parameters`` on a quantized subnet); ``arch_params`` (M) leaves the step
  sizes out: the authors' README "Params" column, counted on the float architecture.
- ``bitops`` (G): Σ over quantized convs of ``MACs·b_w·b_a``; float layers (stem, SE,
  classifier) are reported apart as ``float_macs`` (M).
- ``macs_8bit_equiv`` (M): the authors' ``profile_quant``: float MACs + quantized MACs·b²/64.
- ``size_mbit``: quantized conv params (weight + 2 steps)·b + every other param·32, in Mbit.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch.nn as nn

from .errors import InvalidArgumentError, InvalidTypeError
from .net import OQATNet
from .spec import NUM_STAGES, SearchSpace, SubnetSpec, get_space
from .supernet import OQATSupernet

__all__ = ['Profile', 'LayerCost', 'profile', 'layer_costs']


@dataclass(frozen=True)
class LayerCost:
    """One conv or linear layer: its MACs and parameters, and whether it is quantized."""

    name: str
    macs: int
    weight_params: int
    other_params: int  # bias and the BN affine parameters that follow the layer
    quantized: bool


@dataclass(frozen=True)
class Profile:
    macs: float
    params: float
    arch_params: float
    bitops: float
    float_macs: float
    macs_8bit_equiv: float
    size_mbit: float
    bits: int
    resolution: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _conv(name: str, cin: int, cout: int, k: int, hw: int, *, groups: int = 1, quantized: bool,
          bn: bool, bias: bool = False) -> LayerCost:
    weight = cout * (cin // groups) * k * k
    other = (2 * cout if bn else 0) + (cout if bias else 0)
    return LayerCost(name, weight * hw * hw, weight, other, quantized)


def _out_size(size: int, stride: int) -> int:
    return -(-size // stride)


def layer_costs(spec: SubnetSpec, *, space: 'str | SearchSpace' = 'imagenet', num_classes: int = 1000,
                in_chans: int = 3) -> Iterator[LayerCost]:
    """Every conv and linear layer of ``spec``'s network with its cost, in forward order."""
    s = get_space(space)
    hw = _out_size(spec.resolution, s.stem_stride)
    yield _conv('conv_stem', in_chans, s.stem_channels, 3, hw, quantized=False, bn=True)
    c = s.stem_channels
    yield _conv('blocks.0.0.conv_dw', c, c, 3, hw, groups=c, quantized=True, bn=True)
    yield _conv('blocks.0.0.conv_pwl', c, s.first_block_channels, 1, hw, quantized=True, bn=True)
    for stage, index, k, e in spec.active_blocks():
        prefix = f'blocks.{stage + 1}.{index}'
        cin, cout = s.block_in_channels(stage, index), s.stage_channels[stage]
        mid = s.mid_channels(stage, index, e)
        yield _conv(f'{prefix}.conv_pw', cin, mid, 1, hw, quantized=True, bn=True)
        if index == 0:
            hw = _out_size(hw, s.stage_strides[stage])
        yield _conv(f'{prefix}.conv_dw', mid, mid, k, hw, groups=mid, quantized=True, bn=True)
        if s.stage_se[stage]:
            se = s.se_channels(mid)
            yield _conv(f'{prefix}.se.conv_reduce', mid, se, 1, 1, quantized=False, bn=False, bias=True)
            yield _conv(f'{prefix}.se.conv_expand', se, mid, 1, 1, quantized=False, bn=False, bias=True)
        yield _conv(f'{prefix}.conv_pwl', mid, cout, 1, hw, quantized=True, bn=True)
    yield _conv('final_conv', s.stage_channels[NUM_STAGES - 1], s.final_expand_channels, 1, hw, quantized=True, bn=True)
    yield _conv('conv_head', s.final_expand_channels, s.head_channels, 1, 1, quantized=True, bn=False)
    if num_classes > 0:
        yield LayerCost('classifier', s.head_channels * num_classes, s.head_channels * num_classes, num_classes, False)


def profile(model_or_spec: 'nn.Module | SubnetSpec | str', *, space: 'str | SearchSpace | None' = None,
            num_classes: int | None = None, in_chans: int | None = None) -> Profile:
    """Costs of an OQATNet, of a supernet's active subnet, or of a spec (string form accepted).

    A model brings its own space, classes and input channels; ``space`` may only restate its space.
    """
    if isinstance(model_or_spec, nn.Module):
        model = model_or_spec
        if isinstance(model, OQATSupernet):
            spec = model.active_spec
        elif isinstance(model, OQATNet):
            spec = model.spec
        else:
            raise InvalidTypeError(f'profile() takes an OQATNet, an OQATSupernet or a SubnetSpec, '
                                   f'not {type(model).__name__}')
        if space is not None and get_space(space) != model.space:
            raise InvalidArgumentError(f'space={space!r} differs from the model\'s own space {model.space.name!r}; '
                                       'a model is profiled in the space it was built in')
        space = model.space
        num_classes = model.num_classes if num_classes is None else num_classes
        in_chans = model.in_chans if in_chans is None else in_chans
    else:
        spec = SubnetSpec.of(model_or_spec)
    space = get_space(space or 'imagenet')
    space.check(spec)
    layers = list(layer_costs(spec, space=space, num_classes=1000 if num_classes is None else num_classes,
                              in_chans=3 if in_chans is None else in_chans))
    b = spec.bits
    quant = [layer for layer in layers if layer.quantized]
    quant_macs = sum(layer.macs for layer in quant)
    float_macs = sum(layer.macs for layer in layers if not layer.quantized)
    steps = 2 * len(quant)
    params = sum(layer.weight_params + layer.other_params for layer in layers) + steps
    quant_bits = sum(layer.weight_params for layer in quant) * b + steps * b
    other_bits = (params - steps - sum(layer.weight_params for layer in quant)) * 32
    return Profile(
        macs=(quant_macs + float_macs) / 1e6,
        params=params / 1e6,
        arch_params=(params - steps) / 1e6,
        bitops=quant_macs * b * b / 1e9,
        float_macs=float_macs / 1e6,
        macs_8bit_equiv=(float_macs + quant_macs * b * b / 64) / 1e6,
        size_mbit=(quant_bits + other_bits) / 1e6,
        bits=b,
        resolution=spec.resolution,
    )
