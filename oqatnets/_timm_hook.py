"""Registering the zoo in timm when timm is imported, without importing torch before that.

``import oqatnets`` only installs a one-shot import hook (cheap): registration runs right after
``import timm`` finishes, or at once if timm is already imported. When timm is imported by
oqatnets' own modules while they are still initialising (``oqatnets.net`` imports timm),
registering then would import them half-built; it is left pending and done by the package's
lazy attribute access, or the next import statement, once that import completes (:func:`flush`).
"""
from __future__ import annotations

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
        if not any(isinstance(f, _RetryAfterImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _RetryAfterImport())
        return
    _state['registered'] = True
    importlib.import_module('oqatnets.timm_compat').subscribe()


class _RetryAfterImport(importlib.abc.MetaPathFinder):
    """Consulted on every later import: runs a pending registration once oqatnets has finished importing."""

    def find_spec(self, fullname, path, target=None):
        if not _initialising():
            sys.meta_path.remove(self)
            flush()
        return None


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
