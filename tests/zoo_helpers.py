"""Small deterministic models and zoo tables for the zoo tests (small space, 32 px, CPU)."""
from __future__ import annotations

import random

import torch

import oqatnets
from oqatnets.spec import get_space

RESOLUTION = 32

# These models are tiny: one thread is faster than two, and far faster when other jobs share the CPU.
torch.set_num_threads(1)


def small_spec(bits: int = 2, seed: int = 0) -> oqatnets.SubnetSpec:
    return get_space('small').sample(bits, random.Random(seed)).replace(resolution=RESOLUTION)


def small_net(bits: int = 2, *, num_classes: int = 10, seed: int = 0, in_chans: int = 3,
              space: str = 'small') -> oqatnets.OQATNet:
    """A random-init small-space OQATNet whose step sizes were initialised by one training forward."""
    torch.manual_seed(seed)
    model = oqatnets.OQATNet(small_spec(bits, seed), space=space, num_classes=num_classes, in_chans=in_chans)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, in_chans, RESOLUTION, RESOLUTION))
    return model.eval()


def inputs(batch: int = 2, in_chans: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, in_chans, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(seed))


def small_table(name: str, spec: 'oqatnets.SubnetSpec | None' = None, *, bits: int | None = None,
                num_classes: int = 10, **fields) -> dict:
    """A one-row zoo table in the 'small' space (a subnet when ``spec`` is given, else a supernet)."""
    row = {'name': name, 'space': 'small', 'num_classes': num_classes, 'mean': [0.5] * 3, 'std': [0.25] * 3,
           'crop_pct': 1.0, 'dataset': 'fashion-mnist', **fields}
    if spec is not None:
        row['spec'] = str(spec)
    else:
        row['bits'] = bits
    return {'schema': 'oqatnets-zoo', 'schema_version': 1, 'models': [row]}


def image_folder(root, *, classes=('ant', 'bee', 'cat'), per_class: int = 4, size: int = 36):
    """A tiny ImageFolder (train/ and val/) of random RGB PNGs; returns ``root``."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f'{i}.png')
    return root
