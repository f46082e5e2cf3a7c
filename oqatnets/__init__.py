"""OQATNets: extremely low-bit (2/3/4-bit) MobileNetV3 subnets from Once Quantization-Aware Training."""
from .net import OQATNet
from .official import load_official_supernet
from .profile import Profile, profile
from .quant import QuantConv2d, get_bits, lsq_quantize, set_bits
from .spec import SearchSpace, SubnetSpec, get_space, list_spaces
from .supernet import OQATSupernet

__version__ = '0.1.0'
