"""Search spaces and subnet specs.

A :class:`SearchSpace` fixes the macro architecture (widths, strides, activations, SE) and the
elastic choices; a :class:`SubnetSpec` picks one subnet: ``(resolution, ks[20], e[20], d[5], bits)``.
Entries of inactive blocks are ignored but kept, as the authors' tooling does.
"""
from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import InvalidArgumentError, InvalidTypeError
from .quant import SUPPORTED_BITS, validate_bits

__all__ = ['SearchSpace', 'SubnetSpec', 'make_divisible', 'get_space', 'list_spaces', 'SPACES',
           'NUM_STAGES', 'MAX_DEPTH', 'NUM_BLOCKS']

NUM_STAGES = 5
MAX_DEPTH = 4
NUM_BLOCKS = NUM_STAGES * MAX_DEPTH


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` without going 10% below it (MobileNet rule)."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


@dataclass(frozen=True)
class SearchSpace:
    """The Once-for-All MobileNetV3 space, parametrised so that small-input presets share the code."""

    name: str
    stem_channels: int = 16
    stem_stride: int = 2
    first_block_channels: int = 16
    stage_channels: tuple[int, ...] = (24, 40, 80, 112, 160)
    stage_strides: tuple[int, ...] = (2, 2, 2, 1, 2)
    stage_acts: tuple[str, ...] = ('relu', 'relu', 'h_swish', 'h_swish', 'h_swish')
    stage_se: tuple[bool, ...] = (False, True, False, True, True)
    final_expand_channels: int = 960
    head_channels: int = 1280
    ks_choices: tuple[int, ...] = (3, 5, 7)
    e_choices: tuple[int, ...] = (3, 4, 6)
    d_choices: tuple[int, ...] = (2, 3, 4)
    resolutions: tuple[int, ...] = tuple(range(128, 225, 4))
    # Quantize the inputs that can be negative (each block's input: the expand 1×1 convs, the first
    # block's depthwise conv, the final 1×1 conv) on a signed grid. False is the authors' quantizer
    # (unsigned everywhere, negative inputs clip to 0), which their checkpoints expect.
    signed_inputs: bool = False
    description: str = ''

    def __post_init__(self) -> None:
        for attr in ('stage_channels', 'stage_strides', 'stage_acts', 'stage_se'):
            if len(getattr(self, attr)) != NUM_STAGES:
                raise InvalidArgumentError(f'SearchSpace.{attr} needs {NUM_STAGES} entries, got {getattr(self, attr)!r}')
        if not set(self.ks_choices) <= {3, 5, 7}:
            raise InvalidArgumentError('SearchSpace.ks_choices must be a subset of (3, 5, 7)')

    @property
    def max_kernel(self) -> int:
        return max(self.ks_choices)

    @property
    def max_expand(self) -> int:
        return max(self.e_choices)

    @property
    def reduction(self) -> int:
        """Total output stride of the network."""
        total = self.stem_stride
        for s in self.stage_strides:
            total *= s
        return total

    def block_in_channels(self, stage: int, index: int) -> int:
        if index > 0:
            return self.stage_channels[stage]
        return self.first_block_channels if stage == 0 else self.stage_channels[stage - 1]

    def mid_channels(self, stage: int, index: int, expand: int) -> int:
        return make_divisible(round(self.block_in_channels(stage, index) * expand), 8)

    def se_channels(self, mid: int) -> int:
        return make_divisible(mid // 4, 8)

    def largest(self, bits: int, resolution: int | None = None) -> 'SubnetSpec':
        return SubnetSpec(resolution or max(self.resolutions), [self.max_kernel] * NUM_BLOCKS,
                          [self.max_expand] * NUM_BLOCKS, [max(self.d_choices)] * NUM_STAGES, bits)

    def smallest(self, bits: int, resolution: int | None = None) -> 'SubnetSpec':
        return SubnetSpec(resolution or min(self.resolutions), [min(self.ks_choices)] * NUM_BLOCKS,
                          [min(self.e_choices)] * NUM_BLOCKS, [min(self.d_choices)] * NUM_STAGES, bits)

    def sample(self, bits: int, rng: random.Random) -> 'SubnetSpec':
        """A uniformly random subnet, drawn from ``rng`` (a :class:`random.Random`)."""
        return SubnetSpec(
            rng.choice(self.resolutions),
            [rng.choice(self.ks_choices) for _ in range(NUM_BLOCKS)],
            [rng.choice(self.e_choices) for _ in range(NUM_BLOCKS)],
            [rng.choice(self.d_choices) for _ in range(NUM_STAGES)],
            bits)

    def check(self, spec: 'SubnetSpec') -> 'SubnetSpec':
        """Raise a one-line ValueError if ``spec`` uses a choice this space does not have."""
        for name, values, allowed in (('ks', spec.ks, self.ks_choices), ('e', spec.e, self.e_choices),
                                      ('d', spec.d, self.d_choices)):
            bad = sorted(set(values) - set(allowed))
            if bad:
                raise InvalidArgumentError(f'SubnetSpec.{name} uses {bad}, not in the {self.name!r} space; allowed: {list(allowed)}')
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def as_arg(self) -> 'str | dict[str, Any]':
        """How ``model_args`` store this space: its preset name, or the full dict when it is custom."""
        return self.name if SPACES.get(self.name) == self else self.to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'SearchSpace':
        """Build from :meth:`to_dict` output; the round-1 names ``kernel_choices`` … are still read."""
        data = {_OLD_FIELDS.get(k, k): v for k, v in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgumentError(f'unknown SearchSpace fields {unknown}; known: {", ".join(sorted(known))}')
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# One vocabulary for the elastic choices, the spec's: ks (kernel sizes), e (expand ratios), d (depths).
_OLD_FIELDS = {'kernel_choices': 'ks_choices', 'expand_choices': 'e_choices', 'depth_choices': 'd_choices'}


_SPEC_RE = re.compile(r'^r(?P<r>[0-9]+)_k(?P<k>[0-9]{20})_e(?P<e>[0-9]{20})_d(?P<d>[0-9]{5})_b(?P<b>[0-9]+)$', re.ASCII)


def _int_tuple(name: str, values: Any, length: int, allowed: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f'SubnetSpec.{name} must be {length} integers from {list(allowed)}, got {values!r}') from None
    if len(out) != length or any(v not in allowed for v in out):
        raise InvalidArgumentError(f'SubnetSpec.{name} must be {length} integers from {list(allowed)}, got {list(out)}')
    return out


@dataclass(frozen=True)
class SubnetSpec:
    """One subnet of the space: input resolution, 20 kernel sizes, 20 expand ratios, 5 depths, bits.

    ``str(spec)`` is a compact form, ``r220_k<20 digits>_e<20 digits>_d<5 digits>_b2``, that
    :meth:`parse` reads back and the CLI accepts.
    """

    resolution: int
    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    bits: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or not 8 <= self.resolution <= 2048:
            raise InvalidArgumentError(f'SubnetSpec.resolution must be an integer from 8 to 2048, got {self.resolution!r}')
        object.__setattr__(self, 'ks', _int_tuple('ks', self.ks, NUM_BLOCKS, (3, 5, 7)))
        object.__setattr__(self, 'e', _int_tuple('e', self.e, NUM_BLOCKS, (3, 4, 6)))
        object.__setattr__(self, 'd', _int_tuple('d', self.d, NUM_STAGES, (2, 3, 4)))
        try:
            validate_bits(self.bits)
        except ValueError:
            raise InvalidArgumentError(f'SubnetSpec.bits must be one of {list(SUPPORTED_BITS)}, got {self.bits!r}') from None

    def __str__(self) -> str:
        join = ''.join
        return (f'r{self.resolution}_k{join(map(str, self.ks))}_e{join(map(str, self.e))}'
                f'_d{join(map(str, self.d))}_b{self.bits}')

    @classmethod
    def parse(cls, text: str) -> 'SubnetSpec':
        """Read the compact form written by ``str(spec)``."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f'a subnet spec must be a string, got {type(text).__name__}')
        match = _SPEC_RE.match(text.strip())
        if not match:
            shown = text if len(text) <= 80 else f'{text[:60]}… ({len(text)} characters)'  # never echo a megabyte
            raise InvalidArgumentError(f'cannot parse subnet spec {shown!r}; expected r<res>_k<20 digits>_e<20 digits>'
                             f'_d<5 digits>_b<bits>, e.g. r224_k{"7" * 20}_e{"6" * 20}_d44444_b4')
        return cls(int(match['r']), [int(c) for c in match['k']], [int(c) for c in match['e']],
                   [int(c) for c in match['d']], int(match['b']))

    @classmethod
    def of(cls, spec: 'SubnetSpec | str') -> 'SubnetSpec':
        """``spec`` itself, or parsed from its string form; anything else is refused."""
        if isinstance(spec, SubnetSpec):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        raise InvalidTypeError(f'spec must be a SubnetSpec or its string (r<res>_k<20>_e<20>_d<5>_b<bits>), '
                               f'got {type(spec).__name__}')

    def replace(self, **changes: Any) -> 'SubnetSpec':
        data = self.to_dict()
        data.update(changes)
        return SubnetSpec.from_dict(data)

    def active_blocks(self) -> Iterable[tuple[int, int, int, int]]:
        """(stage, index, kernel, expand) of each block that runs, in order."""
        for stage in range(NUM_STAGES):
            for index in range(self.d[stage]):
                b = stage * MAX_DEPTH + index
                yield stage, index, self.ks[b], self.e[b]

    def to_dict(self) -> dict[str, Any]:
        return {'resolution': self.resolution, 'ks': list(self.ks), 'e': list(self.e), 'd': list(self.d),
                'bits': self.bits}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'SubnetSpec':
        unknown = set(data) - {'resolution', 'ks', 'e', 'd', 'bits'}
        if unknown:
            raise InvalidArgumentError(f'unknown SubnetSpec fields {sorted(unknown)}; expected resolution, ks, e, d, bits')
        return cls(data['resolution'], data['ks'], data['e'], data['d'], data.get('bits', 4))


SPACES: dict[str, SearchSpace] = {
    'imagenet': SearchSpace(
        name='imagenet',
        description='The Once-for-All MobileNetV3 space (width 1.0) of the paper, 128-224 px.'),
    'small': SearchSpace(
        name='small',
        stem_channels=16, stem_stride=1, first_block_channels=16,
        stage_channels=(16, 24, 32, 48, 64), stage_strides=(2, 2, 2, 1, 1),
        final_expand_channels=192, head_channels=256,
        resolutions=(24, 28, 32),
        description='The same elastic MobileNetV3 space, narrower and with output stride 8, '
                    'for 28-64 px data (Fashion-MNIST, MNIST) trained on a CPU.'),
}
# The small space with signed block inputs: LSQ's unsigned grid clips every block input (a linear
# bottleneck output) at 0, which cost the largest subnet 3.2 points at 4 bits and stalls 2-bit
# training from scratch at chance (benchmarks/bench_quant_gap.py, docs/TRAINING.md).
SPACES['small_signed'] = replace(
    SPACES['small'], name='small_signed', signed_inputs=True,
    description='The small space with signed quantization of the block inputs (not the authors\' quantizer).')
# The same at the built-in sets' own 28 px and below: the largest subnet sees every pixel once instead of
# an upsampling to 32. Over 3 paired seeds the demo's 4-bit stage was level and its 2-bit stage 1.6-2.1
# points higher, at 0.84-0.86x the step time (docs/TRAINING.md).
SPACES['small_signed_28'] = replace(
    SPACES['small_signed'], name='small_signed_28', resolutions=(20, 24, 28),
    description='small_signed at 20-28 px, the size of the built-in data sets: the default of the Fashion-MNIST demo.')


def list_spaces() -> list[str]:
    return sorted(SPACES)


def get_space(space: 'str | SearchSpace | dict') -> SearchSpace:
    """Resolve a space name, dict (as stored in config.json) or instance."""
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, dict):
        return SearchSpace.from_dict(space)
    try:
        return SPACES[space]
    except KeyError:
        raise InvalidArgumentError(f'unknown search space {space!r}; known: {", ".join(list_spaces())}') from None
