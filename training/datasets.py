"""Training data: a source split into training, held-out and calibration parts, views, orders, batches.

:func:`prepare_data` turns a data source (:mod:`oqatnets.training.sources`) into what the
commands need. The split is a pure function of (dataset size, holdout size, seed), so ``train``,
``search`` and ``calibrate`` agree on which training images were never trained on without
passing files around. The builtin small data sets live in memory, so their fixed batches (BN
calibration, held-out evaluation) are materialised once; folder data sets stream through a
DataLoader.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.datasets import ImageFolder

from oqatnets.data import (
    CALIBRATION_SEED,
    ImageData,
    ImagesThrough,
    TensorImageDataset,
    calibration_subset,
    cfg_transform,
    eval_transform,
)
from oqatnets.errors import InvalidArgumentError, InvalidTypeError
from oqatnets.evaluation import evaluate

from .recipes import SPLIT_SEED
from .sources import load_image_data

__all__ = ['PreparedData', 'prepare_data', 'Split', 'split_holdout', 'eval_view', 'epoch_order', 'batches_from', 'fixed_batches',
           'calibration_batches', 'SERVED_CHANNELS', 'check_channels', 'check_class_order', 'check_classes', 'cfg_view',
           'evaluate_as_files']

SERVED_CHANNELS = 3  # builtin grey sets repeat the grey over three channels; folders are read as RGB


@dataclass(frozen=True)
class Split:
    """Indices of the training images used for training and of those held out for the search."""

    train: list[int]
    holdout: list[int]


def split_holdout(num_images: int, *, holdout_images: int, seed: int) -> Split:
    """A seeded random split of ``range(num_images)``; ``holdout_images`` go to the held-out part."""
    if not 0 <= holdout_images < num_images:
        raise InvalidArgumentError(f'cannot hold out {holdout_images} of {num_images} training images; '
                         f'pass --holdout between 0 and {num_images - 1}')
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed)).tolist()
    return Split(train=sorted(order[holdout_images:]), holdout=sorted(order[:holdout_images]))


def eval_view(dataset: Dataset, *, resolution: int) -> Dataset:
    """The same images with the evaluation transform (no random crop or flip)."""
    if isinstance(dataset, Subset):
        return Subset(eval_view(dataset.dataset, resolution=resolution), dataset.indices)
    if isinstance(dataset, TensorImageDataset):
        view = copy.copy(dataset)
        view.train = False
        return view
    if isinstance(dataset, ImageFolder):
        return ImageFolder(dataset.root, transform=eval_transform(resolution), loader=dataset.loader)
    raise InvalidTypeError(f'no evaluation view for {type(dataset).__name__}; use a builtin data set or an ImageFolder')


def cfg_view(dataset: Dataset, cfg: dict[str, Any]) -> Dataset:
    """The same images served as a model with pretrained cfg ``cfg`` is fed image files: through the
    cfg's own transform (size, crop, interpolation, mean, std), whatever the data set would serve."""
    if isinstance(dataset, Subset):
        return Subset(cfg_view(dataset.dataset, cfg), dataset.indices)
    if isinstance(dataset, TensorImageDataset):
        return ImagesThrough(dataset, cfg_transform(cfg))
    if isinstance(dataset, ImageFolder):
        return ImageFolder(dataset.root, transform=cfg_transform(cfg), loader=dataset.loader)
    raise InvalidTypeError(f'no cfg view for {type(dataset).__name__}; use a builtin data set or an ImageFolder')


def evaluate_as_files(model: torch.nn.Module, dataset: Dataset, *, cfg: dict[str, Any] | None = None,
                      batch_size: int = 250, num_workers: int = 0, progress: bool = False,
                      desc: str = 'eval') -> dict[str, float]:
    """Top-1/top-5 of ``model`` on the images of ``dataset`` fed as a user feeds image files: through the
    transform of ``cfg`` (default the model's own). The one way a figure that a card carries is measured."""
    loader = DataLoader(cfg_view(dataset, model.pretrained_cfg if cfg is None else cfg), batch_size=batch_size,
                        num_workers=num_workers)
    return evaluate(model, loader, progress=progress, desc=desc)


def check_classes(model: torch.nn.Module, data: ImageData, *, name: str) -> None:
    """Refuse data that ``model`` (kept with its own classifier) cannot be measured or calibrated on: another
    number of classes, or the same classes in another order (:func:`check_class_order`)."""
    if model.num_classes != data.num_classes:
        raise InvalidArgumentError(f'{data.name} has {data.num_classes} classes but {name} predicts {model.num_classes}; '
                                   'use data of its classes (oqat finetune trains a new classifier)')
    check_class_order(model, data, name=name)


def check_class_order(model: torch.nn.Module, data: ImageData, *, name: str) -> None:
    """Refuse data whose classes a model would misread: a class folder named like one of the model's
    ``label_names`` but at another index (folders are numbered alphabetically, a classifier by its names)."""
    names = list(model.pretrained_cfg.get('label_names') or [])
    for index, folder in enumerate(data.class_names):
        if folder in names and names.index(folder) != index:
            raise InvalidArgumentError(
                f'{data.name}: class folder {folder!r} is class {index} of the data but class {names.index(folder)} of '
                f'{name} (label_names {names}); rename the folders so that they sort in that order')


def check_channels(model: torch.nn.Module, *, name: str) -> None:
    """Refuse a model ``name`` that does not take the 3-channel images every data set here is served as,
    before anything is read or written (a convolution would otherwise fail deep inside torch)."""
    in_chans = getattr(model, 'in_chans', SERVED_CHANNELS)
    if in_chans != SERVED_CHANNELS:
        raise InvalidArgumentError(f'{name} takes {in_chans}-channel images, but data sets are served as '
                                   f'{SERVED_CHANNELS}-channel ones (grey images repeated); use a model with '
                                   f'in_chans={SERVED_CHANNELS}')


def epoch_order(num_images: int, *, epoch: int, seed: int, rank: int, world_size: int) -> list[int]:
    """This rank's image order for ``epoch`` (DistributedSampler: shuffled by seed+epoch, equal shares)."""
    sampler = DistributedSampler(range(num_images), num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return list(sampler)


def batches_from(dataset: Dataset, order: list[int], *, batch_size: int, num_workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """Full batches of ``dataset`` in exactly ``order`` (a resumed epoch passes the remaining part).

    The loader gets its own generator: by default each new iterator draws a seed from torch's
    global generator, which would shift the augmentation stream of a resumed epoch.
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=num_workers, drop_last=True,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))


def fixed_batches(dataset: Dataset, *, batch_size: int, in_memory: bool, num_workers: int = 0):
    """Deterministic batches of ``dataset``; held in memory when ``in_memory`` (small images)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return [(x, y) for x, y in loader] if in_memory else loader


def calibration_batches(train_view: Dataset, *, num_images: int, batch_size: int, in_memory: bool,
                        num_workers: int = 0, seed: int = CALIBRATION_SEED):
    """The fixed BN-calibration images (a seeded subset of the training part, eval transform): the one
    calibration pipeline of training, search, ``oqat calibrate`` and ``oqat zoo build``."""
    return fixed_batches(calibration_subset(train_view, num_images, seed=seed), batch_size=batch_size,
                         in_memory=in_memory, num_workers=num_workers)


@dataclass
class PreparedData:
    """A data set split for OQAT: train on ``train_set``, calibrate on ``calib``, search on ``holdout``.

    ``train_set`` serves its images augmented; :meth:`training_set` picks per the recipe.
    """

    data: ImageData
    split: Split
    train_set: Dataset
    holdout_set: Dataset
    calib: Iterable
    in_memory: bool
    num_workers: int

    def training_set(self, *, augment: bool) -> Dataset:
        """The training images, augmented (random crop and flip) or as the model sees them at evaluation."""
        return self.train_set if augment else eval_view(self.train_set, resolution=self.data.resolution)

    def holdout_batches(self, *, batch_size: int) -> Iterable:
        if not len(self.holdout_set):
            raise InvalidArgumentError('no held-out images to search on; train and search with --holdout above 0')
        return fixed_batches(self.holdout_set, batch_size=batch_size, in_memory=self.in_memory,
                             num_workers=self.num_workers)

    def val_batches(self, *, batch_size: int, limit: int | None = None) -> Iterable:
        val = self.data.val if limit is None else Subset(self.data.val, range(min(limit, len(self.data.val))))
        return fixed_batches(val, batch_size=batch_size, in_memory=self.in_memory, num_workers=self.num_workers)


def prepare_data(source: str, *, holdout_images: int, calib_images: int, calib_batch_size: int,
                 train_images: int | None = None, split_seed: int = SPLIT_SEED, num_workers: int = 0,
                 holdout_adapts: bool = False) -> PreparedData:
    """Load ``source`` and split its training images into a training part and a held-out part.

    ``train_images`` keeps only the first N images of the training part (quick runs and tests);
    the held-out part does not change with it, so searches stay comparable. ``holdout_adapts``:
    ``holdout_images`` is a default, and a data set without more training images than that holds none out.
    """
    data = load_image_data(source)
    if holdout_adapts and holdout_images >= len(data.train):
        holdout_images = 0
    split = split_holdout(len(data.train), holdout_images=holdout_images, seed=split_seed)
    if train_images is not None and train_images > len(split.train):  # an explicit count is honoured or refused
        raise InvalidArgumentError(f'--train-images {train_images}: {source} has {len(split.train)} training images '
                                   f'outside the {len(split.holdout)} held out; pass at most that')
    train_idx = split.train if train_images is None else split.train[:train_images]
    if not train_idx:
        raise InvalidArgumentError('no training images left; lower --holdout or raise --train-images')
    in_memory = isinstance(data.train, TensorImageDataset)
    view = eval_view(data.train, resolution=data.resolution)
    calib = calibration_batches(Subset(view, train_idx), num_images=calib_images, batch_size=calib_batch_size,
                                in_memory=in_memory)
    return PreparedData(data=data, split=split, train_set=Subset(data.train, train_idx),
                        holdout_set=Subset(view, split.holdout), calib=calib, in_memory=in_memory,
                        num_workers=0 if in_memory else num_workers)
