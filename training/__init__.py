"""Joint training, bit inheritance, BN calibration, search and finetuning of OQAT supernets.

Public API (everything else is an implementation detail of the ``oqat`` commands):

- :func:`train_supernet` — sandwich-rule joint training with shared LSQ step sizes
- :func:`load_ofa_supernet` — the float Once-for-All MobileNetV3 supernet as a starting point
- :func:`inherit_bits` — the (b−1)-bit supernet from the b-bit one, steps doubled
- :func:`evaluate_subnet`, :func:`calibrated_subnet` — BN recalibration before evaluation/extraction
- :func:`evolutionary_search`, :func:`random_search`, :func:`run_search` — budgeted search, Pareto fronts
- :func:`finetune` — a static subnet on a new data set, bits kept
- :func:`get_recipe` / :class:`Recipe` — the hyper-parameter presets
- :func:`init_distributed` — torchrun/DDP context
"""
from .calibrate import calibrated_subnet, evaluate_subnet
from .checkpoint import CheckpointError
from .distributed import DistContext, init_distributed
from .evolution import ConstrainedSampler, evolutionary_search, random_search
from .finetune import finetune
from .inherit import inherit_bits
from .joint import sandwich_step, train_supernet
from .ofa_init import load_ofa_supernet
from .recipes import Recipe, get_recipe, list_recipes
from .search import run_search

__all__ = ['train_supernet', 'sandwich_step', 'inherit_bits', 'evaluate_subnet', 'calibrated_subnet',
           'evolutionary_search', 'random_search', 'ConstrainedSampler', 'run_search', 'finetune', 'Recipe',
           'get_recipe', 'list_recipes', 'init_distributed', 'DistContext', 'CheckpointError', 'load_ofa_supernet']
