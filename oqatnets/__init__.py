"""OQATNets: extremely low-bit (2/3/4-bit) MobileNetV3 subnets from Once Quantization-Aware Training."""
from .net import OQATNet
from .official import load_official_supernet
from .profile import Profile, profile
from .quant import QuantConv2d, get_bits, lsq_quantize, set_bits
from .spec import SearchSpace, SubnetSpec, get_space, list_spaces
from .supernet import OQATSupernet

__version__ = '0.1.0'

from .pretrained import PretrainedCfg  # noqa: E402
from .registry import (get_pretrained_cfg, is_model, list_models, list_pretrained,  # noqa: E402
                       register_zoo_table)
from .factory import create_model, create_supernet  # noqa: E402
from .hub import publish_to_cache, push_to_hub, save_pretrained  # noqa: E402
from .packing import load_packed, save_packed  # noqa: E402
from . import timm_compat as _timm_compat  # noqa: E402

_timm_compat.install()
