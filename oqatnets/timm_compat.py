"""Registering the zoo in timm, so ``timm.create_model('oqat_2bit_m')`` builds the same model.

Each registered name (aliases included; names holding a dot, such as the authors'
``oqa_mbv3_..._w1.0_b2``, cannot be timm names and are left out) gets an entrypoint created
here and registered with timm's own ``register_model``, which reads this module's
``default_cfgs`` (built with timm's ``generate_default_cfgs``). The entrypoints delegate to
:func:`oqatnets.create_model`, so weights, tags and ``pretrained_cfg`` behave the same in both.

timm is imported lazily: if it is already imported, registration happens now; otherwise a
one-shot import hook registers right after ``import timm`` finishes, so ``import oqatnets``
stays fast.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings
from typing import Any, Callable

from . import registry
from .factory import GENERIC_ARCHITECTURES, create_model
from .pretrained import TIMM_FIELDS

__all__ = ['register_with_timm', 'install']

default_cfgs: dict[str, Any] = {}  # read by timm's register_model
_registered: set[str] = set()


def _entrypoint(name: str) -> Callable[..., Any]:
    def entrypoint(pretrained: bool = False, **kwargs: Any):
        kwargs.pop('pretrained_cfg', None)  # timm passes its own cfg object; ours comes from the registry
        return create_model(name, pretrained=pretrained, **kwargs)
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f'OQATNets model {name!r} (see oqatnets.get_pretrained_cfg).'
    return entrypoint


def _timm_cfg(name: str) -> dict[str, Any]:
    cfg = registry.get_pretrained_cfg(name).to_dict(remove_null=False)
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in TIMM_FIELDS}
    out.pop('architecture', None)
    out.pop('tag', None)
    return out


def register_with_timm(names: list[str] | None = None) -> list[str]:
    """Register ``names`` (default: every registered name) as timm models; returns what was added."""
    from timm.models import generate_default_cfgs, register_model
    archs: set[str] = set()
    for full in names if names is not None else registry.list_models(include_tags=True):
        arch, _ = registry.resolve_model_name(full)
        entry = registry.get_entry(full)
        archs.add(arch)
        archs.update(entry.cfg.aliases)
    added = []
    for arch in sorted(archs):
        if '.' in arch:
            continue
        target, tag = registry.resolve_model_name(arch)
        default_cfgs.update(generate_default_cfgs({f'{arch}.{tag}': _timm_cfg(f'{target}.{tag}')}))
        with warnings.catch_warnings():
            if arch in _registered:  # our own entry re-registered with a new cfg: expected, not a clash
                warnings.filterwarnings('ignore', message=f'Overwriting {arch} in registry')
            register_model(_entrypoint(arch))
        _registered.add(arch)
        added.append(arch)
    return added


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Wraps timm's loader once so registration runs right after ``import timm`` completes."""

    def find_spec(self, fullname, path, target=None):
        if fullname != 'timm':
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _subscribe()
        loader.exec_module = exec_module
        return spec


def _subscribe() -> None:
    registry.on_register(lambda names: register_with_timm(names) if names else None)


def install() -> None:
    """Register now if timm is imported, else once it is (idempotent)."""
    if 'timm' in sys.modules:
        if not _registered:
            _subscribe()
    elif not any(isinstance(f, _TimmImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmImportHook())
