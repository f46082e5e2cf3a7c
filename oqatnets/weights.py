"""Weights files: safetensors only, plain or packed, each recording which model it holds.

Every file oqatnets writes carries a record of the model in its metadata, the model's
``model_args`` (space, spec or bits, classes, input channels) as JSON: ``oqatnets.model_args``
in a plain file, ``model_args`` in a packed one (see :mod:`oqatnets.packing`). Loading a file
into a model compares that record with the model (:func:`check_record`) and refuses a
mismatch with one line naming both sides, so 4-bit weights never load into a 2-bit net.
Unreadable files (truncated, a broken header, a pickle under a ``.safetensors`` name) are
refused with one line naming the file; nothing is ever unpickled. Files are byte-stable: the
same tensors and metadata always give the same bytes, so equal weights have equal sha256.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ._io import atomic_path
from .errors import FileMissingError, IncompatibleWeightsError, InvalidFileError
from .net import require_oqat_model
from .packing import is_packed_metadata, packed_state_dict, unpack_state_dict
from .pretrained import WEIGHTS_FILE, PretrainedCfg, without_local_parent
from .spec import SubnetSpec, get_space

__all__ = ['WeightsFile', 'read_weights', 'load_state_dict', 'save_weights', 'save_packed', 'write_safetensors',
           'safetensors_bytes', 'cfg_of_weights', 'state_sha256', 'vouch_for_weights', 'drop_local_parent',
           'check_record', 'canonical_args', 'RECORD_KEY', 'IDENTITY_KEYS']

RECORD_KEY = 'oqatnets.model_args'
_PACKED_RECORD_KEY = 'model_args'
IDENTITY_KEYS = ('space', 'spec', 'bits')  # what a file's weights are; classes/channels may be adapted


class WeightsFile:
    """The tensors of one weights file with its metadata and model record (``None`` if it has none)."""

    def __init__(self, path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]):
        self.path, self.state, self.metadata = path, state, metadata

    @property
    def packed(self) -> bool:
        return is_packed_metadata(self.metadata)

    @property
    def record(self) -> dict[str, Any] | None:
        """The ``model_args`` of the model these weights belong to, as the file records them."""
        text = self.metadata.get(_PACKED_RECORD_KEY if self.packed else RECORD_KEY)
        if not text:
            return None
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            raise InvalidFileError(f'{self.path}: its model record is not valid JSON; the file is corrupt') from None
        if not isinstance(record, dict):
            raise InvalidFileError(f'{self.path}: its model record is not a JSON object; the file is corrupt')
        return record

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """The pretrained cfg a packed file carries (empty for plain files)."""
        try:
            cfg = json.loads(self.metadata.get('pretrained_cfg') or '{}')
        except json.JSONDecodeError:
            raise InvalidFileError(f'{self.path}: its pretrained_cfg is not valid JSON; the file is corrupt') from None
        return cfg if isinstance(cfg, dict) else {}


def read_weights(path: 'str | os.PathLike') -> WeightsFile:
    """Read a plain or packed safetensors file (packed codes are dequantized)."""
    path = Path(path)
    if not path.is_file():
        raise FileMissingError(f'no weights file at {path}')
    if path.suffix.lower() != '.safetensors':
        raise InvalidFileError(f'{path.name}: oqatnets loads .safetensors files only (never pickles); '
                               "convert the authors' checkpoints with `oqat convert-official`")
    try:
        with safe_open(str(path), framework='pt') as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        reason = ' '.join(str(exc).split())[:200]
        raise InvalidFileError(f'{path} is not a readable safetensors file ({reason}); '
                               'it is truncated, corrupt or of another format') from None
    if is_packed_metadata(metadata):
        tensors = unpack_state_dict(tensors, metadata, where=str(path))
    weights = WeightsFile(path, tensors, metadata)
    if weights.packed and weights.record is not None:
        _check_packed_bits(weights)
    return weights


def _check_packed_bits(weights: WeightsFile) -> None:
    """Refuse a packed file whose codes are packed at other bits than the model it records."""
    spec = _canonical_record(weights.record, where=weights.path).get('spec')
    recorded_bits, packed_bits = SubnetSpec.parse(spec).bits if spec else None, int(weights.metadata['bits'])
    if recorded_bits is not None and recorded_bits != packed_bits:
        raise InvalidFileError(f'{weights.path}: codes packed at {packed_bits} bits for a {recorded_bits}-bit model '
                               'record; the file is corrupt')


def _canonical_record(record: dict[str, Any], *, where: 'str | os.PathLike') -> dict[str, Any]:
    """:func:`canonical_args` of a file's record; one naming no spec or space this version knows is corrupt."""
    try:
        return canonical_args(record)
    except (ValueError, TypeError) as exc:
        raise InvalidFileError(f'{where}: its model record is malformed ({exc}); the file is corrupt') from None


def load_state_dict(path: 'str | os.PathLike') -> dict[str, torch.Tensor]:
    """The tensors of a plain or packed safetensors file (dequantized)."""
    return read_weights(path).state


def canonical_args(args: dict[str, Any]) -> dict[str, Any]:
    """``model_args`` in the form a model reports them: defaults filled in, the space as a name (or
    dict), the spec as its string at the given bits; training-only arguments dropped."""
    out = {'space': 'imagenet', 'num_classes': 1000, 'in_chans': 3, **args}
    for key in ('drop_rate', 'drop_path_rate', 'global_pool'):
        out.pop(key, None)
    out['space'] = get_space(out['space']).as_arg()
    if out.get('spec') is not None:
        spec = SubnetSpec.of(out['spec'])
        bits = out.pop('bits', None)
        out['spec'] = str(spec.replace(bits=bits) if bits is not None else spec)
    else:
        out.pop('spec', None)
    return out


def _describe(args: dict[str, Any]) -> str:
    space = args.get('space', 'imagenet')
    space = space if isinstance(space, str) else 'custom'
    what = f'spec {args["spec"]}' if args.get('spec') else f'{args.get("bits")}-bit supernet'
    return f'{what} in the {space!r} space, {args.get("num_classes")} classes, {args.get("in_chans")} input channels'


def check_record(record: dict[str, Any] | None, model_args: dict[str, Any], *, where: 'str | os.PathLike',
                 adapt_head: bool = False) -> None:
    """Refuse weights whose record describes another model than ``model_args``.

    Space, spec and bits must agree; classes and input channels too unless ``adapt_head`` (the
    builder then re-initialises the classifier or adapts the stem). No record: nothing to check.
    """
    if record is None:
        return
    record, model_args = _canonical_record(record, where=where), canonical_args(model_args)
    keys = IDENTITY_KEYS if adapt_head else (*IDENTITY_KEYS, 'num_classes', 'in_chans')
    differ = [k for k in keys if record.get(k) != model_args.get(k)]
    if differ:
        raise IncompatibleWeightsError(
            f'{where} holds weights of another model ({", ".join(differ)} differ): the file has '
            f'{_describe(record)}; the model being built has {_describe(model_args)}')


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def safetensors_bytes(state: dict[str, torch.Tensor], *, metadata: dict[str, str] | None = None) -> bytes:
    """``state`` as safetensors with a canonical header: metadata keys sorted, tensors in data order,
    padded with spaces to 8 bytes.

    The ``safetensors`` library writes ``__metadata__`` in hash-map order, which changes from
    process to process, so two saves of the same weights had different bytes and sha256.
    """
    raw = save(state, metadata=metadata)
    size = int.from_bytes(raw[:8], 'little')
    header = json.loads(raw[8:8 + size])
    meta = header.pop('__metadata__', None)
    ordered = {'__metadata__': dict(sorted(meta.items()))} if meta else {}
    ordered.update(sorted(header.items(), key=lambda item: (item[1]['data_offsets'], item[0])))
    text = json.dumps(ordered, separators=(',', ':')).encode()
    text += b' ' * (-len(text) % 8)
    return len(text).to_bytes(8, 'little') + text + raw[8 + size:]


def write_safetensors(state: dict[str, torch.Tensor], path: 'str | os.PathLike', *,
                      metadata: dict[str, str] | None = None) -> Path:
    """Write :func:`safetensors_bytes` of ``state`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(safetensors_bytes(state, metadata=metadata))
    return path


def _weights_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return _cpu_state(model), {'format': 'pt', RECORD_KEY: json.dumps(model.model_args())}


def save_weights(model: nn.Module, path: 'str | os.PathLike') -> Path:
    """Write ``model``'s state dict as plain safetensors with its model record, atomically."""
    require_oqat_model(model, action='save_weights')
    state, metadata = _weights_state(model)
    return write_safetensors(state, path, metadata=metadata)


def state_sha256(model: nn.Module, *, legacy: bool = False) -> str:
    """The sha256 of the ``model.safetensors`` that :func:`save_weights` would write for ``model`` now;
    ``legacy``: as written before the steps recorded their bits (``step_initialized`` a bool)."""
    state, metadata = _weights_state(model)
    if legacy:
        state = {k: v.bool() if k.endswith('.step_initialized') else v for k, v in state.items()}
    return hashlib.sha256(safetensors_bytes(state, metadata=metadata)).hexdigest()


def vouch_for_weights(model: nn.Module) -> None:
    """Called by whoever has just loaded the weights its cfg names into ``model``: a cfg that records no sha256
    of them (a table row, a packed file) records the one of the weights as loaded, so that a later change in
    place is seen by :func:`cfg_of_weights`."""
    cfg = model.pretrained_cfg
    hashes = dict(cfg.get('sha256') or {})
    if not model.cfg_is_own() or hashes.get(WEIGHTS_FILE):
        return
    hashes[WEIGHTS_FILE] = state_sha256(model)
    model.set_pretrained_cfg({**cfg, 'sha256': hashes})


def cfg_of_weights(model: nn.Module, weights_sha256: str | None = None) -> dict[str, Any]:
    """The model's cfg if it records the sha256 of the model's weights as they are now, else its derived cfg:
    a cfg that records another ``model.safetensors`` (trained, re-headed or changed in place since loading)
    or none (never loaded from it) cannot vouch that its name and accuracy are these weights'.
    ``weights_sha256``: that file's hash, if already known."""
    cfg = model.pretrained_cfg
    recorded = (cfg.get('sha256') or {}).get(WEIGHTS_FILE)
    if recorded and (recorded == (weights_sha256 or state_sha256(model))
                     or recorded == state_sha256(model, legacy=True)):  # that file, written before the steps' bits
        return cfg
    return model.derived_pretrained_cfg()


def drop_local_parent(path: Path) -> bool:
    """Rewrite the packed file ``path`` (atomically, tensors unchanged) without the parent supernet its embedded cfg
    records by a local path, as packed files written before they left it out do; whether it had one. Only the
    metadata is read unless there is something to rewrite."""
    with safe_open(str(path), framework='pt') as f:
        metadata = dict(f.metadata() or {})
        cfg = WeightsFile(path, {}, metadata).pretrained_cfg
        kept = without_local_parent(cfg)
        if not is_packed_metadata(metadata) or kept == cfg:
            return False
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    write_safetensors(tensors, path, metadata={**metadata, 'pretrained_cfg': json.dumps(kept, default=str)})
    return True


def save_packed(model: nn.Module, path: 'str | os.PathLike', *, pretrained_cfg: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s packed low-bit weights (an OQATNet with initialised steps) atomically, with
    ``pretrained_cfg`` or the cfg of these weights (:func:`cfg_of_weights`)."""
    require_oqat_model(model, action='save_packed')
    state, metadata = packed_state_dict(model)
    metadata[_PACKED_RECORD_KEY] = json.dumps(model.model_args())
    cfg = pretrained_cfg if pretrained_cfg is not None else cfg_of_weights(model)
    # where the model was loaded from, or its parent's folder on this machine, is no fact of this file:
    # the same weights give the same bytes
    metadata['pretrained_cfg'] = json.dumps(without_local_parent(PretrainedCfg.from_dict(cfg).to_dict(remove_source=True)),
                                            default=str)
    return write_safetensors(state, path, metadata=metadata)
