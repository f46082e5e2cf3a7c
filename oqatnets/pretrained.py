"""``PretrainedCfg``: where an entry's weights live and what they expect, timm's field names plus ours.

timm's own dataclass rejects unknown keys, so OQATNets keeps its own with the same field names
(``hf_hub_id``, ``input_size``, ``crop_pct``, ``mean``, ``license`` …) and the quantization
and provenance fields a low-bit zoo needs (``bits``, ``spec``, ``space``, ``supernet``,
``top1``/``top5`` and where they came from, ``sha256`` per file). ``to_dict()`` is what a
model's ``pretrained_cfg`` attribute holds and what ``config.json`` stores.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from .data import IMAGENET_MEAN, IMAGENET_STD

__all__ = ['PretrainedCfg', 'WEIGHTS_FILE', 'PACKED_FILE', 'CONFIG_FILE', 'MODEL_CARD_FILE', 'TIMM_FIELDS',
           'DATA_FIELDS', 'channel_stats', 'data_config_problems', 'is_local_path',
           'without_local_parent']

WEIGHTS_FILE = 'model.safetensors'
PACKED_FILE = 'model.packed.safetensors'
CONFIG_FILE = 'config.json'
MODEL_CARD_FILE = 'README.md'


@dataclass
class PretrainedCfg:
    # where the weights are (timm)
    url: str | None = None
    file: str | None = None
    hf_hub_id: str | None = None
    hf_hub_filename: str | None = None
    source: str | None = None
    architecture: str | None = None
    tag: str | None = None
    # input (timm)
    input_size: tuple[int, int, int] = (3, 224, 224)
    test_input_size: tuple[int, int, int] | None = None
    min_input_size: tuple[int, int, int] | None = None
    fixed_input_size: bool = False
    interpolation: str = 'bilinear'
    crop_pct: float = 0.875
    test_crop_pct: float | None = None
    crop_mode: str = 'center'
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # head (timm)
    num_classes: int = 1000
    label_offset: int | None = None
    label_names: tuple[str, ...] | None = None
    pool_size: tuple[int, int] | None = None
    first_conv: str = 'conv_stem'
    classifier: str = 'classifier'
    # provenance (timm)
    license: str | None = None
    description: str | None = None
    origin_url: str | None = None
    paper_name: str | None = 'Once Quantization-Aware Training: High Performance Extremely Low-bit Architecture Search'
    paper_ids: str | None = 'arXiv:2010.04354'
    notes: tuple[str, ...] | None = None
    # quantization and the network (ours)
    bits: int | None = None
    spec: str | None = None
    space: str | dict | None = 'imagenet'
    quantizer: str = 'lsq'
    supernet: str | None = None
    aliases: tuple[str, ...] = ()
    # accuracy and where it came from (ours)
    dataset: str | None = None
    top1: float | None = None
    top5: float | None = None
    metrics_source: str | None = None
    # costs measured by oqatnets.profile (ours): macs, params, bitops, size_mbit, ...
    profile: dict[str, Any] | None = None
    # integrity (ours): sha256 per file name; None for a file means "not published yet"
    sha256: dict[str, str | None] = field(default_factory=dict)

    @property
    def has_weights(self) -> bool:
        """A weight source is configured (timm's meaning)."""
        return bool(self.url or self.file or self.hf_hub_id)

    @property
    def is_published(self) -> bool:
        """Weights have been published: a local file is given or the table records their sha256."""
        return bool(self.file) or any(self.sha256.get(name) for name in (WEIGHTS_FILE, PACKED_FILE))

    @property
    def weight_files(self) -> tuple[str, ...]:
        """File names to try in a Hub repo or folder, best first."""
        return (self.hf_hub_filename,) if self.hf_hub_filename else (WEIGHTS_FILE, PACKED_FILE)

    def replace(self, **changes: Any) -> 'PretrainedCfg':
        return dataclasses.replace(self, **changes)

    def derived(self, *, architecture: str, input_size: tuple[int, int, int], num_classes: int, bits: int,
                spec: str | None, space: 'str | dict') -> 'PretrainedCfg':
        """The cfg of a model derived from this one (a subnet, other bits, another head or input).

        The data config (interpolation, crop, mean/std, license, parent supernet) is kept, mean/std
        per input channel (:func:`channel_stats`); the
        source's identity (hub id, file, tag, accuracy, aliases, description, hashes, profile) is
        dropped; architecture, input size, classes, bits, spec and space describe the new model.
        Label names and the data set stay only while the classes are the same.
        """
        same_head = num_classes == self.num_classes
        kept = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in DATA_FIELDS}
        if not same_head:
            kept.pop('label_names', None)
            kept.pop('dataset', None)
        kept.update(mean=channel_stats(self.mean, input_size[0]), std=channel_stats(self.std, input_size[0]))
        return PretrainedCfg(**kept, architecture=architecture, input_size=tuple(input_size),
                             num_classes=num_classes, bits=bits, spec=spec, space=space)

    def to_dict(self, *, remove_source: bool = False, remove_null: bool = True) -> dict[str, Any]:
        """A JSON-ready dict; ``remove_source`` drops the local ``file``/``source``/``url`` keys."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if remove_source and f.name in ('file', 'source', 'url'):
                continue
            if remove_null and value is None and f.name not in ('pool_size', 'first_conv', 'classifier'):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'PretrainedCfg':
        """Build from a dict, ignoring keys that this version does not know (forward compatible)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) and k != 'sha256' else v for k, v in data.items() if k in known}
        if 'sha256' in kwargs:
            kwargs['sha256'] = dict(kwargs['sha256'] or {})
        return cls(**kwargs)


def is_local_path(value: Any) -> bool:
    """Whether a recorded source (a cfg's ``supernet``) is a folder on this machine (``local-dir:`` or an absolute
    path, as training records its parents), not a zoo name or Hub id that means the same thing elsewhere."""
    return isinstance(value, str) and (value.startswith('local-dir:') or os.path.isabs(value))


def without_local_parent(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` without a parent ``supernet`` recorded by its local path: what a published config.json and a packed
    file's embedded cfg hold (a path on this machine means nothing elsewhere, and names the user's folders)."""
    return {k: v for k, v in cfg.items() if not (k == 'supernet' and is_local_path(v))}


# A measured figure of a cfg, and the fields of the transform it was measured through: change one of these
# and the figures no longer say what a user feeding image files through the cfg gets.
ACCURACY_FIELDS = ('top1', 'top5', 'metrics_source')
# Where the weights come from: an overlay naming one of these loads other weights than the cfg's.
WEIGHT_SOURCE_FIELDS = ('file', 'url', 'hf_hub_id', 'hf_hub_filename', 'source')
# That, plus the name and the bytes: a model's own cfg says them while it vouches for the weights (see
# ``oqatnets.weights.cfg_of_weights``); no caller may write them onto other weights.
IDENTITY_FIELDS = (*WEIGHT_SOURCE_FIELDS, 'tag', 'aliases', 'sha256')
TRANSFORM_FIELDS = ('crop_pct', 'crop_mode', 'interpolation', 'mean', 'std')


def changes_transform(cfg: 'dict[str, Any] | PretrainedCfg', changes: dict[str, Any]) -> bool:
    """Whether ``changes`` set a transform field of ``cfg`` to another value (lists and tuples alike)."""
    old = cfg.to_dict() if isinstance(cfg, PretrainedCfg) else cfg
    same = (lambda v: tuple(v) if isinstance(v, (list, tuple)) else v)
    return any(k in changes and same(changes[k]) != same(old.get(k)) for k in TRANSFORM_FIELDS)


# What a derived model keeps of its source's cfg (everything else is identity or set anew).
DATA_FIELDS = ('interpolation', 'crop_pct', 'crop_mode', 'mean', 'std', 'label_offset', 'label_names', 'pool_size',
               'first_conv', 'classifier', 'license', 'paper_name', 'paper_ids', 'quantizer', 'supernet', 'dataset')

TIMM_FIELDS = (
    'url', 'file', 'hf_hub_id', 'hf_hub_filename', 'source', 'architecture', 'tag', 'input_size',
    'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct', 'test_crop_pct',
    'crop_mode', 'mean', 'std', 'num_classes', 'label_offset', 'label_names', 'pool_size', 'first_conv',
    'classifier', 'license', 'description', 'origin_url', 'paper_name', 'paper_ids', 'notes',
)


_INTERPOLATIONS = ('nearest', 'nearest-exact', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos')  # torchvision's
_CROP_MODES = ('center', 'squash', 'border')  # timm's


def channel_stats(values: tuple[float, ...], chans: int) -> tuple[float, ...]:
    """A mean or std for ``chans`` input channels from one for ``len(values)``: one channel takes their
    average (a grey image is R = G = B), more repeat them as timm's ``adapt_input_conv`` repeats the stem."""
    values = tuple(values)
    if len(values) in (1, chans):
        return values
    if chans == 1:
        return (round(sum(values) / len(values), 6),)
    return tuple(values[i % len(values)] for i in range(chans))


def _is_number(value: Any, *, positive: bool = False) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (value > 0 or not positive)


def data_config_problems(cfg: PretrainedCfg, *, num_classes: int | None = None) -> list[str]:
    """What in ``cfg``'s data config preprocessing or prediction could not use (empty when nothing; checked on
    load and save, not deep inside a transform); label names must name each of ``num_classes`` classes."""
    problems = []
    size = cfg.input_size
    if not (isinstance(size, (list, tuple)) and len(size) == 3 and all(isinstance(v, int) and _is_number(v, positive=True)
                                                                 for v in size)):
        problems.append(f'input_size {size!r} is not three positive integers')
    if not _is_number(cfg.crop_pct, positive=True):
        problems.append(f'crop_pct {cfg.crop_pct!r} is not a positive number')
    if cfg.interpolation not in _INTERPOLATIONS:
        problems.append(f'interpolation {cfg.interpolation!r} is not one of {", ".join(_INTERPOLATIONS)}')
    if cfg.crop_mode not in _CROP_MODES:
        problems.append(f'crop_mode {cfg.crop_mode!r} is not one of {", ".join(_CROP_MODES)}')
    for name, positive in (('mean', False), ('std', True)):
        value = getattr(cfg, name)
        if not (isinstance(value, (list, tuple)) and value and all(_is_number(v, positive=positive) for v in value)):
            problems.append(f'{name} {value!r} is not a list of {"positive " if positive else ""}numbers')
        elif isinstance(size, (list, tuple)) and size and len(value) not in (1, size[0]):
            problems.append(f'{name} has {len(value)} values for {size[0]} input channels; give '
                            + ('1' if size[0] == 1 else f'1 or {size[0]}'))
    for name in ('top1', 'top5'):
        value = getattr(cfg, name)
        if value is not None and not (_is_number(value) and 0 <= value <= 100):
            problems.append(f'{name} {value!r} is not a percentage')
    names = cfg.label_names
    if names is not None and not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        problems.append(f'label_names {names!r} is not a list of strings')
    elif names is not None and num_classes is not None and len(names) != num_classes:
        problems.append(f'label_names has {len(names)} names for {num_classes} classes')
    return problems
