"""OQATNets: extremely low-bit (2/3/4-bit) MobileNetV3 subnets from Once Quantization-Aware Training.

The public names load their submodule on first use (PEP 562), so ``import oqatnets`` (and the
``oqat`` command's start-up, ``oqat --version``) does not import torch. Importing the package
installs the timm registration hook (:mod:`oqatnets._timm_hook`).
"""
from __future__ import annotations

import importlib
from typing import Any

from . import _timm_hook
from .version import __version__

# public name -> the submodule that owns it
_EXPORTS = {
    'Profile': 'costs', 'profile': 'costs',
    'OQATNetsError': 'errors',
    'evaluate': 'evaluation', 'recalibrate_bn': 'evaluation',
    'create_model': 'factory', 'create_supernet': 'factory', 'load_packed': 'factory',
    'publish_to_cache': 'hub', 'push_to_hub': 'hub', 'save_pretrained': 'hub',
    'OQATNet': 'net',
    'load_official_supernet': 'official',
    'PretrainedCfg': 'pretrained',
    'QuantConv2d': 'quant', 'get_bits': 'quant', 'lsq_quantize': 'quant', 'set_bits': 'quant',
    'get_pretrained_cfg': 'registry', 'is_model': 'registry', 'list_models': 'registry',
    'list_pretrained': 'registry', 'register_zoo_table': 'registry',
    'SearchSpace': 'spec', 'SubnetSpec': 'spec', 'get_space': 'spec', 'list_spaces': 'spec',
    'OQATSupernet': 'supernet',
    'save_packed': 'weights',
}

__all__ = [
    '__version__', 'OQATNet', 'OQATSupernet', 'SubnetSpec', 'SearchSpace', 'get_space', 'list_spaces', 'QuantConv2d',
    'lsq_quantize', 'set_bits', 'get_bits', 'Profile', 'profile', 'load_official_supernet', 'create_model',
    'create_supernet', 'list_models', 'list_pretrained', 'is_model', 'get_pretrained_cfg', 'register_zoo_table',
    'PretrainedCfg', 'save_pretrained', 'push_to_hub', 'publish_to_cache', 'save_packed', 'load_packed',
    'recalibrate_bn', 'evaluate', 'OQATNetsError',
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{module}', __name__), name)
    globals()[name] = value
    _timm_hook.flush()  # timm may have been imported by the submodule just loaded
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_timm_hook.install()
