"""``create_model``: names, tags and sources → a model with its weights and ``pretrained_cfg``.

Name grammar (timm's): ``arch`` or ``arch.tag`` (a registered name or alias),
``hf-hub:org/name[@revision]`` (``config.json`` and weights from the Hub) and ``local-dir:PATH``
(a folder written by :func:`oqatnets.save_pretrained`). With weights, the model is built on the
meta device and the tensors are assigned straight from the file, so nothing is initialised twice.

Two generic architectures build from ``model_args`` alone: ``oqatnet`` (needs ``spec``) and
``oqat_supernet`` (needs ``bits``); a model that is not exactly a registry entry (a subnet,
other bits or head) saves under one of them. Weights files record the model they hold, and
loading them into a different model is refused (:func:`oqatnets.weights.check_record`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.models import adapt_input_conv

from . import registry
from ._io import sha256_file, verify_sha256
from .card import parse_model_config
from .errors import FileMissingError, InvalidArgumentError, InvalidFileError, InvalidTypeError, PretrainedWeightsError
from .features import features_model
from .hub import download, load_model_config_from_hf, load_model_config_from_path, offline_note
from .net import OQATNet, check_count
from .pretrained import ACCURACY_FIELDS, WEIGHT_SOURCE_FIELDS, PretrainedCfg, changes_transform, data_config_problems
from .spec import SubnetSpec
from .supernet import OQATSupernet
from .weights import WeightsFile, canonical_args, check_record, read_weights, vouch_for_weights

__all__ = ['create_model', 'create_supernet', 'build_model', 'load_packed', 'parse_model_name',
           'PretrainedWeightsError', 'GENERIC_ARCHITECTURES']

_SOURCE_RE = re.compile(r'^(?P<source>[A-Za-z][\w-]+):(?P<rest>.*)$')  # >= 2 chars: not a drive letter
_SOURCES = {'hf-hub': 'hf-hub', 'hf_hub': 'hf-hub', 'local-dir': 'local-dir'}
_HEAD_KEYS = ('classifier.weight', 'classifier.bias')
_STEM_KEY = 'conv_stem.weight'
GENERIC_ARCHITECTURES = {OQATNet.architecture: OQATNet, OQATSupernet.architecture: OQATSupernet}


def parse_model_name(model_name: str) -> tuple[str | None, str]:
    """``(source, name)``: source is ``'hf-hub'``, ``'local-dir'`` or None for registry names."""
    if not isinstance(model_name, str):
        raise InvalidTypeError(f'model_name must be a string (a zoo name, hf-hub:ID or local-dir:PATH), '
                               f'got {type(model_name).__name__}')
    match = _SOURCE_RE.match(model_name)
    if match:
        source = _SOURCES.get(match['source'])
        if source is None:
            raise InvalidArgumentError(f'unknown model source {match["source"]!r} in {model_name!r}; '
                             'use hf-hub:org/name[@revision] or local-dir:PATH')
        if not match['rest'].strip():
            raise InvalidArgumentError(f'{model_name!r} names no {"folder" if source == "local-dir" else "repo"}; '
                                       'write local-dir:PATH or hf-hub:org/name[@revision]')
        return source, match['rest']
    if '/' in model_name or '\\' in model_name:
        if Path(model_name).is_file():
            raise InvalidArgumentError(f'{model_name!r} is a file; name the saved folder that holds it with its '
                                       f'config.json: local-dir:{Path(model_name).parent}')
        raise InvalidArgumentError(f'{model_name!r} looks like a path or a Hub repo; write local-dir:{model_name} '
                         f'or hf-hub:{model_name}')
    return None, model_name


_TRAINING_ARGS = {'drop_rate', 'drop_path_rate', 'global_pool'}  # change training or the head, not the weights
_MODEL_ARG_NAMES = {OQATNet: {'spec', 'space', 'num_classes', 'in_chans', *_TRAINING_ARGS},
                    OQATSupernet: {'bits', 'space', 'num_classes', 'in_chans', *_TRAINING_ARGS}}


def _construct(args: dict[str, Any]) -> nn.Module:
    args = dict(args)
    cls = OQATNet if args.get('spec') is not None else OQATSupernet
    if cls is OQATNet and 'bits' in args:  # bits given beside a spec: the spec at those bits
        spec, bits = args['spec'], args.pop('bits')
        spec = SubnetSpec.of(spec)
        args['spec'] = spec.replace(bits=bits) if bits is not None else spec
    unknown = sorted(set(args) - _MODEL_ARG_NAMES[cls])
    if unknown:
        raise InvalidArgumentError(f'{cls.__name__} takes no argument {", ".join(unknown)}; it takes '
                                   f'{", ".join(sorted(_MODEL_ARG_NAMES[cls]))}')
    if cls is OQATNet:
        return OQATNet(args.pop('spec'), **args)
    return OQATSupernet(**args)


def _check_placement(device: 'str | torch.device | None', dtype: 'torch.dtype | None') -> None:
    """Refuse a device or dtype the model cannot be moved to, before anything is built or fetched."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InvalidArgumentError(f'dtype must be a floating-point torch.dtype (torch.float32, torch.bfloat16, ...), '
                                   f'got {dtype!r}')
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(f'device={device!r} is not a torch device; e.g. "cpu" or "cuda:0"') from None
    if kind == 'cuda' and not torch.cuda.is_available():
        raise InvalidArgumentError(f'device={device!r}: this torch sees no CUDA device; use "cpu"')


def build_model(model_args: dict[str, Any], *, state_dict: dict[str, torch.Tensor] | None = None,
                num_classes: int | None = None, in_chans: int | None = None, where: str = 'the weights') -> nn.Module:
    """Build an OQATNet (``model_args`` has ``spec``) or an OQATSupernet (``bits``) and load ``state_dict``.

    ``num_classes``/``in_chans`` different from the weights drop the classifier (re-initialised)
    or adapt the stem conv; every other tensor, step sizes included, is loaded unchanged. ``where``
    names the weights in errors (their file).
    """
    for name, value, minimum in (('num_classes', num_classes, 0), ('in_chans', in_chans, 1)):
        if value is not None:
            check_count(name, value, minimum=minimum)
    args = dict(model_args)
    trained_classes, trained_chans = int(args.get('num_classes', 1000)), int(args.get('in_chans', 3))
    args['num_classes'] = trained_classes if num_classes is None else num_classes
    args['in_chans'] = trained_chans if in_chans is None else in_chans
    if state_dict is None:
        return _construct(args)
    state = dict(state_dict)
    reset_head = args['num_classes'] != trained_classes
    if reset_head:
        for key in _HEAD_KEYS:
            state.pop(key, None)
    if args['in_chans'] != trained_chans and _STEM_KEY in state:
        state[_STEM_KEY] = adapt_input_conv(args['in_chans'], state[_STEM_KEY], base_chans=trained_chans)
    with torch.device('meta'):
        model = _construct(args)
    _load_into(model, state, where=where, assign=True, allow_missing=_HEAD_KEYS if reset_head else ())
    if reset_head:
        model.reset_classifier(args['num_classes'])
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise InvalidFileError(f'the weights left {still_meta[:3]} uninitialised')
    return model


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], *, where: str, assign: bool = False,
               allow_missing: tuple[str, ...] = ()) -> None:
    """``load_state_dict`` that names ``where`` and what does not fit instead of a long traceback."""
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise InvalidFileError(f'{where} do not fit {type(model).__name__}: {len(wrong)} tensors have other shapes '
                               f'(e.g. {k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model)')
    missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    missing = [k for k in missing if k not in allow_missing]
    if missing or unexpected:
        raise InvalidFileError(f'{where} do not fit {type(model).__name__}: {len(missing)} missing keys '
                               f'(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})')


def _no_weights_message(cfg: PretrainedCfg, name: str, reasons: list[str]) -> str:
    why = '; '.join(reasons) or 'no weight source is configured'
    todo = ("get weights by converting the authors' supernet (`oqat convert-official SRC DST`, then "
            '`oqat zoo build local-dir:DST --data IMAGENET_DIR OUT`), by training them (`oqat train`), or load a '
            "saved folder with create_model('local-dir:PATH') or pretrained_cfg_overlay=dict(file=PATH)")
    if not cfg.is_published:
        return f'no pretrained weights for {name}: OQATNets has not published them yet ({why}); {todo}'
    return (f'could not fetch the weights of {name} ({why}); check the connection, HF_HUB_OFFLINE, HF_HUB_CACHE '
            f'or cache_dir, or {todo}')


def fetch_weights(cfg: PretrainedCfg, *, name: str, cache_dir: 'str | os.PathLike | None' = None,
                  local_files_only: bool = False) -> WeightsFile:
    """The weights file ``cfg`` points at: ``file`` first, then its Hub repo (sha256-checked)."""
    if cfg.file:
        path = Path(cfg.file)
        if not path.is_file():
            raise FileMissingError(f'weights file {path} does not exist')
        if cfg.source == 'local-dir':
            verify_sha256(path, cfg.sha256.get(path.name), recorded_by=f'{path.parent / "config.json"}',
                          remedy='save the folder again with oqatnets.save_pretrained')
        return read_weights(path)
    reasons: list[str] = []
    if cfg.hf_hub_id:
        repo_id, _, revision = cfg.hf_hub_id.partition('@')
        for filename in cfg.weight_files:
            try:
                path = download(repo_id, filename, revision=revision or None, cache_dir=cache_dir,
                                local_files_only=local_files_only)
            except Exception as exc:  # offline, not cached, no such repo/file, network: all mean "not here"
                reasons.append(f'{filename}: {type(exc).__name__}')
                continue
            verify_sha256(path, cfg.sha256.get(filename), recorded_by=f'the registry ({name}\'s zoo table row)',
                          remedy='if that table is the one the weights were published with, delete the file from the '
                                 'Hub cache and download it again; else register the right table')
            return read_weights(path)
        reasons = [f'hf_hub_download from {repo_id}{offline_note()} failed: {", ".join(reasons)}']
    raise PretrainedWeightsError(_no_weights_message(cfg, name, reasons))


def _resolve(model_name: str, cache_dir: 'str | os.PathLike | None',
             local_files_only: bool) -> tuple[PretrainedCfg, dict[str, Any], str]:
    source, name = parse_model_name(model_name)
    if source == 'hf-hub':
        cfg, args = load_model_config_from_hf(name, cache_dir=cache_dir, local_files_only=local_files_only)
        return cfg, args, model_name
    if source == 'local-dir':
        cfg, args = load_model_config_from_path(name)
        return cfg, args, model_name
    if name in GENERIC_ARCHITECTURES:
        return PretrainedCfg(architecture=name, paper_name=None, paper_ids=None), {}, name
    entry = registry.get_entry(name)
    return registry.get_pretrained_cfg(name), entry.model_args(), entry.name


# cfg fields the model owns (one owner per fact): an overlay naming them is refused, with the argument that sets them
_MODEL_FIELDS = {'architecture': 'the model name', 'bits': 'bits=', 'spec': 'spec=', 'space': 'space=',
                 'num_classes': 'num_classes=', 'input_size': "spec= (its resolution) or model.set_resolution()"}


def _overlay(cfg: PretrainedCfg, overlay: dict[str, Any]) -> PretrainedCfg:
    """``cfg`` with the fields of ``pretrained_cfg_overlay`` replaced; the model's own facts are refused."""
    owned = sorted(set(overlay) & set(_MODEL_FIELDS))
    if owned:
        raise InvalidArgumentError(f'pretrained_cfg_overlay cannot set {", ".join(owned)}: the model owns '
                                   f'{"them" if len(owned) > 1 else "it"}; pass {", ".join(_MODEL_FIELDS[k] for k in owned)} instead')
    figures = [k for k in ACCURACY_FIELDS if k in overlay]
    if figures:
        raise InvalidArgumentError(f'pretrained_cfg_overlay cannot set {", ".join(figures)}: a cfg\'s accuracy is '
                                   'measured, not given; measure it (`oqat eval`) and save it with '
                                   "oqatnets.save_pretrained(model, DIR, metrics={..., 'source': ...})")
    try:
        out = cfg.replace(**overlay)
    except TypeError as exc:
        raise InvalidArgumentError(f'pretrained_cfg_overlay: {exc}') from None
    problems = data_config_problems(out, num_classes=out.num_classes)
    if problems:
        raise InvalidArgumentError(f'pretrained_cfg_overlay: {"; ".join(problems)}')
    if any(k in overlay and overlay[k] != getattr(cfg, k) for k in WEIGHT_SOURCE_FIELDS) and 'sha256' not in overlay:
        out = out.replace(sha256={})  # the hashes are of the cfg's own weights, not of the ones overlaid
    if changes_transform(cfg, overlay):
        out = out.replace(**{k: None for k in ACCURACY_FIELDS})  # measured through another transform
    return out


def _are_the_cfgs_weights(weights: WeightsFile, cfg: PretrainedCfg, overlay: dict[str, Any] | None) -> bool:
    """Whether ``weights``, fetched through ``overlay``, are the ones ``cfg`` names: no overlay of their source,
    or a file whose sha256 is one ``cfg`` records."""
    if not overlay or not set(overlay) & set(WEIGHT_SOURCE_FIELDS):
        return True
    known = {h for h in (cfg.sha256 or {}).values() if h}
    return bool(known) and sha256_file(weights.path) in known


def create_model(model_name: str, pretrained: bool = False, *, num_classes: int | None = None,
                 in_chans: int | None = None, checkpoint_path: 'str | os.PathLike | None' = None,
                 pretrained_cfg_overlay: dict[str, Any] | None = None, cache_dir: 'str | os.PathLike | None' = None,
                 local_files_only: bool = False, device: 'str | torch.device | None' = None,
                 dtype: torch.dtype | None = None, features_only: bool = False, out_indices: Any = None,
                 feature_cls: str | None = None, **kwargs: Any) -> nn.Module:
    """Create a registered model (``arch[.tag]``), one from ``hf-hub:org/name[@rev]`` or ``local-dir:PATH``.

    ``pretrained`` loads the weights (safetensors, plain or packed); ``num_classes``/``in_chans``
    different from them reset the classifier / adapt the stem and keep every step size;
    ``pretrained_cfg_overlay`` replaces cfg fields (``file=`` points at a local weights file; the
    model's own facts — bits, spec, space, classes, input size — and its measured accuracy are refused there);
    ``checkpoint_path`` loads a safetensors state dict after building; ``cache_dir`` is the Hub
    cache and ``local_files_only`` reads only from it (no network request); ``device``/``dtype``
    are where the model ends up; ``features_only`` returns timm's feature wrapper (maps at
    ``out_indices``, see :func:`oqatnets.features.features_model`). Keyword arguments set to None
    are dropped; the rest override the ``model_args`` (``spec``, ``space``, ``bits``) or set
    training options (``drop_rate``, ``drop_path_rate``, ``global_pool``). A weights file that records another model
    than the one being built is refused. A model that differs from the named entry gets a
    derived ``pretrained_cfg`` (see :meth:`oqatnets.PretrainedCfg.derived`), and so does one given other
    weights than the entry's (``checkpoint_path``, or an overlaid ``file``/hub id whose sha256 the
    entry does not record); one built without weights carries no accuracy.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    _check_placement(device, dtype)
    if not features_only and (out_indices is not None or feature_cls is not None):
        raise InvalidArgumentError('out_indices and feature_cls choose the feature maps of features_only=True; '
                                   'pass features_only=True or drop them')
    if 'spec' in kwargs and 'bits' in kwargs:
        spec = SubnetSpec.of(kwargs['spec'])
        if spec.bits != kwargs['bits']:
            raise InvalidArgumentError(f'spec is {spec.bits}-bit but bits={kwargs["bits"]}; give one of them')
    source_cfg, source_args, display_name = _resolve(model_name, cache_dir, local_files_only)
    cfg = _overlay(source_cfg, pretrained_cfg_overlay) if pretrained_cfg_overlay else source_cfg
    args = {**source_args, **kwargs}
    generic = GENERIC_ARCHITECTURES.get(display_name)
    if generic is not None and (args.get('spec') is None) == (generic is OQATNet):
        raise InvalidArgumentError(f'{OQATNet.architecture} is the static net of one spec= and '
                                   f'{OQATSupernet.architecture} the elastic supernet of bits=; '
                                   f'{display_name} was given {"no spec" if generic is OQATNet else "a spec"}')
    weights = fetch_weights(cfg, name=display_name, cache_dir=cache_dir,
                            local_files_only=local_files_only) if pretrained else None
    if weights is not None:
        check_record(weights.record, args, where=weights.path, adapt_head=True)
    model = build_model(args, state_dict=weights.state if weights is not None else None, num_classes=num_classes,
                        where=f'the weights in {weights.path}' if weights is not None else 'the weights',
                        in_chans=in_chans)
    if checkpoint_path is not None:
        checkpoint = read_weights(checkpoint_path)
        check_record(checkpoint.record, model.model_args(), where=checkpoint.path)
        _load_into(model, checkpoint.state, where=str(checkpoint.path))
    if weights is None and checkpoint_path is None:
        cfg = cfg.replace(**{k: None for k in ACCURACY_FIELDS})
    model.set_pretrained_cfg(cfg.replace(num_classes=int(source_args.get('num_classes', cfg.num_classes))),
                             source_args=canonical_args(source_args))
    if checkpoint_path is not None or (weights is not None
                                       and not _are_the_cfgs_weights(weights, source_cfg, pretrained_cfg_overlay)):
        model.derive_pretrained_cfg()  # other weights than the cfg's: its hub id, hashes and accuracy are not theirs
    elif weights is not None:
        vouch_for_weights(model)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    if features_only:
        return features_model(model, out_indices=out_indices, feature_cls=feature_cls)
    return model


def load_packed(path: 'str | os.PathLike') -> nn.Module:
    """Rebuild the model stored in a packed file (architecture from its record) in eval mode."""
    weights = read_weights(path)
    if not weights.packed or weights.record is None:
        raise InvalidFileError(f'{path} is not a packed oqatnets file with a model record; '
                               "load plain weights with create_model(..., checkpoint_path=PATH)")
    model = build_model(weights.record, state_dict=weights.state, where=f'the weights in {path}')
    if weights.pretrained_cfg:  # checked as a config.json is: it must describe the model the file records
        cfg, _ = parse_model_config({'architecture': model.architecture, 'model_args': weights.record,
                                     'pretrained_cfg': weights.pretrained_cfg}, where=str(path))
        model.set_pretrained_cfg(cfg.replace(file=str(path)), source_args=canonical_args(weights.record))
        vouch_for_weights(model)
    return model.eval()


def create_supernet(bits: int = 4, *, space: str = 'imagenet', pretrained: bool = False, **kwargs: Any) -> OQATSupernet:
    """The elastic supernet at ``bits``: the registered ``oqat_supernet_mbv3_w{b}a{b}`` for the
    ImageNet space, a fresh one for other spaces (which have no registered weights)."""
    if space == 'imagenet':
        return create_model(f'oqat_supernet_mbv3_w{bits}a{bits}', pretrained=pretrained, **kwargs)
    if pretrained:
        raise PretrainedWeightsError(f'no registered supernet weights for the {space!r} space; train one with '
                                     '`oqat train` and load it with create_model("local-dir:PATH", pretrained=True)')
    return create_model(OQATSupernet.architecture, space=space, bits=bits, **kwargs)
