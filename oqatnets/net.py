"""OQATNet: the static quantized network of one subnet spec, with the timm model interface."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices

from .errors import InvalidArgumentError, InvalidTypeError
from .layers import DepthwiseSeparable, InvertedResidual, batch_norm, create_act, drop_path_rates
from .pretrained import PretrainedCfg
from .quant import QuantConv2d, check_step_bits, get_bits, iter_quant_convs, set_bits, validate_bits
from .spec import MAX_DEPTH, NUM_STAGES, SearchSpace, SubnetSpec, get_space

__all__ = ['OQATBase', 'OQATNet', 'check_count', 'check_feature_indices', 'require_oqat_model']


class OQATBase(nn.Module):
    """Stem, head and the timm interface shared by :class:`OQATNet` and the elastic supernet.

    Float stem conv (3×3, stride) → blocks → quantized 1×1 final expand + BN + h_swish
    (``forward_features`` ends here) → global average pool → quantized 1×1 ``conv_head`` +
    h_swish → float linear ``classifier``.

    The model owns its identity: the bit-width lives in the quantized convs (``bits`` reads it,
    :meth:`set_bits` writes it), :meth:`model_args` gives the arguments that rebuild the model,
    and ``pretrained_cfg`` is the cfg it was given while the model still matches it, else a cfg
    derived from it (data config kept, source identity dropped; see ``PretrainedCfg.derived``).
    """

    architecture = 'oqat_base'  # the generic registry name that builds this class from model_args

    def __init__(self, space: 'str | SearchSpace', *, bits: int, num_classes: int, in_chans: int,
                 drop_rate: float, drop_path_rate: float = 0.0, global_pool: str = 'avg'):
        super().__init__()
        _check_pool(global_pool)
        self.space = get_space(space)
        self._build_bits = validate_bits(bits)
        self.num_classes = check_count('num_classes', num_classes, minimum=0)
        self.in_chans = check_count('in_chans', in_chans, minimum=1)
        if not 0.0 <= drop_rate < 1.0:
            raise InvalidArgumentError(f'drop_rate must be in [0, 1), got {drop_rate!r}')
        self.drop_rate = drop_rate
        self.drop_path_rate = drop_path_rate
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.num_features = self.space.final_expand_channels
        self.head_hidden_size = self.space.head_channels
        self._pretrained_cfg: tuple[dict[str, Any], dict[str, Any] | None] = ({}, None)
        self.register_load_state_dict_pre_hook(_check_all_step_bits)
        self.register_load_state_dict_post_hook(_weights_replaced)
        s = self.space
        self.conv_stem = nn.Conv2d(in_chans, s.stem_channels, 3, s.stem_stride, 1, bias=False)
        self.bn1 = batch_norm(s.stem_channels)
        self.act1 = create_act('h_swish')

    def _build_head(self) -> None:
        s = self.space
        self.final_conv = QuantConv2d(s.stage_channels[-1], s.final_expand_channels, 1, bits=self._build_bits,
                                      signed_input=s.signed_inputs)
        self.final_bn = batch_norm(s.final_expand_channels)
        self.final_act = create_act('h_swish')
        self.conv_head = QuantConv2d(s.final_expand_channels, s.head_channels, 1, bits=self._build_bits, inplace=True)
        self.act2 = create_act('h_swish')
        self.classifier = self._make_classifier(self.num_classes)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.space.head_channels, num_classes) if num_classes > 0 else nn.Identity()

    def _first_block(self) -> DepthwiseSeparable:
        s = self.space
        return DepthwiseSeparable(s.stem_channels, s.first_block_channels, kernel_size=3, stride=1, act='relu',
                                  bits=self._build_bits, signed_input=s.signed_inputs)

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        s = self.space
        info, reduction = [], s.stem_stride
        info.append({'num_chs': s.first_block_channels, 'reduction': reduction, 'module': 'blocks.0'})
        for stage in range(NUM_STAGES):
            reduction *= s.stage_strides[stage]
            info.append({'num_chs': s.stage_channels[stage], 'reduction': reduction, 'module': f'blocks.{stage + 1}'})
        info.append({'num_chs': s.final_expand_channels, 'reduction': reduction, 'module': 'final_act'})
        return info

    @property
    def default_out_indices(self) -> tuple[int, ...]:
        """What ``features_only`` returns by default: the last block at each stride (timm's choice; for the
        ImageNet space strides 2, 4, 8, 16, 32)."""
        blocks = [info['reduction'] for info in self.feature_info[:-1]]
        return tuple(i for i, r in enumerate(blocks) if i == len(blocks) - 1 or blocks[i + 1] != r)

    @property
    def bits(self) -> int:
        """The network's bit-width, read from its quantized convs (32 when quantization is off)."""
        return get_bits(self)

    def set_bits(self, bits: int) -> None:
        """Set the bit-width of every quantized conv (32 turns quantization off); spec, profile and
        ``pretrained_cfg`` follow."""
        set_bits(self, bits)

    def model_args(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model (what ``config.json`` stores as ``model_args``)."""
        return {'space': self.space.as_arg(), 'num_classes': self.num_classes, 'in_chans': self.in_chans}

    @property
    def input_size(self) -> tuple[int, int, int]:
        raise NotImplementedError

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg``: the cfg this model was given, or one derived from it once the
        model no longer matches it (other bits, spec, space, classes or input channels)."""
        return self._pretrained_cfg[0] if self.cfg_is_own() else self.derived_pretrained_cfg()

    def cfg_is_own(self) -> bool:
        """Whether the cfg the model was given still describes it (else :attr:`pretrained_cfg` is derived)."""
        cfg, source_args = self._pretrained_cfg
        return bool(cfg.get('architecture')) and source_args == self.model_args()

    def derived_pretrained_cfg(self) -> dict[str, Any]:
        """The cfg of this model with other weights than its cfg's: data config kept, source identity
        (hub id, tag, hashes, accuracy) dropped. Changes nothing; :meth:`derive_pretrained_cfg` adopts it."""
        return PretrainedCfg.from_dict(self._pretrained_cfg[0]).derived(
            architecture=self.architecture, input_size=self.input_size, num_classes=self.num_classes,
            bits=self.bits, spec=self._spec_str(), space=self.space.as_arg()).to_dict()

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: 'dict[str, Any] | PretrainedCfg') -> None:
        self.set_pretrained_cfg(cfg)

    def set_pretrained_cfg(self, cfg: 'dict[str, Any] | PretrainedCfg', *,
                           source_args: dict[str, Any] | None = None) -> None:
        """Attach ``cfg``, which describes the model built from ``source_args`` (default: this model)."""
        data = cfg.to_dict() if isinstance(cfg, PretrainedCfg) else dict(cfg)
        self._pretrained_cfg = (data, self.model_args() if source_args is None else dict(source_args))

    def derive_pretrained_cfg(self) -> None:
        """Say that the weights are no longer the ones the cfg names (finetuned, recalibrated, read from another
        file): from now on the cfg is derived, its data config kept and its source's identity (hub id,
        hashes, accuracy) dropped, as for a model of other bits or classes."""
        self._pretrained_cfg = (self.pretrained_cfg, None)

    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    def _spec_str(self) -> str | None:
        return None

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the float classifier with a new one (0 gives pre-logits); every step size is kept. The
        cfg is derived from then on: the weights are no longer its source's."""
        if global_pool is not None:
            _check_pool(global_pool)
        self.num_classes = check_count('num_classes', num_classes, minimum=0)
        self.classifier = self._make_classifier(num_classes)
        self.derive_pretrained_cfg()

    def _block_drop_path_rates(self, depths: list[int]) -> list[list[float]]:
        """Stochastic-depth rate of every inverted-residual block, by stage, rising linearly (timm's schedule;
        the first block counts as block 0)."""
        rates = drop_path_rates(self.drop_path_rate, 1 + sum(depths))[1:]
        out, start = [], 0
        for depth in depths:
            out.append(rates[start:start + depth])
            start += depth
        return out

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's parameter groups for layer-wise LR decay: the stem, then each block (or stage when
        ``coarse``), then the head."""
        return {'stem': r'^conv_stem|bn1',
                'blocks': r'^blocks\.(\d+)' if coarse else r'^blocks\.(\d+)\.(\d+)'}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in backward (``timm.models.checkpoint_seq``) to save memory."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters never decayed by name: the LSQ step sizes (decaying them shrinks the quantization grid)."""
        return {name for name, _ in self.named_parameters() if name.endswith(('act_step', 'weight_step'))}

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_stem(x)))

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.final_bn(self.final_conv(x)))

    def stage_blocks(self, index: int) -> nn.Sequential:
        """The blocks stage ``index`` runs (``blocks.0`` is the first block)."""
        return self.blocks[index]

    def forward_stage(self, x: torch.Tensor, index: int) -> torch.Tensor:
        blocks = self.stage_blocks(index)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint_seq(blocks, x)
        return blocks(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for index in range(len(self.blocks)):
            x = self.forward_stage(x, index)
        return self.forward_final(x)

    def forward_intermediates(self, x: torch.Tensor, indices: 'int | list[int] | None' = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False) -> 'list[torch.Tensor] | tuple[torch.Tensor, list]':
        """timm's feature API: the outputs at ``feature_info`` positions ``indices`` (the first block, each
        stage, the final expand), optionally with the final features."""
        if output_fmt != 'NCHW':
            raise InvalidArgumentError(f"output_fmt={output_fmt!r}: OQATNets give 'NCHW' features only")
        num_stages = len(self.blocks)
        if indices is not None:
            check_feature_indices(indices, num_stages + 1, name='indices')
        take, max_index = feature_take_indices(num_stages + 1, indices)
        intermediates = []
        run_all = not (stop_early or intermediates_only)  # else stop after the last index asked for
        x = self.forward_stem(x)
        for index in range(num_stages):
            if not run_all and index > max_index:
                break
            x = self.forward_stage(x, index)
            if index in take:
                intermediates.append(x)
        if run_all or max_index == num_stages:
            x = self.forward_final(x)
            if num_stages in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        x = self.act2(self.conv_head(x)).flatten(1)
        if self.drop_rate > 0.0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_pool(global_pool: str) -> None:
    if global_pool != 'avg':
        raise InvalidArgumentError(f"global_pool={global_pool!r} is not supported: the quantized conv_head is "
                                   "trained on average-pooled features; use 'avg'")


def require_oqat_model(model: Any, *, action: str) -> None:
    """Refuse anything but an OQATNet or supernet for ``action`` (another library's model, a features_only wrapper)."""
    if isinstance(model, OQATBase):
        return
    wrapped = isinstance(getattr(model, 'model', None), OQATBase)  # timm's FeatureGetterNet holds it as .model
    raise InvalidTypeError(f'{action} takes an OQATNet or OQATSupernet, got {type(model).__name__}'
                           + ('; pass the model itself, not its features_only wrapper' if wrapped else ''))


def check_feature_indices(indices: Any, n: int, *, name: str) -> None:
    """Refuse timm feature indices (an int N for the last N maps, or positions) that do not fit ``n`` maps."""
    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)
    fits = (0 < indices <= n if is_int(indices) else
            isinstance(indices, (list, tuple)) and bool(indices) and all(is_int(i) and -n <= i < n for i in indices))
    if not fits:
        raise InvalidArgumentError(f'{name}={indices!r}: this model has {n} feature maps; pass positions 0 to '
                                   f'{n - 1} (or -{n} to -1), or an int N for the last N')


def _check_all_step_bits(model: OQATBase, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Every conv's step bits checked before any tensor is copied, so a refused load leaves the model as it was
    (each conv checks its own again, for a load into one submodule)."""
    for name, conv in iter_quant_convs(model):
        check_step_bits(conv, state_dict, f'{prefix}{name}.')


def _weights_replaced(model: OQATBase, incompatible_keys: Any) -> None:
    """After any ``load_state_dict`` (timm's ``checkpoint_path``, a resume, a user's own file) the weights
    are no longer known to be the cfg's; whoever loads the cfg's own weights sets the cfg again after."""
    model.derive_pretrained_cfg()


def check_count(name: str, value: int, *, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) of at least ``minimum``; else a one-line refusal naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f'{name} must be an integer >= {minimum}, got {value!r}')
    return value


class OQATNet(OQATBase):
    """A static quantized OQATNet built from a :class:`SubnetSpec`.

    Layer names follow timm (``conv_stem``, ``blocks.<stage>.<block>.conv_pw`` …,
    ``conv_head``, ``classifier``); ``blocks.0`` is the fixed first block and
    ``blocks.1``–``blocks.5`` hold the ``d`` active blocks of each stage, so a subnet's keys are
    its supernet's keys.
    """

    architecture = 'oqatnet'

    def __init__(self, spec: 'SubnetSpec | str', *, space: 'str | SearchSpace' = 'imagenet',
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = 'avg'):
        spec = SubnetSpec.of(spec)
        space = get_space(space)
        space.check(spec)
        super().__init__(space, bits=spec.bits, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                         drop_path_rate=drop_path_rate, global_pool=global_pool)
        self._spec = spec
        stages: list[nn.Module] = [nn.Sequential(self._first_block())]
        path_rates = self._block_drop_path_rates(list(spec.d))
        for stage in range(NUM_STAGES):
            blocks = []
            for index in range(spec.d[stage]):
                b = stage * MAX_DEPTH + index
                mid = space.mid_channels(stage, index, spec.e[b])
                blocks.append(InvertedResidual(
                    space.block_in_channels(stage, index), space.stage_channels[stage],
                    kernel_size=spec.ks[b], stride=space.stage_strides[stage] if index == 0 else 1,
                    mid_channels=mid, act=space.stage_acts[stage],
                    se_channels=space.se_channels(mid) if space.stage_se[stage] else 0, bits=spec.bits,
                    drop_path_rate=path_rates[stage][index], signed_input=space.signed_inputs))
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self._build_head()

    @property
    def spec(self) -> SubnetSpec:
        """The subnet this net is, at its current bit-width."""
        bits = self.bits
        return self._spec if self._spec.bits == bits else self._spec.replace(bits=bits)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self._spec.resolution, self._spec.resolution)

    def set_resolution(self, resolution: int) -> None:
        """Make ``resolution`` the input size of this net's spec (the net itself takes any size): what a net
        finetuned at another resolution is deployed at, so its profile and cfg follow."""
        self._spec = self._spec.replace(resolution=check_count('resolution', resolution, minimum=1))

    def model_args(self) -> dict[str, Any]:
        return {**super().model_args(), 'spec': str(self.spec)}

    def _spec_str(self) -> str | None:
        return str(self.spec)

    def extra_repr(self) -> str:
        return f'spec={self.spec}, space={self.space.name}'
