"""Turning a data source into what the commands need: training part, held-out part, fixed batches.

The builtin small data sets live in memory, so their fixed batches (BN calibration, held-out
evaluation) are materialised once; folder data sets stream through a DataLoader.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch.utils.data import Dataset, Subset

from oqatnets.data import ImageData, TensorImageDataset
from oqatnets.errors import InvalidArgumentError

from .datasets import Split, calibration_batches, eval_view, fixed_batches, split_holdout
from .presets import SPLIT_SEED
from .sources import load_image_data

__all__ = ['PreparedData', 'prepare_data']


@dataclass
class PreparedData:
    """A data set split for OQAT: train on ``train_set``, calibrate on ``calib``, search on ``holdout``."""

    data: ImageData
    split: Split
    train_set: Dataset
    holdout_set: Dataset
    calib: Iterable
    in_memory: bool
    num_workers: int

    def holdout_batches(self, *, batch_size: int) -> Iterable:
        if not len(self.holdout_set):
            raise InvalidArgumentError('no held-out images to search on; train and search with --holdout above 0')
        return fixed_batches(self.holdout_set, batch_size=batch_size, in_memory=self.in_memory,
                             num_workers=self.num_workers)

    def val_batches(self, *, batch_size: int, limit: int | None = None) -> Iterable:
        val = self.data.val if limit is None else Subset(self.data.val, range(min(limit, len(self.data.val))))
        return fixed_batches(val, batch_size=batch_size, in_memory=self.in_memory, num_workers=self.num_workers)


def prepare_data(source: str, *, holdout_images: int, calib_images: int, calib_batch_size: int,
                 train_images: int | None = None, split_seed: int = SPLIT_SEED, num_workers: int = 0) -> PreparedData:
    """Load ``source`` and split its training images into a training part and a held-out part.

    ``train_images`` keeps only the first N images of the training part (quick runs and tests);
    the held-out part does not change with it, so searches stay comparable.
    """
    data = load_image_data(source)
    split = split_holdout(len(data.train), holdout_images=holdout_images, seed=split_seed)
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
