"""Registering the zoo in timm when timm is imported, without importing torch before that.

``import oqatnets`` only installs an import hook (cheap): registration runs right after ``import
timm`` finishes, or at once if timm is already imported. When timm is imported by oqatnets' own
modules while they are still initialising (``oqatnets.net`` imports timm), registering then would
import them half-built; it runs once the outermost oqatnets module being imported has loaded.

The hook never registers from ``find_spec``: registering imports modules, and if one of them were
the module being looked up, Python would then load a second copy of it, whose classes fail
``isinstance`` against the first. It finds the module as the other finders do and registers after
that module has loaded.
"""
from __future__ import annotations

import copy
import importlib
import importlib.abc
import sys

__all__ = ['install', 'flush']

_state = {'registered': False}


def _initialising() -> bool:
    """Whether an ``oqatnets`` module is in the middle of being imported."""
    return any(getattr(getattr(module, '__spec__', None), '_initializing', False)
               for name, module in list(sys.modules.items()) if name.startswith('oqatnets.'))


def flush() -> None:
    """Register with timm now if timm is imported, registration has not happened yet and no oqatnets module is
    half-imported (then :class:`_RegisterAfterLoading` calls this again when that import completes)."""
    if _state['registered'] or 'timm' not in sys.modules or _initialising():
        return
    _state['registered'] = True
    importlib.import_module('oqatnets.timm_compat').subscribe()


class _RegisterAfterLoading(importlib.abc.MetaPathFinder):
    """Until registration is done, loads ``timm`` and oqatnets' submodules with the loaders the other finders
    give them, then calls :func:`flush`."""

    def find_spec(self, fullname, path, target=None):
        if _state['registered']:
            sys.meta_path.remove(self)
            return None
        if fullname != 'timm' and not fullname.startswith('oqatnets.'):
            return None
        for finder in sys.meta_path:
            spec = None if finder is self or not hasattr(finder, 'find_spec') else finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None:
            return spec
        stand_in = copy.copy(spec)
        stand_in.loader = _FlushAfter(spec)
        return stand_in


class _FlushAfter(importlib.abc.Loader):
    """Loads a module with the loader its own spec names, then calls :func:`flush`."""

    def __init__(self, spec):
        self._spec = spec

    def __getattr__(self, name):  # get_code, get_source, is_package, ... (runpy, inspect): the real loader's
        return getattr(self._spec.loader, name)

    def create_module(self, spec):
        return self._spec.loader.create_module(self._spec)

    def exec_module(self, module):
        module.__spec__, module.__loader__ = self._spec, self._spec.loader  # the module's own, not the stand-in
        self._spec._initializing = True  # what the import system marks, so _initialising() sees this module
        try:
            self._spec.loader.exec_module(module)
        finally:
            self._spec._initializing = False
        flush()


def install() -> None:
    """Register now if timm is imported, else once it is (idempotent)."""
    flush()
    if not _state['registered'] and not any(isinstance(f, _RegisterAfterLoading) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterLoading())
