"""The in-memory image sets serve what a model's cfg transform makes of the same images as files.

A card's top-1 is measured on these tensors; `oqat predict`, `oqat eval` on a folder and timm's
create_transform feed a user's image files through the cfg's transform. They must agree (they did
not: 28-px images were padded to 32, which the cfg did not say, and the entries lost 5–6 points
through their own cfg transform).
"""
from __future__ import annotations

import torch
from PIL import Image

from oqatnets.data import TensorImageDataset, eval_transform
from oqatnets.evaluation import resize_batch

MEAN, STD = 0.2860, 0.3530


def _grey_images(n: int = 12, size: int = 28) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, size, size), generator=g, dtype=torch.uint8)


def _through_cfg_transform(images: torch.Tensor, resolution: int) -> torch.Tensor:
    transform = eval_transform(resolution, crop_pct=1.0, mean=(MEAN,) * 3, std=(STD,) * 3)
    return torch.stack([transform(Image.fromarray(image.numpy())) for image in images])


def test_images_resized_to_a_size_are_what_the_cfg_transform_makes_of_the_files():
    images = _grey_images()
    for size in (24, 32):
        data = TensorImageDataset(images, torch.zeros(len(images)), mean=MEAN, std=STD, size=size)
        served = torch.stack([data[i][0] for i in range(len(images))])
        assert data.size == size and torch.equal(served, _through_cfg_transform(images, size))


def test_images_as_stored_resized_in_the_batch_are_within_one_grey_level_of_the_cfg_transform():
    """Training and search resize whole batches (one resampling, antialiased as PIL is); the only difference to
    a file through the cfg transform is PIL's rounding of the resized image to whole grey levels."""
    images = _grey_images()
    data = TensorImageDataset(images, torch.zeros(len(images)), mean=MEAN, std=STD)
    batch = torch.stack([data[i][0] for i in range(len(images))])
    assert data.size == 28 and torch.equal(batch, _through_cfg_transform(images, 28))
    one_grey_level = 1 / 255 / STD
    for resolution in (20, 24, 32):
        difference = (resize_batch(batch, resolution) - _through_cfg_transform(images, resolution)).abs().max()
        assert difference <= one_grey_level * 1.001, (resolution, difference)
    padded_then_resized = torch.nn.functional.pad(batch, (2, 2, 2, 2), value=-MEAN / STD)  # what the sets served before
    assert (resize_batch(padded_then_resized, 32) - _through_cfg_transform(images, 32)).abs().max() > 50 * one_grey_level
