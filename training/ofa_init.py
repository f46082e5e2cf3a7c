"""Initialising an OQAT supernet from the float Once-for-All MobileNetV3 supernet, as the authors did.

The ``ofa`` package's ``OFAMobileNetV3`` (ks 3/5/7, expand 3/4/6, depth 2/3/4, width 1.0) has
the module layout of the authors' OQA checkpoints except that each block's conv is named
``conv`` instead of ``mobile_inverted_conv``, and it has no LSQ step sizes. So its keys map with
:func:`oqatnets.official.official_to_oqat_key`; the step sizes stay uninitialised and are set
LSQ-style from the float weights at the first quantized forward (``--float-epochs 0``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from oqatnets.errors import OFACheckpointError
from oqatnets.official import official_to_oqat_key, read_checkpoint_state
from oqatnets.quant import FLOAT_BITS, validate_bits
from oqatnets.supernet import OQATSupernet

__all__ = ['OFAInitError', 'ofa_to_oqat_key', 'ofa_state_to_oqat', 'load_ofa_supernet']

_OFA_BLOCK = re.compile(r'^blocks\.(\d+)\.conv\.')
_STEP_SUFFIXES = ('act_step', 'weight_step', 'step_initialized')  # LSQ state the float supernet lacks


OFAInitError = OFACheckpointError  # the name this module exported first


def ofa_to_oqat_key(key: str) -> str:
    """Map one key of ``OFAMobileNetV3.state_dict()`` to ours (``ValueError`` if unknown)."""
    return official_to_oqat_key(_OFA_BLOCK.sub(r'blocks.\1.mobile_inverted_conv.', key))


def ofa_state_to_oqat(state: dict[str, torch.Tensor], supernet: OQATSupernet, *, source: str = 'state dict'
                      ) -> dict[str, torch.Tensor]:
    """``state`` (OFA keys) renamed onto ``supernet``; every non-LSQ key must exist with its shape."""
    try:
        converted = {ofa_to_oqat_key(k): v for k, v in state.items()}
    except ValueError as exc:
        raise OFACheckpointError(f'{source}: {exc}') from None
    own = supernet.state_dict()
    missing = sorted(k for k in set(own) - set(converted) if not k.endswith(_STEP_SUFFIXES))
    unexpected = sorted(set(converted) - set(own))
    if missing or unexpected:
        raise OFACheckpointError(f'{source} does not match the OQAT MobileNetV3 supernet: {len(missing)} missing keys '
                           f'(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); '
                           'expected OFAMobileNetV3 with ks 3/5/7, expand 3/4/6, depth 2/3/4, width 1.0')
    for name, tensor in converted.items():
        if own[name].shape != tensor.shape:
            raise OFACheckpointError(f'{source}: {name} has shape {tuple(tensor.shape)}, '
                               f'the supernet expects {tuple(own[name].shape)}')
    return converted


def load_ofa_supernet(path: 'str | os.PathLike', bits: int = 4, *, num_classes: int | None = None) -> OQATSupernet:
    """An ``imagenet``-space :class:`OQATSupernet` at ``bits`` holding a float OFA supernet's weights.

    The file (``{'state_dict': ...}`` or a bare state dict, as OFA saves it) is read with
    ``weights_only=True``. Step sizes are not in the file: they initialise LSQ-style at the first
    quantized forward. ``num_classes`` other than the file's gives a fresh classifier (transfer).
    """
    validate_bits(bits)
    path = Path(path)
    state = read_checkpoint_state(path, kind='OFA MobileNetV3', error=OFACheckpointError)
    classifier, first = state.get('classifier.linear.weight'), state.get('first_conv.conv.weight')
    if classifier is None or first is None:
        raise OFACheckpointError(f'{path} lacks first_conv/classifier keys; is it an OFA MobileNetV3 supernet?')
    supernet = OQATSupernet(space='imagenet', bits=bits, num_classes=classifier.shape[0], in_chans=first.shape[1])
    converted = ofa_state_to_oqat(state, supernet, source=str(path))
    supernet.load_state_dict(converted, strict=False)  # checked above: only LSQ state is absent
    if num_classes is not None and num_classes != supernet.num_classes:
        supernet.reset_classifier(num_classes)
    suffix = '' if bits == FLOAT_BITS else f'_w{bits}a{bits}'
    supernet.pretrained_cfg = {'architecture': f'oqat_supernet_mbv3{suffix}', 'source': 'ofa', 'file': str(path),
                               'num_classes': supernet.num_classes}
    return supernet.eval()
