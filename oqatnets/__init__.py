"""OQATNets: extremely low-bit (2/3/4-bit) MobileNetV3 subnets from Once Quantization-Aware Training."""
__version__ = '0.1.0'

from .evaluation import evaluate, recalibrate_bn
from .factory import create_model, create_supernet
from .hub import publish_to_cache, push_to_hub, save_pretrained
from .net import OQATNet
from .official import load_official_supernet
from .packing import load_packed, save_packed
from .pretrained import PretrainedCfg
from .profile import Profile, profile
from .quant import QuantConv2d, get_bits, lsq_quantize, set_bits
from .registry import get_pretrained_cfg, is_model, list_models, list_pretrained, register_zoo_table
from .spec import SearchSpace, SubnetSpec, get_space, list_spaces
from .supernet import OQATSupernet
from . import timm_compat as _timm_compat

_timm_compat.install()

__all__ = [
    'OQATNet', 'OQATSupernet', 'SubnetSpec', 'SearchSpace', 'get_space', 'list_spaces', 'QuantConv2d',
    'lsq_quantize', 'set_bits', 'get_bits', 'Profile', 'profile', 'load_official_supernet', 'create_model',
    'create_supernet', 'list_models', 'list_pretrained', 'is_model', 'get_pretrained_cfg', 'register_zoo_table',
    'PretrainedCfg', 'save_pretrained', 'push_to_hub', 'publish_to_cache', 'save_packed', 'load_packed',
    'recalibrate_bn', 'evaluate',
]
