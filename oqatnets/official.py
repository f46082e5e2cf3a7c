"""The authors' OQA supernet checkpoints: key mapping, safe loading and conversion.

Their files (``oqa_mbv3_d234_e346_k357_w1.0_b{4,3,2,1}``) are torch pickles holding
``{'state_dict': ...}`` in OFA's module layout plus LSQ ``sa``/``sw``. We read them with
``weights_only=True`` and map each key onto :class:`~oqatnets.supernet.OQATSupernet`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from . import registry
from .errors import FileMissingError, InvalidArgumentError, InvalidFileError, OfficialCheckpointError
from .quant import STEP_BITS_DTYPE
from .spec import MAX_DEPTH
from .supernet import OQATSupernet
from .weights import vouch_for_weights

__all__ = ['load_official_supernet', 'official_to_oqat_key', 'bits_from_official_name', 'read_checkpoint_state',
           'OfficialCheckpointError']

_STEP_NAMES = {'sa': 'act_step', 'sw': 'weight_step'}
_BLOCK_PARTS = [  # (authors' sub-path, ours), longest first within each conv
    ('mobile_inverted_conv.inverted_bottleneck.conv.conv.', 'conv_pw.'),
    ('mobile_inverted_conv.inverted_bottleneck.bn.bn.', 'bn_pw.'),
    ('mobile_inverted_conv.depth_conv.conv.conv.', 'conv_dw.'),
    ('mobile_inverted_conv.depth_conv.conv.', 'conv_dw.'),
    ('mobile_inverted_conv.depth_conv.bn.bn.', 'bn_dw.'),
    ('mobile_inverted_conv.depth_conv.bn.', 'bn_dw.'),
    ('mobile_inverted_conv.depth_conv.se.fc.reduce.', 'se.conv_reduce.'),
    ('mobile_inverted_conv.depth_conv.se.fc.expand.', 'se.conv_expand.'),
    ('mobile_inverted_conv.point_linear.conv.conv.', 'conv_pwl.'),
    ('mobile_inverted_conv.point_linear.conv.', 'conv_pwl.'),
    ('mobile_inverted_conv.point_linear.bn.bn.', 'bn_pwl.'),
    ('mobile_inverted_conv.point_linear.bn.', 'bn_pwl.'),
]
_TOP_PARTS = [
    ('first_conv.conv.', 'conv_stem.'), ('first_conv.bn.', 'bn1.'),
    ('final_expand_layer.conv.', 'final_conv.'), ('final_expand_layer.bn.', 'final_bn.'),
    ('feature_mix_layer.conv.', 'conv_head.'), ('classifier.linear.', 'classifier.'),
]
_BLOCK_RE = re.compile(r'^blocks\.(\d+)\.(.*)$')
_MATRIX_RE = re.compile(r'^(\d)to(\d)_matrix$')


def _rename_leaf(leaf: str) -> str:
    if leaf in _STEP_NAMES:
        return _STEP_NAMES[leaf]
    match = _MATRIX_RE.match(leaf)
    return f'transform_{match[1]}to{match[2]}' if match else leaf


def official_to_oqat_key(key: str) -> str:
    """Map one key of the authors' supernet state dict to ours (``ValueError`` if unknown)."""
    for theirs, ours in _TOP_PARTS:
        if key.startswith(theirs):
            return ours + _rename_leaf(key[len(theirs):])
    match = _BLOCK_RE.match(key)
    if match:
        index, rest = int(match[1]), match[2]
        prefix = 'blocks.0.0.' if index == 0 else f'blocks.{(index - 1) // MAX_DEPTH + 1}.{(index - 1) % MAX_DEPTH}.'
        for theirs, ours in _BLOCK_PARTS:
            if rest.startswith(theirs):
                return prefix + ours + _rename_leaf(rest[len(theirs):])
    raise InvalidArgumentError(f'unrecognised key {key!r} in an OQA checkpoint')


def bits_from_official_name(path: 'str | os.PathLike', bits: int | None = None) -> int:
    """The bit-width encoded in an authors' file name (``..._b2`` → 2), the only record of it: ``bits`` is
    honoured for a file whose name has none and refused when it contradicts the name."""
    match = re.search(r'_b(\d+)(?:\.[A-Za-z.]+)?$', Path(path).name)
    if not match:
        if bits is None:
            raise InvalidArgumentError(
                f'cannot read the bit-width from the file name {Path(path).name!r} (expected ..._b2, _b3 or _b4); '
                'pass bits= (--bits on the command line)')
        return bits
    if bits is not None and bits != int(match[1]):
        raise InvalidArgumentError(
            f'{Path(path).name} holds a {match[1]}-bit supernet (its _b{match[1]}) but bits={bits}: its step sizes were '
            f'trained at {match[1]} bits; leave bits out (or pass {match[1]}) and change the bit-width after converting')
    return int(match[1])


def _refusal(path: Path, exc: Exception, kind: str) -> str:
    """One line on why ``torch.load(weights_only=True)`` refused ``path``, keeping torch's warning.

    For a pickle that holds more than tensors the line says what torch found and that loading it
    any other way can run arbitrary code (never just "set weights_only=False").
    """
    text = ' '.join(str(exc).split())
    if 'Weights only load failed' in text:
        found = text.split('WeightsUnpickler error:', 1)[-1].split('Check the documentation', 1)[0].strip()
        return (f'{path} is not a loadable {kind} checkpoint: it holds Python objects besides tensors '
                f'({found[:160] or "unsupported content"}); oqatnets loads checkpoints with weights_only=True only, '
                'because loading this file with weights_only=False can run arbitrary code: do that only for a '
                'file from a trusted source')
    return f'{path} is not a loadable {kind} checkpoint ({type(exc).__name__}: {text[:200]})'


def read_checkpoint_state(path: Path, *, kind: str = 'OQA',
                          error: type[InvalidFileError] = OfficialCheckpointError) -> dict[str, torch.Tensor]:
    """The tensors of a pickled ``{'state_dict': ...}`` (or bare) checkpoint, read with ``weights_only=True``;
    ``module.`` prefixes dropped. ``kind`` names the expected checkpoint and ``error`` is raised otherwise."""
    if not path.is_file():
        raise FileMissingError(f'no checkpoint at {path}; download the {kind} checkpoint and pass its path')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for non-pickles and unsafe pickles
        raise error(_refusal(path, exc, kind)) from None
    state = obj.get('state_dict', obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise error(f'{path} holds no state_dict of tensors; is it an {kind} supernet checkpoint?')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def load_official_supernet(path: 'str | os.PathLike', bits: int | None = None) -> OQATSupernet:
    """An :class:`OQATSupernet` holding the weights of an authors' checkpoint.

    ``bits`` is read from the file name (a ``bits`` that contradicts it is refused; it is needed only for a
    renamed file). The pickle is read with ``weights_only=True``; every key must map and every shape must match.
    """
    path = Path(path)
    bits = bits_from_official_name(path, bits)
    state = read_checkpoint_state(path)
    classifier = state.get('classifier.linear.weight')
    first = state.get('first_conv.conv.weight')
    if classifier is None or first is None:
        raise OfficialCheckpointError(f'{path} lacks first_conv/classifier keys; is it an OQA MobileNetV3 supernet?')
    supernet = OQATSupernet(space='imagenet', bits=bits, num_classes=classifier.shape[0], in_chans=first.shape[1])
    try:
        converted = {official_to_oqat_key(k): v for k, v in state.items()}
    except ValueError as exc:
        raise OfficialCheckpointError(f'{path}: {exc}') from None
    own = supernet.state_dict()
    for name, _ in supernet.named_buffers():
        if name.endswith('step_initialized'):
            converted[name] = torch.tensor(bits, dtype=STEP_BITS_DTYPE)
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    if missing or unexpected:
        raise OfficialCheckpointError(
            f'{path} does not match the OQA MobileNetV3 supernet: {len(missing)} missing keys '
            f'(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})')
    for name, tensor in converted.items():
        if own[name].shape != tensor.shape:
            raise OfficialCheckpointError(
                f'{path}: {name} has shape {tuple(tensor.shape)}, the supernet expects {tuple(own[name].shape)}')
    supernet.load_state_dict(converted)
    arch = f'oqat_supernet_mbv3_w{bits}a{bits}'
    if registry.is_model(arch):  # otherwise the generic supernet cfg is derived
        cfg = registry.get_pretrained_cfg(arch).replace(
            source='official', file=str(path), hf_hub_id=None, top1=None, top5=None, metrics_source=None, sha256={},
            license='other', notes=(f"Converted from the authors' checkpoint {path.name} "
                                    '(github.com/LaVieEnRoseSMZ/OQA). The authors published no license: '
                                    'keep these weights private, do not re-host them.',))
        supernet.set_pretrained_cfg(cfg, source_args=registry.get_entry(arch).model_args())
        vouch_for_weights(supernet)
    return supernet.eval()
