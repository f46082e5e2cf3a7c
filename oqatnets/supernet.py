"""The elastic quantized supernet: elastic kernel, expand ratio and depth with shared step sizes.

Every quantized conv holds one ``act_step`` and one ``weight_step`` used by every subnet whatever
its kernel, width, depth or resolution. Elastic channels take the first C entries of every
weight, BN and SE tensor; a smaller kernel is the centre of the larger one passed through the
layer's learned ``7to5`` / ``5to3`` transform (``y = x·Mᵀ``, identity at init).
"""
from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InvalidArgumentError
from .layers import BN_EPS, BN_MOMENTUM, InvertedResidual, create_act, drop_path
from .net import OQATBase, OQATNet
from .quant import QuantConv2d
from .spec import MAX_DEPTH, NUM_STAGES, SearchSpace, SubnetSpec, get_space

__all__ = ['OQATSupernet', 'ElasticQuantConv2d', 'ElasticDepthwiseQuantConv2d', 'ElasticBatchNorm2d',
           'ElasticSqueezeExcite', 'ElasticInvertedResidual']


def _centre(weight: torch.Tensor, size: int) -> torch.Tensor:
    start = (weight.shape[-1] - size) // 2
    return weight[..., start:start + size, start:start + size]


class ElasticQuantConv2d(QuantConv2d):
    """A pointwise quantized conv whose input/output widths are the first channels of the max one."""

    def forward(self, x: torch.Tensor, out_channels: int | None = None, *,
                act: nn.Module | None = None) -> torch.Tensor:
        weight = self.active_weight(x.shape[1], out_channels or self.out_channels)
        return self.conv(x, weight, act=act)

    def active_weight(self, in_channels: int, out_channels: int) -> torch.Tensor:
        if in_channels == self.in_channels and out_channels == self.out_channels:
            return self.weight
        return self.weight[:out_channels, :in_channels]


class ElasticDepthwiseQuantConv2d(QuantConv2d):
    """A depthwise quantized conv stored at the largest kernel, with kernel transform matrices."""

    def __init__(self, channels: int, ks_choices: tuple[int, ...], stride: int, *, bits: int):
        kernels = sorted(ks_choices)
        super().__init__(channels, channels, kernels[-1], stride, groups=channels, bits=bits)
        self.ks_choices = tuple(kernels)
        for big, small in zip(kernels[:0:-1], kernels[-2::-1]):
            self.register_parameter(f'transform_{big}to{small}', nn.Parameter(torch.eye(small * small)))

    def active_weight(self, channels: int, kernel_size: int) -> torch.Tensor:
        """The depthwise kernel a subnet uses: centre crops chained through the transforms."""
        weight = self.weight[:channels] if channels != self.out_channels else self.weight
        size = weight.shape[-1]
        while size > kernel_size:
            smaller = self.ks_choices[self.ks_choices.index(size) - 1]
            matrix = getattr(self, f'transform_{size}to{smaller}')
            flat = _centre(weight, smaller).reshape(-1, smaller * smaller)
            weight = F.linear(flat, matrix).reshape(channels, 1, smaller, smaller)
            size = smaller
        return weight

    def forward(self, x: torch.Tensor, kernel_size: int | None = None, *,
                act: nn.Module | None = None) -> torch.Tensor:
        weight = self.active_weight(x.shape[1], kernel_size or self.kernel_size[0])
        return self.conv(x, weight, groups=x.shape[1], act=act)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first C channels; training updates those running-stat slices in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            use_batch_stats, self.momentum if self.momentum is not None else 0.0, self.eps)


class ElasticSqueezeExcite(nn.Module):
    """Float SE whose reduce/expand convs are sliced to the active width."""

    def __init__(self, channels: int, reduced: int, space: SearchSpace):
        super().__init__()
        self.space = space
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        r = self.space.se_channels(c)
        s = x.mean((2, 3), keepdim=True)
        s = self.act(F.conv2d(s, self.conv_reduce.weight[:r, :c], self.conv_reduce.bias[:r]))
        s = F.conv2d(s, self.conv_expand.weight[:c, :r], self.conv_expand.bias[:c])
        return x * self.gate(s)


def _elastic_bn(channels: int) -> ElasticBatchNorm2d:
    return ElasticBatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ElasticInvertedResidual(nn.Module):
    """The MBConv of one supernet position, at its largest kernel and expand ratio."""

    def __init__(self, space: SearchSpace, stage: int, index: int, *, bits: int, drop_path_rate: float = 0.0):
        super().__init__()
        self.space, self.stage, self.index = space, stage, index
        self.in_channels = space.block_in_channels(stage, index)
        self.out_channels = space.stage_channels[stage]
        self.stride = space.stage_strides[stage] if index == 0 else 1
        self.has_skip = self.stride == 1 and self.in_channels == self.out_channels
        self.use_se = space.stage_se[stage]
        max_mid = space.mid_channels(stage, index, space.max_expand)
        act = space.stage_acts[stage]
        self.conv_pw = ElasticQuantConv2d(self.in_channels, max_mid, 1, bits=bits, signed_input=space.signed_inputs)
        self.bn_pw = _elastic_bn(max_mid)
        self.act_pw = create_act(act)
        self.conv_dw = ElasticDepthwiseQuantConv2d(max_mid, space.ks_choices, self.stride, bits=bits)
        self.bn_dw = _elastic_bn(max_mid)
        self.act_dw = create_act(act)
        self.se = ElasticSqueezeExcite(max_mid, space.se_channels(max_mid), space) if self.use_se else nn.Identity()
        self.conv_pwl = ElasticQuantConv2d(max_mid, self.out_channels, 1, bits=bits)
        self.bn_pwl = _elastic_bn(self.out_channels)
        self.drop_path_rate = drop_path_rate
        self.drop_path = drop_path(drop_path_rate)
        self.active_ks = space.max_kernel
        self.active_e = space.max_expand

    @property
    def active_mid(self) -> int:
        return self.space.mid_channels(self.stage, self.index, self.active_e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn_dw(self.conv_dw(self.bn_pw(self.conv_pw(x, self.active_mid)), self.active_ks, act=self.act_pw))
        if self.use_se:
            x = self.conv_pwl(self.se(self.act_dw(x)), self.out_channels)
        else:
            x = self.conv_pwl(x, self.out_channels, act=self.act_dw)
        x = self.bn_pwl(x)
        return self.drop_path(x) + shortcut if self.has_skip else x

    @torch.no_grad()
    def to_static(self) -> InvertedResidual:
        """A static block holding this block's active weights (transforms folded, steps copied)."""
        mid = self.active_mid
        se_mid = self.space.se_channels(mid) if self.use_se else 0
        block = InvertedResidual(self.in_channels, self.out_channels, kernel_size=self.active_ks,
                                 stride=self.stride, mid_channels=mid, act=self.space.stage_acts[self.stage],
                                 se_channels=se_mid, bits=self.conv_pw.bits, drop_path_rate=self.drop_path_rate,
                                 signed_input=self.space.signed_inputs)
        block = block.to(device=self.conv_pw.weight.device, dtype=self.conv_pw.weight.dtype)
        _copy_conv(block.conv_pw, self.conv_pw, self.conv_pw.active_weight(self.in_channels, mid))
        _copy_conv(block.conv_dw, self.conv_dw, self.conv_dw.active_weight(mid, self.active_ks))
        _copy_conv(block.conv_pwl, self.conv_pwl, self.conv_pwl.active_weight(mid, self.out_channels))
        for static_bn, bn, c in ((block.bn_pw, self.bn_pw, mid), (block.bn_dw, self.bn_dw, mid),
                                 (block.bn_pwl, self.bn_pwl, self.out_channels)):
            _copy_bn(static_bn, bn, c)
        if se_mid:
            block.se.conv_reduce.weight.copy_(self.se.conv_reduce.weight[:se_mid, :mid])
            block.se.conv_reduce.bias.copy_(self.se.conv_reduce.bias[:se_mid])
            block.se.conv_expand.weight.copy_(self.se.conv_expand.weight[:mid, :se_mid])
            block.se.conv_expand.bias.copy_(self.se.conv_expand.bias[:mid])
        return block


def _copy_conv(dst: QuantConv2d, src: QuantConv2d, weight: torch.Tensor) -> None:
    dst.weight.copy_(weight)
    dst.act_step.copy_(src.act_step)
    dst.weight_step.copy_(src.weight_step)
    dst.step_initialized.copy_(src.step_initialized)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, channels: int) -> None:
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
        getattr(dst, name).copy_(getattr(src, name)[:channels])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class OQATSupernet(OQATBase):
    """The weight-sharing quantized supernet of a search space at one bit-width.

    ``set_active_subnet(spec)`` selects the subnet its forward runs; ``get_subnet(spec)`` returns
    the equivalent static :class:`OQATNet` whose outputs equal this dynamic forward.
    """

    architecture = 'oqat_supernet'

    def __init__(self, *, space: 'str | SearchSpace' = 'imagenet', bits: int = 4, num_classes: int = 1000,
                 in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = 'avg'):
        super().__init__(get_space(space), bits=bits, num_classes=num_classes, in_chans=in_chans,
                         drop_rate=drop_rate, drop_path_rate=drop_path_rate, global_pool=global_pool)
        stages: list[nn.Module] = [nn.Sequential(self._first_block())]
        path_rates = self._block_drop_path_rates([MAX_DEPTH] * NUM_STAGES)
        for stage in range(NUM_STAGES):
            stages.append(nn.Sequential(*(ElasticInvertedResidual(self.space, stage, index, bits=self._build_bits,
                                                                  drop_path_rate=path_rates[stage][index])
                                          for index in range(MAX_DEPTH))))
        self.blocks = nn.Sequential(*stages)
        self._build_head()
        self.active_d = [max(self.space.d_choices)] * NUM_STAGES
        self.active_resolution = max(self.space.resolutions)

    @property
    def input_size(self) -> tuple[int, int, int]:
        resolution = max(self.space.resolutions)
        return (self.in_chans, resolution, resolution)

    def model_args(self) -> dict[str, Any]:
        return {**super().model_args(), 'bits': self.bits}

    def _check(self, spec: 'SubnetSpec | str') -> SubnetSpec:
        spec = self.space.check(SubnetSpec.of(spec))
        if spec.bits != self.bits:
            raise InvalidArgumentError(f'spec asks for {spec.bits} bits but this supernet is {self.bits}-bit; give '
                                       f'a {self.bits}-bit spec (ending in _b{self.bits}), or derive a {spec.bits}-bit '
                                       'supernet by bit inheritance (`oqat inherit`, oqatnets.training.inherit_bits)')
        return spec

    def set_active_subnet(self, spec: 'SubnetSpec | str') -> None:
        """Make the dynamic forward run ``spec`` (kernel, expand and depth; resolution is recorded)."""
        spec = self._check(spec)
        for stage in range(NUM_STAGES):
            for index, block in enumerate(self.blocks[stage + 1]):
                b = stage * MAX_DEPTH + index
                block.active_ks, block.active_e = spec.ks[b], spec.e[b]
        self.active_d = list(spec.d)
        self.active_resolution = spec.resolution

    @property
    def active_spec(self) -> SubnetSpec:
        ks, e = [], []
        for stage in range(NUM_STAGES):
            for block in self.blocks[stage + 1]:
                ks.append(block.active_ks)
                e.append(block.active_e)
        return SubnetSpec(self.active_resolution, ks, e, self.active_d, self.bits)

    def sample_active_subnet(self, generator: random.Random | None = None) -> SubnetSpec:
        """Pick and activate a uniformly random subnet; identical ``generator`` states give identical picks."""
        spec = self.space.sample(self.bits, generator or random.Random())
        self.set_active_subnet(spec)
        return spec

    def set_max_subnet(self) -> SubnetSpec:
        spec = self.space.largest(self.bits)
        self.set_active_subnet(spec)
        return spec

    def set_min_subnet(self) -> SubnetSpec:
        spec = self.space.smallest(self.bits)
        self.set_active_subnet(spec)
        return spec

    def stage_blocks(self, index: int) -> nn.Sequential:
        """The active blocks of stage ``index`` (the first ``active_d`` of each elastic stage)."""
        return self.blocks[0] if index == 0 else self.blocks[index][:self.active_d[index - 1]]

    @torch.no_grad()
    def get_subnet(self, spec: 'SubnetSpec | str | None' = None) -> OQATNet:
        """A static :class:`OQATNet` with ``spec``'s weights (default: the active subnet).

        Kernel transforms are folded into the depthwise weights and every step size is copied
        unchanged (the shared-step rule). The supernet's active subnet is left as it was.
        """
        spec = self._check(spec) if spec is not None else self.active_spec
        previous = self.active_spec
        self.set_active_subnet(spec)
        try:
            weight = self.conv_stem.weight
            net = OQATNet(spec, space=self.space, num_classes=self.num_classes, in_chans=self.in_chans,
                          drop_rate=self.drop_rate).to(device=weight.device, dtype=weight.dtype)
            net.conv_stem.load_state_dict(self.conv_stem.state_dict())
            net.bn1.load_state_dict(self.bn1.state_dict())
            net.blocks[0].load_state_dict(self.blocks[0].state_dict())
            for stage in range(NUM_STAGES):
                net.blocks[stage + 1] = nn.Sequential(*(block.to_static() for block in
                                                        self.blocks[stage + 1][:spec.d[stage]]))
            for name in ('final_conv', 'final_bn', 'conv_head', 'classifier'):
                getattr(net, name).load_state_dict(getattr(self, name).state_dict())
            parent = self.pretrained_cfg
            net.set_pretrained_cfg({**parent, 'supernet': parent.get('hf_hub_id') or parent.get('architecture')},
                                   source_args=self.model_args())
            net.train(self.training)
        finally:
            self.set_active_subnet(previous)
        return net

    def extra_repr(self) -> str:
        return f'space={self.space.name}, bits={self.bits}'
