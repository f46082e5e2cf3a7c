"""torch.hub entry points: every registered OQATNets name, e.g.
``torch.hub.load('<owner>/oqatnets', 'oqat_2bit_m', pretrained=True)``.

Names holding a dot (the authors' ids such as ``oqa_mbv3_..._w1.0_b2``) are not Python
identifiers; use their ``oqat_supernet_mbv3_w{b}a{b}`` names here.

A checkout need not be pip-installed: ``training/``, ``zoo/`` and ``cli/`` only become
``oqatnets.training`` / ``oqatnets.zoo`` / ``oqatnets.cli`` at install time, so when the
``oqatnets`` that torch.hub imports is this checkout's, a meta-path finder maps those names onto
the top-level folders (the zoo table ``zoo/models.json`` included).
"""
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path as _Path

# What ``import oqatnets`` needs (torch.hub checks these before importing anything else).
dependencies = ['torch', 'torchvision', 'timm', 'huggingface_hub', 'safetensors', 'PIL']

_ROOT = _Path(__file__).resolve().parent
_SUBPACKAGES = {'oqatnets.training': 'training', 'oqatnets.zoo': 'zoo', 'oqatnets.cli': 'cli'}


class _CheckoutLayout(importlib.abc.MetaPathFinder):
    """Finds ``oqatnets.training/zoo/cli`` in this checkout's top-level folders (the installed layout)."""

    checkout = _ROOT  # torch.hub re-executes this file on every load, so each load has a new class: match on this

    def find_spec(self, fullname: str, path=None, target=None) -> 'importlib.machinery.ModuleSpec | None':
        folder = _SUBPACKAGES.get(fullname)
        if folder is None:
            return None
        init = _ROOT / folder / '__init__.py'
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[str(init.parent)])


def _map_checkout_layout() -> None:
    spec = importlib.util.find_spec('oqatnets')
    is_this_checkout = spec is not None and spec.origin and _Path(spec.origin).resolve().parent == _ROOT / 'oqatnets'
    if is_this_checkout and not any(getattr(f, 'checkout', None) == _ROOT for f in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutLayout())


_map_checkout_layout()

import oqatnets as _oqatnets  # noqa: E402


def _entrypoint(name):
    def entrypoint(pretrained=False, **kwargs):
        return _oqatnets.create_model(name, pretrained=pretrained, **kwargs)
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f'OQATNets {name!r}; keyword arguments go to oqatnets.create_model.'
    return entrypoint


for _name in _oqatnets.list_models():
    if _name.isidentifier():
        globals()[_name] = _entrypoint(_name)
del _name
