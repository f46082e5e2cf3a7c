"""Registering the zoo in timm when timm is imported, without importing torch before that.

``import oqatnets`` only installs a one-shot import hook (cheap): registration runs right after
``import timm`` finishes, or at once if timm is already imported. When timm is imported by
oqatnets' own modules while they are still initialising (``oqatnets.net`` imports timm),
registering then would import them half-built; it is left pending and done by the package's
lazy attribute access, or the next import statement, once that import completes (:func:`flush`).
"""
from __future__ import annotations

import copy
import importlib
import importlib.abc
import importlib.machinery
import sys

__all__ = ['install', 'flush']

_state = {'registered': False}


def _initialising() -> bool:
    """Whether an ``oqatnets`` module is in the middle of being imported."""
    return any(getattr(getattr(module, '__spec__', None), '_initializing', False)
               for name, module in list(sys.modules.items()) if name.startswith('oqatnets.'))


def flush() -> None:
    """Register with timm now if timm is imported and registration has not happened yet (when oqatnets is
    still initialising, at the next import statement that completes after it)."""
    if _state['registered'] or 'timm' not in sys.modules:
        return
    if _initialising():
        _retry_at_next_import()
        return
    _state['registered'] = True
    importlib.import_module('oqatnets.timm_compat').subscribe()


def _retry_at_next_import() -> None:
    if not any(isinstance(f, _RetryAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RetryAfterImport())


class _RetryAfterImport(importlib.abc.MetaPathFinder):
    """Runs a pending registration after the first import that begins once oqatnets has finished importing.

    Not from ``find_spec`` itself: registering imports modules, and if one of them were the module
    being looked up (``from oqatnets.supernet import ...`` right after ``import oqatnets.net``),
    Python would then load a second copy of it, whose classes fail ``isinstance`` against the
    first. So that module is found by the other finders and registration runs once it has loaded.
    """

    def find_spec(self, fullname, path, target=None):
        if _state['registered']:  # done meanwhile by lazy attribute access
            sys.meta_path.remove(self)
            return None
        if _initialising():
            return None
        sys.meta_path.remove(self)
        for finder in list(sys.meta_path):
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, 'find_spec') else None
            if spec is not None and spec.loader is not None:
                stand_in = copy.copy(spec)
                stand_in.loader = _RegisterAfterLoading(spec)
                return stand_in
            if spec is not None:  # no loader: try again at the next import
                _retry_at_next_import()
                return None
        flush()  # not found: nothing is being loaded, so registering cannot load it twice
        return None


class _RegisterAfterLoading(importlib.abc.Loader):
    """Loads a module with the loader its spec names, then registers with timm."""

    def __init__(self, spec):
        self._spec = spec

    def create_module(self, spec):
        return self._spec.loader.create_module(self._spec)

    def exec_module(self, module):
        module.__spec__, module.__loader__ = self._spec, self._spec.loader  # the module's own, not the stand-in
        self._spec._initializing = True  # what the import system marks, so _initialising() sees this module
        try:
            self._spec.loader.exec_module(module)
        except BaseException:
            _retry_at_next_import()
            raise
        finally:
            self._spec._initializing = False
        flush()


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
            flush()
        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Register now if timm is imported, else once it is (idempotent)."""
    if 'timm' in sys.modules:
        flush()
    elif not any(isinstance(f, _TimmImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TimmImportHook())
