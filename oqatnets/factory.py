"""``create_model``: names, tags and sources → a model with its weights and ``pretrained_cfg``.

Name grammar (timm's): ``arch`` or ``arch.tag`` (a registered name or alias),
``hf-hub:org/name[@revision]`` (``config.json`` and weights from the Hub) and ``local-dir:PATH``
(a folder written by :func:`oqatnets.save_pretrained`). With weights, the model is built on the
meta device and the tensors are assigned straight from the file, so nothing is initialised twice.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import registry
from .hub import download, load_model_config_from_hf, load_model_config_from_path, load_state_dict, verify_sha256
from .net import OQATNet
from .pretrained import PretrainedCfg
from .supernet import OQATSupernet

__all__ = ['create_model', 'create_supernet', 'build_model', 'parse_model_name', 'adapt_input_conv',
           'PretrainedWeightsError']

_SOURCE_RE = re.compile(r'^(?P<source>[A-Za-z][\w-]+):(?P<rest>.*)$')  # >= 2 chars: not a drive letter
_SOURCES = {'hf-hub': 'hf-hub', 'hf_hub': 'hf-hub', 'local-dir': 'local-dir'}
_HEAD_KEYS = ('classifier.weight', 'classifier.bias')
_STEM_KEY = 'conv_stem.weight'


class PretrainedWeightsError(RuntimeError):
    """Weights were asked for and cannot be had; the message says why and what to do."""


def parse_model_name(model_name: str) -> tuple[str | None, str]:
    """``(source, name)``: source is ``'hf-hub'``, ``'local-dir'`` or None for registry names."""
    match = _SOURCE_RE.match(model_name)
    if match:
        source = _SOURCES.get(match['source'])
        if source is None:
            raise ValueError(f'unknown model source {match["source"]!r} in {model_name!r}; '
                             'use hf-hub:org/name[@revision] or local-dir:PATH')
        return source, match['rest']
    if '/' in model_name or '\\' in model_name:
        raise ValueError(f'{model_name!r} looks like a path or a Hub repo; write local-dir:{model_name} '
                         f'or hf-hub:{model_name}')
    return None, model_name


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """A stem weight for ``in_chans`` inputs from one trained on 3: summed for 1 channel, otherwise the
    RGB filters tiled over the new channels and rescaled so the expected activation is unchanged."""
    trained = weight.shape[1]
    if in_chans == trained:
        return weight
    if in_chans == 1:
        return weight.sum(1, keepdim=True)
    repeats = -(-in_chans // trained)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (trained / in_chans)


def _model_class(args: dict[str, Any]) -> type[nn.Module]:
    return OQATNet if args.get('spec') is not None else OQATSupernet


def _construct(args: dict[str, Any]) -> nn.Module:
    args = dict(args)
    cls = _model_class(args)
    try:
        if cls is OQATNet:
            return OQATNet(args.pop('spec'), **args)
        return OQATSupernet(**args)
    except TypeError as exc:
        raise ValueError(f'cannot build {cls.__name__} from model_args {sorted(args)}: {exc}') from None


def build_model(model_args: dict[str, Any], *, state_dict: dict[str, torch.Tensor] | None = None,
                num_classes: int | None = None, in_chans: int | None = None) -> nn.Module:
    """Build an OQATNet (``model_args`` has ``spec``) or an OQATSupernet (``bits``) and load ``state_dict``.

    ``num_classes``/``in_chans`` different from the weights drop the classifier (re-initialised)
    or adapt the stem conv; every other tensor, step sizes included, is loaded unchanged.
    """
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
        state[_STEM_KEY] = adapt_input_conv(args['in_chans'], state[_STEM_KEY])
    with torch.device('meta'):
        model = _construct(args)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (reset_head and k in _HEAD_KEYS)]
    if missing or unexpected:
        raise ValueError(f'the weights do not fit {type(model).__name__}: {len(missing)} missing keys '
                         f'(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})')
    if reset_head:
        model.reset_classifier(args['num_classes'])
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise ValueError(f'the weights left {still_meta[:3]} uninitialised')
    return model


def _no_weights_message(cfg: PretrainedCfg, name: str, reasons: list[str]) -> str:
    why = '; '.join(reasons) or 'no weight source is configured'
    todo = ("get weights by converting the authors' supernet (`oqat convert-official SRC DST`, then "
            '`oqat zoo build local-dir:DST --data IMAGENET_DIR OUT`), by training them (`oqat train`), or load a '
            "saved folder with create_model('local-dir:PATH') or pretrained_cfg_overlay=dict(file=PATH)")
    if not cfg.is_published:
        return f'no pretrained weights for {name}: OQATNets has not published them yet ({why}); {todo}'
    return (f'could not fetch the weights of {name} ({why}); check the connection, HF_HUB_OFFLINE, HF_HUB_CACHE '
            f'or cache_dir, or {todo}')


def fetch_weights(cfg: PretrainedCfg, *, name: str, cache_dir: 'str | os.PathLike | None' = None
                  ) -> dict[str, torch.Tensor]:
    """The state dict ``cfg`` points at: ``file`` first, then its Hub repo (sha256-checked)."""
    if cfg.file:
        path = Path(cfg.file)
        if not path.is_file():
            raise FileNotFoundError(f'weights file {path} does not exist')
        verify_sha256(path, cfg.sha256.get(path.name) if cfg.source == 'local-dir' else None)
        return load_state_dict(path)
    reasons: list[str] = []
    if cfg.hf_hub_id:
        repo_id, _, revision = cfg.hf_hub_id.partition('@')
        for filename in cfg.weight_files:
            try:
                path = download(repo_id, filename, revision=revision or None, cache_dir=cache_dir)
            except Exception as exc:  # offline, not cached, no such repo/file, network: all mean "not here"
                reasons.append(f'{filename}: {type(exc).__name__}')
                continue
            verify_sha256(path, cfg.sha256.get(filename))
            return load_state_dict(path)
        offline = ' with HF_HUB_OFFLINE set' if os.environ.get('HF_HUB_OFFLINE', '').lower() in ('1', 'true', 'yes') else ''
        reasons = [f'hf_hub_download from {repo_id}{offline} failed: {", ".join(reasons)}']
    raise PretrainedWeightsError(_no_weights_message(cfg, name, reasons))


def _resolve(model_name: str, cache_dir: 'str | os.PathLike | None') -> tuple[PretrainedCfg, dict[str, Any], str]:
    source, name = parse_model_name(model_name)
    if source == 'hf-hub':
        cfg, args = load_model_config_from_hf(name, cache_dir=cache_dir)
        return cfg, args, model_name
    if source == 'local-dir':
        cfg, args = load_model_config_from_path(name)
        return cfg, args, model_name
    entry = registry.get_entry(name)
    return registry.get_pretrained_cfg(name), entry.model_args(), entry.name


def create_model(model_name: str, pretrained: bool = False, *, num_classes: int | None = None,
                 in_chans: int | None = None, checkpoint_path: 'str | os.PathLike | None' = None,
                 pretrained_cfg_overlay: dict[str, Any] | None = None, cache_dir: 'str | os.PathLike | None' = None,
                 **kwargs: Any) -> nn.Module:
    """Create a registered model (``arch[.tag]``), one from ``hf-hub:org/name[@rev]`` or ``local-dir:PATH``.

    ``pretrained`` loads the weights (safetensors, plain or packed); ``num_classes``/``in_chans``
    different from them reset the classifier / adapt the stem and keep every step size;
    ``pretrained_cfg_overlay`` replaces cfg fields (``file=`` points at a local weights file);
    ``checkpoint_path`` loads a safetensors state dict after building; ``cache_dir`` is the Hub
    cache. Keyword arguments set to None are dropped; the rest override the ``model_args``
    (``drop_rate``, ``spec``, ``space``, ``bits``).
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    cfg, args, display_name = _resolve(model_name, cache_dir)
    if pretrained_cfg_overlay:
        try:
            cfg = cfg.replace(**pretrained_cfg_overlay)
        except TypeError as exc:
            raise ValueError(f'pretrained_cfg_overlay: {exc}') from None
    args.update(kwargs)
    state = fetch_weights(cfg, name=display_name, cache_dir=cache_dir) if pretrained else None
    model = build_model(args, state_dict=state, num_classes=num_classes, in_chans=in_chans)
    if checkpoint_path is not None:
        model.load_state_dict(load_state_dict(checkpoint_path))
    input_size = (model.in_chans, *tuple(cfg.input_size)[1:])
    model.pretrained_cfg = cfg.replace(num_classes=model.num_classes, input_size=input_size).to_dict()
    return model


def create_supernet(bits: int = 4, *, space: str = 'imagenet', pretrained: bool = False, **kwargs: Any) -> OQATSupernet:
    """The elastic supernet at ``bits``: the registered ``oqat_supernet_mbv3_w{b}a{b}`` for the
    ImageNet space, a fresh one for other spaces (which have no registered weights)."""
    if space == 'imagenet':
        return create_model(f'oqat_supernet_mbv3_w{bits}a{bits}', pretrained=pretrained, **kwargs)
    if pretrained:
        raise PretrainedWeightsError(f'no registered supernet weights for the {space!r} space; train one with '
                                     '`oqat train` and load it with create_model("local-dir:PATH", pretrained=True)')
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return build_model({'space': space, 'bits': bits, **kwargs})
