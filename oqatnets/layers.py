"""Static building blocks of an OQATNet: activations, squeeze-excite, the inverted residual."""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath

from .errors import InvalidArgumentError
from .quant import QuantConv2d

__all__ = ['create_act', 'batch_norm', 'SqueezeExcite', 'DepthwiseSeparable', 'InvertedResidual', 'drop_path',
           'drop_path_rates', 'BN_EPS', 'BN_MOMENTUM']

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def create_act(name: str) -> nn.Module:
    """``relu`` or ``h_swish`` (x·relu6(x+3)/6)."""
    if name == 'relu':
        return nn.ReLU(inplace=True)
    if name == 'h_swish':
        return nn.Hardswish()
    raise InvalidArgumentError(f'unknown activation {name!r}; use relu or h_swish')


def drop_path(rate: float) -> nn.Module:
    """timm's stochastic depth on a residual branch (identity in eval, and when ``rate`` is 0)."""
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def drop_path_rates(rate: float, num_blocks: int) -> list[float]:
    """Per-block stochastic-depth rates rising linearly from 0, as timm's EfficientNet builder does."""
    if not 0.0 <= rate < 1.0:
        raise InvalidArgumentError(f'drop_path_rate must be in [0, 1), got {rate!r}')
    return [rate * index / num_blocks for index in range(num_blocks)]


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm2d with the authors' eps and momentum."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SqueezeExcite(nn.Module):
    """Float SE: mean-pool → 1×1 conv (bias) → ReLU → 1×1 conv (bias) → h_sigmoid → scale."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act(self.conv_reduce(s))))


class DepthwiseSeparable(nn.Module):
    """The network's first block: dw 3×3 → BN → act → pw 1×1 → BN (+ identity when shapes allow).

    Both convs are :class:`QuantConv2d`; the projection reads a fresh tensor, so it may quantize in place.
    ``signed_input`` quantizes the block's input on a signed grid (see :class:`SearchSpace`).
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int, act: str,
                 bits: int = 4, signed_input: bool = False):
        super().__init__()
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_dw = QuantConv2d(in_channels, in_channels, kernel_size, stride, groups=in_channels, bits=bits,
                                   signed_input=signed_input)
        self.bn_dw = batch_norm(in_channels)
        self.act_dw = create_act(act)
        self.conv_pwl = QuantConv2d(in_channels, out_channels, 1, bits=bits, inplace=True)
        self.bn_pwl = batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn_pwl(self.conv_pwl(self.bn_dw(self.conv_dw(x)), act=self.act_dw))
        return x + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    """MBConv: pw expand → BN → act → dw k×k → BN → act → [SE] → pw project → BN (+ identity).

    Every conv is a :class:`QuantConv2d`; BN, activations, SE and the shortcut stay float. The
    depthwise and projection convs read fresh tensors that nothing else uses, so they quantize in place,
    and take the activation before them (``act=``) so that their input quantizer can absorb it.
    ``signed_input`` quantizes the block's input (the expand conv's) on a signed grid.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int,
                 mid_channels: int, act: str, se_channels: int = 0, bits: int = 4, drop_path_rate: float = 0.0,
                 signed_input: bool = False):
        super().__init__()
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_pw = QuantConv2d(in_channels, mid_channels, 1, bits=bits, signed_input=signed_input)
        self.bn_pw = batch_norm(mid_channels)
        self.act_pw = create_act(act)
        self.conv_dw = QuantConv2d(mid_channels, mid_channels, kernel_size, stride, groups=mid_channels, bits=bits,
                                   inplace=True)
        self.bn_dw = batch_norm(mid_channels)
        self.act_dw = create_act(act)
        self.use_se = bool(se_channels)
        self.se = SqueezeExcite(mid_channels, se_channels) if se_channels else nn.Identity()
        self.conv_pwl = QuantConv2d(mid_channels, out_channels, 1, bits=bits, inplace=True)
        self.bn_pwl = batch_norm(out_channels)
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn_dw(self.conv_dw(self.bn_pw(self.conv_pw(x)), act=self.act_pw))
        x = self.conv_pwl(self.se(self.act_dw(x))) if self.use_se else self.conv_pwl(x, act=self.act_dw)
        x = self.bn_pwl(x)
        return self.drop_path(x) + shortcut if self.has_skip else x
