"""Training recipes: every hyper-parameter of joint training, inheritance, search and finetuning.

A :class:`Recipe` is plain data so that it can be stored in checkpoints (resuming with a
different recipe is refused) and overridden field by field from the CLI. Two presets exist:
``imagenet`` (the paper's space at 128-224 px, OFA-style defaults) and ``small`` (the narrow
output-stride-8 space at 24-32 px, sized so that Fashion-MNIST trains on two CPU cores in
minutes). Why each value was chosen is written down in ``docs/TRAINING.md``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

from oqatnets.errors import InvalidArgumentError
from oqatnets.evaluation import CALIBRATION_MODES, CalibrationMode
from oqatnets.spec import get_space

__all__ = ['FLOAT_SAMPLINGS', 'RESOLUTION_SAMPLINGS', 'Recipe', 'RECIPES', 'get_recipe', 'list_recipes',
           'recipe_for_space', 'SPLIT_SEED']

SPLIT_SEED = 20210401  # fixes which training images are held out for the search, across commands

FloatSampling = Literal['sandwich', 'largest']
FLOAT_SAMPLINGS: tuple[str, ...] = get_args(FloatSampling)
ResolutionSampling = Literal['per_subnet', 'per_step']
RESOLUTION_SAMPLINGS: tuple[str, ...] = get_args(ResolutionSampling)


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of the OQAT pipeline for one search space."""

    space: str
    batch_size: int = 128
    lr: float = 0.1  # peak learning rate for ``batch_size`` images on all ranks together
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5  # never applied to step sizes, BN parameters or biases
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    augment: bool = True  # random crop and flip of the training images (RandomResizedCrop for folders)
    kd_ratio: float = 1.0  # weight of the in-place distillation loss of the non-largest subnets
    kd_temperature: float = 1.0
    num_random_subnets: int = 2  # the sandwich: largest + smallest + this many random subnets
    # the sandwich's resolutions: 'per_subnet' (BigNAS: the largest at the maximum, the smallest at the
    # minimum, each random subnet its own) or 'per_step' (OFA: one random resolution for every subnet of a step)
    resolution_sampling: ResolutionSampling = 'per_subnet'
    epochs: int = 10  # quantized joint training of the first (4-bit) supernet
    float_epochs: int = 0  # float (bits=32) joint training before quantization starts
    # what the float phase trains: 'sandwich' (the same subnets as the quantized phase) or 'largest'
    # alone, the first stage of OFA's progressive shrinking
    float_sampling: FloatSampling = 'sandwich'
    quant_lr_factor: float = 1.0  # peak LR of the quantized phase after a float phase, relative to ``lr``
    step_lr_factor: float = 1.0  # LR of the LSQ step sizes relative to every other parameter's
    inherit_epochs: int = 5  # joint training after each bit inheritance (fewer than ``epochs``)
    holdout_images: int = 5000  # training images kept out of training, for the search
    calib_images: int = 2000  # fixed training images for BN recalibration (the authors' number)
    calib_batch_size: int = 256
    # how every subnet's BN statistics are recalibrated (recalibrate_bn's modes): 'population' (all
    # calibration images in one forward) computes what the deployed net sees; 'batch' (the authors')
    # swings 2-bit top-1 by up to 10 points with the draw of images (docs/TRAINING.md)
    bn_calibration: CalibrationMode = 'population'
    population: int = 32
    generations: int = 10
    mutation_prob: float = 0.2
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    finetune_lr: float = 0.01
    finetune_epochs: int = 5

    def __post_init__(self) -> None:
        get_space(self.space)  # an unknown space name is refused here, not at the first training step
        for name in ('batch_size', 'epochs', 'population', 'calib_images', 'calib_batch_size'):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f'Recipe.{name} must be at least 1, got {getattr(self, name)}')
        for name in ('float_epochs', 'inherit_epochs', 'holdout_images', 'num_random_subnets', 'generations',
                     'finetune_epochs', 'warmup_epochs', 'weight_decay', 'kd_ratio'):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f'Recipe.{name} must not be negative, got {getattr(self, name)}')
        for name in ('lr', 'quant_lr_factor', 'step_lr_factor', 'finetune_lr', 'kd_temperature'):
            if getattr(self, name) <= 0:
                raise InvalidArgumentError(f'Recipe.{name} must be positive, got {getattr(self, name)}')
        for name in ('momentum', 'label_smoothing', 'mutation_prob', 'parent_ratio', 'mutation_ratio'):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidArgumentError(f'Recipe.{name} must be in [0, 1], got {getattr(self, name)}')
        for name, choices in (('bn_calibration', CALIBRATION_MODES), ('float_sampling', FLOAT_SAMPLINGS),
                              ('resolution_sampling', RESOLUTION_SAMPLINGS)):
            if getattr(self, name) not in choices:
                raise InvalidArgumentError(f'Recipe.{name} must be one of {", ".join(choices)}, '
                                           f'got {getattr(self, name)!r}')

    def override(self, **changes: Any) -> 'Recipe':
        """A copy with the given fields changed; ``None`` values mean "keep the preset's"."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidArgumentError(f'unknown recipe fields {unknown}; known: {", ".join(sorted(known))}')
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'Recipe':
        return cls(**data)


RECIPES: dict[str, Recipe] = {
    # OFA's defaults (SGD nesterov 0.9, wd 4e-5 without BN, label smoothing 0.1, cosine), batch 256
    # at lr 0.1 as for QAT on ImageNet; epoch counts scaled down from OFA's 150 for the budget.
    # The float phase is the float OFA supernet itself: start with --init ofa:PATH (float_epochs 0).
    'imagenet': Recipe(space='imagenet', batch_size=256, lr=0.1, warmup_epochs=2.0, epochs=40,
                       inherit_epochs=20, float_epochs=0, holdout_images=10000, calib_images=2000,
                       calib_batch_size=100, bn_calibration='batch', population=100, generations=20),
    # Fashion-MNIST on 2 CPU cores: a few epochs, one random subnet per sandwich, a short search.
    # One random subnet, lr 0.1, KD temperature and weight 1, the step sizes at the weights' LR and
    # per-subnet resolutions were measured against 0 / 2 subnets, lr 0.2, temperature 2, weight 0.5,
    # 0.1× / 10× step LR and OFA's one resolution per step at the demo's scale (docs/TRAINING.md, the
    # demo's 4-bit stage one knob at a time). A float epoch first, then 3 quantized (same 4 in all): the
    # float phase won every equal-epoch comparison of benchmarks/bench_recipe.py on the smallest subnet,
    # and at the demo's shape on all; it trains the sandwich (the largest alone cost the middle 1.1-1.3).
    # No augmentation: at a few epochs crop and flip only slow fitting (+4 to +6 points without, docs/TRAINING.md).
    'small': Recipe(space='small', batch_size=128, lr=0.1, warmup_epochs=0.5, augment=False, float_epochs=1, epochs=3,
                    inherit_epochs=2, num_random_subnets=1, holdout_images=5000, calib_images=1000,
                    calib_batch_size=250, population=16, generations=6, finetune_lr=0.02, finetune_epochs=3),
}
# The same recipe for the small space with signed block inputs, and for it at 28 px (the demo's space).
RECIPES['small_signed'] = replace(RECIPES['small'], space='small_signed')
# Batch 32 at the same lr: four times batch 128's steps for the same images. Over three seeds of the demo's
# pipeline batch 64 won +1.4 to +5.0 points on every column over 128, and 32 another +0.6 to +3.8 on average
# over 64 (17 of 18 pairs up), at about batch 64's time per image once the fused training's depthwise weight
# gradient came from the C kernel (docs/TRAINING.md, *Batch 64* and *Batch 32*).
RECIPES['small_signed_28'] = replace(RECIPES['small'], space='small_signed_28', batch_size=32)


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def recipe_for_space(space: str) -> Recipe:
    """The recipe named after ``space``, or ``imagenet``'s for a custom space."""
    return RECIPES.get(space, RECIPES['imagenet'])


def get_recipe(name: str) -> Recipe:
    """The recipe preset ``name`` (its search space has the same name)."""
    try:
        return RECIPES[name]
    except KeyError:
        raise InvalidArgumentError(f'unknown recipe {name!r}; known: {", ".join(list_recipes())}') from None
