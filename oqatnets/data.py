"""Data a model needs at inference: normalisation constants, transforms, in-memory image sets.

Getting a data set onto the disk (the builtin Fashion-MNIST and MNIST, ImageFolder roots) is
training's job: :mod:`oqatnets.training.sources`. Nothing here downloads or installs anything.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torch.utils.data import Dataset, Subset
from torchvision import transforms as T

from .errors import InvalidArgumentError

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'ImageData', 'TensorImageDataset', 'ImagesThrough', 'eval_transform',
           'resize_crop', 'cfg_transform', 'train_transform', 'calibration_subset', 'CALIBRATION_SEED']

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CALIBRATION_SEED = 937162211  # the authors' seed for the 2000-image BN-calibration subset


def resize_crop(resolution: int, *, crop_pct: float = 0.875, interpolation: str = 'bilinear') -> Callable:
    """Resize(ceil(r / crop_pct)) → CenterCrop(r) on a PIL image: the geometry of :func:`eval_transform`."""
    return T.Compose([T.Resize(math.ceil(resolution / crop_pct), interpolation=T.InterpolationMode(interpolation)),
                      T.CenterCrop(resolution)])


def eval_transform(resolution: int, *, crop_pct: float = 0.875, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD, interpolation: str = 'bilinear') -> Callable:
    """Resize(ceil(r / crop_pct)) → CenterCrop(r) → ToTensor → Normalize (the authors' eval)."""
    return T.Compose([T.Lambda(_to_rgb), resize_crop(resolution, crop_pct=crop_pct, interpolation=interpolation),
                      T.ToTensor(), T.Normalize(mean, std)])


def cfg_transform(cfg: dict) -> Callable:
    """The evaluation transform a pretrained cfg describes, built by timm as a timm user gets it
    (``create_transform(**resolve_data_config(pretrained_cfg=cfg))``: size, crop_pct, crop_mode,
    interpolation, mean, std), after conversion to RGB: what ``oqat predict`` and ``oqat eval`` apply to
    an image file, and what every figure on a card is measured through."""
    return T.Compose([T.Lambda(_to_rgb), create_transform(**resolve_data_config(pretrained_cfg=dict(cfg)))])


def train_transform(resolution: int, *, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Callable:
    """RandomResizedCrop(r, scale 0.08–1) → flip → ToTensor → Normalize (OFA's training aug, less jitter)."""
    return T.Compose([T.Lambda(_to_rgb), T.RandomResizedCrop(resolution), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(mean, std)])


def _to_rgb(image):
    return image.convert('RGB') if getattr(image, 'mode', 'RGB') != 'RGB' else image


class TensorImageDataset(Dataset):
    """Grey uint8 images held in memory, served as normalised channels×H×W float tensors.

    ``size`` resizes every image once, as the evaluation transform of a pretrained cfg with crop_pct 1
    resizes an image file (:func:`resize_crop`, PIL bilinear); ``None`` serves them as stored. Either way
    a model tested on these tensors sees what ``oqat predict`` and timm's transforms give it for the same
    images as files. Training mode pads by 2 and random-crops back, and flips horizontally: cheap tensor
    ops, so a CPU can train on the whole of Fashion-MNIST in minutes.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, mean: float, std: float,
                 size: int | None = None, train: bool = False, channels: int = 3):
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise InvalidArgumentError('TensorImageDataset wants uint8 images of shape N×H×W')
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            images = _resized(images, size)
        self.images, self.labels = images, labels.long()
        self.mean, self.std, self.train, self.channels = mean, std, train, channels

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].float().div_(255).sub_(self.mean).div_(self.std)[None]
        if self.train:
            h, w = x.shape[-2:]
            x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-self.mean / self.std)
            i, j = torch.randint(0, 5, (2,)).tolist()
            x = x[:, i:i + h, j:j + w]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return x.expand(self.channels, -1, -1).contiguous(), int(self.labels[index])


class ImagesThrough(Dataset):
    """The grey images of a :class:`TensorImageDataset` as the PIL images their files decode to, through
    ``transform`` (a cfg's evaluation transform): what a user feeding them as files gets."""

    def __init__(self, dataset: TensorImageDataset, transform: Callable):
        self.images, self.labels, self.transform = dataset.images, dataset.labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index].numpy())), int(self.labels[index])


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    resize = resize_crop(size, crop_pct=1.0)
    return torch.from_numpy(np.stack([np.asarray(resize(Image.fromarray(image))) for image in images.numpy()]))


@dataclass
class ImageData:
    """A train/val pair with what a model needs to know about it."""

    name: str
    train: Dataset
    val: Dataset
    num_classes: int
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(default=())
    crop_pct: float = 1.0
    # which split ``val`` is, as a model card's model-index names it: the built-in sets have no validation
    # split, so their ``val`` is their 'test' split; a folder's is named after its sub-folder
    val_split: str = 'validation'


def calibration_subset(dataset: Dataset, num_images: int = 2000, *, seed: int = CALIBRATION_SEED) -> Subset:
    """A fixed random subset of ``dataset`` (the authors used 2000 training images, seed 937162211)."""
    g = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=g)[:min(num_images, len(dataset))]
    return Subset(dataset, indices.tolist())
