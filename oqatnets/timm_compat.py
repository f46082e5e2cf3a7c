"""Registering the zoo in timm, so ``timm.create_model('oqat_2bit_m')`` builds the same model.

Each registered name (aliases included; names holding a dot, such as the authors'
``oqa_mbv3_..._w1.0_b2``, cannot be timm names and are left out) gets an entrypoint created
here and registered with timm's own ``register_model``, which reads this module's
``default_cfgs`` (built with timm's ``generate_default_cfgs``), as do the generic architectures
``oqatnet`` and ``oqat_supernet`` that saved folders record. The entrypoints delegate to
:func:`oqatnets.create_model` and honour the cfg timm hands them (an ``hf-hub:`` or
``local-dir:`` source loads from there, not from the registry entry), so weights, tags and
``pretrained_cfg`` behave the same in both. Only entries with published weights advertise an ``hf_hub_id`` to timm.

When this happens is decided by :mod:`oqatnets._timm_hook` (right after ``import timm``, so
``import oqatnets`` stays fast).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from . import registry
from .factory import GENERIC_ARCHITECTURES, create_model
from .pretrained import TIMM_FIELDS

__all__ = ['register_with_timm', 'subscribe', 'resolve_source']

default_cfgs: dict[str, Any] = {}  # read by timm's register_model
_registered: set[str] = set()


def _as_dict(pretrained_cfg: Any) -> dict[str, Any]:
    """timm hands entrypoints a tag string, a dict (hf-hub:/local-dir: loads, or a user's) or its PretrainedCfg;
    of a PretrainedCfg only the fields set away from timm's defaults count (the rest were never given)."""
    if hasattr(pretrained_cfg, 'to_dict'):
        defaults = type(pretrained_cfg)().to_dict()
        return {k: v for k, v in pretrained_cfg.to_dict().items() if defaults.get(k) != v}
    return dict(pretrained_cfg) if isinstance(pretrained_cfg, dict) else {}


def resolve_source(name: str, pretrained_cfg: Any) -> tuple[str, dict[str, Any]]:
    """The oqatnets model name for timm's ``(entrypoint name, pretrained_cfg)``, with a cfg overlay.

    timm resolves ``hf-hub:org/repo`` and ``local-dir:PATH`` itself, then calls the entrypoint of the
    ``architecture`` their ``config.json`` records with a cfg whose ``source`` says where the weights
    are; that source, not the registry entry of the architecture, is what must load. A tag string
    selects ``name.tag``; a cfg a user passes selects its ``tag`` and overlays every other field it
    sets (weight location and data config; fields the model owns are refused by create_model).
    """
    if isinstance(pretrained_cfg, str):
        return f'{name}.{pretrained_cfg}' if pretrained_cfg else name, {}
    cfg = _as_dict(pretrained_cfg)
    if cfg.get('source') == 'hf-hub' and cfg.get('hf_hub_id'):
        return f'hf-hub:{cfg["hf_hub_id"]}', {}
    if cfg.get('source') == 'local-dir' and cfg.get('file'):
        path = Path(cfg['file'])
        if path.is_dir():
            return f'local-dir:{path}', {}
        return name, {'file': str(path)}
    tag = cfg.get('tag')
    overlay = {k: v for k, v in cfg.items() if k not in ('tag', 'architecture', 'source') and v is not None}
    return (f'{name}.{tag}' if tag and name not in GENERIC_ARCHITECTURES else name), overlay


def _entrypoint(name: str) -> Callable[..., Any]:
    def entrypoint(pretrained: bool = False, *, pretrained_cfg: Any = None,
                   pretrained_model_args: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
        model_name, overlay = resolve_source(name, pretrained_cfg)
        if overlay:
            kwargs['pretrained_cfg_overlay'] = {**overlay, **(kwargs.get('pretrained_cfg_overlay') or {})}
        for key, value in (pretrained_model_args or {}).items():  # timm copied the source's model_args in
            if kwargs.get(key) == value:
                kwargs.pop(key)
        return create_model(model_name, pretrained=pretrained, **kwargs)
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f'OQATNets model {name!r} (see oqatnets.get_pretrained_cfg).'
    return entrypoint


def _timm_cfg(name: str, *, advertise: bool = True) -> dict[str, Any]:
    """The entry's cfg in timm's fields; ``hf_hub_id`` only once weights are published and only under the
    canonical name (``advertise``), so ``timm.list_pretrained`` lists what exists, once, as ours does.
    Aliases still load the weights: the entrypoint resolves them through the registry."""
    cfg = registry.get_pretrained_cfg(name)
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.to_dict(remove_null=False).items()
           if k in TIMM_FIELDS}
    for key in ('architecture', 'tag', 'source'):
        out.pop(key, None)
    if not (advertise and cfg.is_published):
        out['hf_hub_id'] = None
    return out


def _register(arch: str) -> None:
    from timm.models import register_model
    with warnings.catch_warnings():
        if arch in _registered:  # our own entry re-registered with a new cfg: expected, not a clash
            warnings.filterwarnings('ignore', message=f'Overwriting {arch} in registry')
        register_model(_entrypoint(arch))
    _registered.add(arch)


def register_with_timm(names: list[str] | None = None) -> list[str]:
    """Register ``names`` (default: every registered name) as timm models, and the generic
    architectures ``oqatnet``/``oqat_supernet`` that saved folders record; returns what was added."""
    from timm.models import generate_default_cfgs
    archs: set[str] = set()
    for full in names if names is not None else registry.list_models(include_tags=True):
        arch, _ = registry.resolve_model_name(full)
        entry = registry.get_entry(full)
        archs.add(arch)
        archs.update(entry.cfg.aliases)
    added = []
    for generic in GENERIC_ARCHITECTURES:
        if generic not in _registered:
            default_cfgs.update(generate_default_cfgs({generic: {'first_conv': 'conv_stem',
                                                                 'classifier': 'classifier'}}))
            _register(generic)
            added.append(generic)
    every = registry.list_models(include_tags=True)
    for arch in sorted(archs):
        if '.' in arch:
            continue
        target, default_tag = registry.resolve_model_name(arch)
        tags = [default_tag, *(n[len(target) + 1:] for n in every
                               if n.startswith(f'{target}.') and n != f'{target}.{default_tag}')]
        cfgs = {f'{arch}.{t}': _timm_cfg(f'{target}.{t}', advertise=arch == target) for t in tags}
        default_cfgs.update(generate_default_cfgs(cfgs))
        _register(arch)
        added.append(arch)
    return added


def subscribe() -> None:
    """Register every table's names with timm, now and whenever a table is registered later."""
    registry.on_register(lambda names: register_with_timm(names) if names else None)
