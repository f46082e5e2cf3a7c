"""OQATNets: extremely low-bit (2/3/4-bit) MobileNetV3 subnets from Once Quantization-Aware Training."""
from .version import __version__
from .costs import Profile, profile
from .errors import OQATNetsError
from .evaluation import evaluate, recalibrate_bn
from .factory import create_model, create_supernet, load_packed
from .hub import publish_to_cache, push_to_hub, save_pretrained
from .net import OQATNet
from .official import load_official_supernet
from .pretrained import PretrainedCfg
from .quant import QuantConv2d, get_bits, lsq_quantize, set_bits
from .registry import get_pretrained_cfg, is_model, list_models, list_pretrained, register_zoo_table
from .spec import SearchSpace, SubnetSpec, get_space, list_spaces
from .supernet import OQATSupernet
from .timm_compat import install as _install_timm_registration
from .weights import save_packed

_install_timm_registration()

__all__ = [
    '__version__', 'OQATNet', 'OQATSupernet', 'SubnetSpec', 'SearchSpace', 'get_space', 'list_spaces', 'QuantConv2d',
    'lsq_quantize', 'set_bits', 'get_bits', 'Profile', 'profile', 'load_official_supernet', 'create_model',
    'create_supernet', 'list_models', 'list_pretrained', 'is_model', 'get_pretrained_cfg', 'register_zoo_table',
    'PretrainedCfg', 'save_pretrained', 'push_to_hub', 'publish_to_cache', 'save_packed', 'load_packed',
    'recalibrate_bn', 'evaluate', 'OQATNetsError',
]
