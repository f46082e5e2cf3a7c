"""Build the named zoo from supernet weights (``oqat zoo build``).

For every registered subnet entry of the supernet's bit-width and search space: extract the
subnet (step sizes shared), recalibrate BN on a fixed subset of training images with the evaluation
transform (the one calibration pipeline of :mod:`oqatnets.training`, in the space's recipe's mode:
``batch`` for ImageNet, as the authors did with 2000 images in batches of 100), evaluate top-1/top-5
on the validation split, and write a Hub-ready folder (``save_pretrained``) whose config and model
card carry the measured accuracy. A ``zoo.json`` beside the folders is a zoo table (with the files'
sha256) that ``oqatnets.register_zoo_table`` accepts once the folders are published.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from oqatnets import registry
from oqatnets._io import write_json
from oqatnets.errors import InvalidArgumentError
from oqatnets.evaluation import CalibrationMode, recalibrate_bn
from oqatnets.factory import create_model
from oqatnets.hub import save_pretrained
from oqatnets.supernet import OQATSupernet
from oqatnets.training.artifacts import measured_metrics, recorded_source
from oqatnets.training.datasets import calibration_batches, cfg_view, evaluate_as_files
from oqatnets.training.recipes import recipe_for_space
from oqatnets.training.sources import load_image_data
from oqatnets.weights import vouch_for_weights

__all__ = ['BuildResult', 'zoo_entries_for', 'build_zoo']


_DEFAULT_CALIB_IMAGES = 2000  # the authors' number


@dataclass(frozen=True)
class BuildResult:
    name: str
    folder: Path
    top1: float
    top5: float
    images: int
    sha256: dict[str, str | None]
    supernet: str  # the supernet the entry was extracted from


def zoo_entries_for(supernet: OQATSupernet) -> list[registry.ZooEntry]:
    """Registered subnet entries with the supernet's bits, space and number of classes."""
    entries = []
    for name in registry.list_models(include_tags=True):
        entry = registry.get_entry(name)
        if (entry.spec is not None and entry.bits == supernet.bits and entry.space == supernet.space
                and entry.num_classes == supernet.num_classes):
            entries.append(entry)
    return entries


def build_zoo(supernet_name: str, *, data: 'str | os.PathLike', out: 'str | os.PathLike', calib_images: int | None = None,
              calib_batch: int = 100, batch_size: int = 100, workers: int = 0, progress: bool = True,
              cache_dir: 'str | os.PathLike | None' = None, mode: CalibrationMode | None = None,
              log: Callable[[str], None] = print) -> list[BuildResult]:
    """Extract, recalibrate, evaluate and save every zoo entry of ``supernet_name``'s bit-width.

    ``mode`` is the BN calibration mode (:func:`~oqatnets.evaluation.recalibrate_bn`); default: the
    recipe's for the supernet's space. ``calib_images``: how many training images recalibrate BN (default
    2000, or all there are if fewer); more than there are is refused. Each entry records the supernet
    it was built from (``supernet_name``) as its parent.
    """
    supernet = create_model(supernet_name, pretrained=True, cache_dir=cache_dir)
    if not isinstance(supernet, OQATSupernet):
        raise InvalidArgumentError(f'{supernet_name} is not a supernet (its config has a spec); '
                                   'pass a supernet name or folder')
    entries = zoo_entries_for(supernet)
    if not entries:
        raise InvalidArgumentError(f'no registered zoo entries for a {supernet.bits}-bit supernet of the '
                         f'{supernet.space.name!r} space with {supernet.num_classes} classes; register a zoo table first')
    mode = mode or recipe_for_space(supernet.space.name).bn_calibration
    supernet.eval()
    out = Path(out)
    results: list[BuildResult] = []
    images = load_image_data(data)
    if images.num_classes != supernet.num_classes:
        raise InvalidArgumentError(f'{data} has {images.num_classes} classes, the supernet {supernet.num_classes}')
    if calib_images is not None and calib_images > len(images.train):
        raise InvalidArgumentError(f'calib_images={calib_images}: {data} has {len(images.train)} training images; '
                                   'pass at most that')
    used = min(calib_images or _DEFAULT_CALIB_IMAGES, len(images.train))
    parent = recorded_source(supernet_name)  # the one these weights are from
    iterator: Any = entries
    if progress:
        iterator = tqdm(entries, desc='zoo build', unit='model')
    for entry in iterator:
        # the entry's cfg without the figures and hashes of whatever weights it named before: this build makes its weights
        cfg = registry.get_pretrained_cfg(entry.name).replace(supernet=parent, sha256={}, top1=None, top5=None,
                                                              metrics_source=None)
        subnet = supernet.get_subnet(entry.spec)
        subnet.pretrained_cfg = cfg.to_dict()
        # every image, for calibration and test alike, goes through the transform the entry's cfg describes
        calib = calibration_batches(cfg_view(images.train, subnet.pretrained_cfg), num_images=used,
                                    batch_size=calib_batch, in_memory=False, num_workers=workers)
        recalibrate_bn(subnet, calib, mode=mode)
        metrics = evaluate_as_files(subnet, images.val, batch_size=batch_size, num_workers=workers, progress=progress,
                                    desc=entry.arch)
        source = (f'measured by oqat zoo build on {images.name} after BN recalibration ({mode} mode) on {used} '
                  'training images')
        vouch_for_weights(subnet)  # the entry's name, hub id and data config are these weights' own
        folder = save_pretrained(subnet, out / entry.name, dataset=images.name,
                                 metrics=measured_metrics(metrics, images, source=source))
        sha256 = json.loads((folder / 'config.json').read_text())['pretrained_cfg']['sha256']
        results.append(BuildResult(entry.name, folder, metrics['top1'], metrics['top5'], metrics['images'], sha256,
                                   parent))
        log(f'{entry.name}: top-1 {metrics["top1"]:.2f} %, top-5 {metrics["top5"]:.2f} % -> {folder}')
    _write_table(out / 'zoo.json', results)
    return results


def _write_table(path: Path, results: list[BuildResult]) -> None:
    rows = []
    for result in results:
        row = registry.get_entry(result.name).row
        rows.append({**{k: v for k, v in row.items() if not k.startswith('reported_')}, 'name': result.name,
                     'supernet': result.supernet,
                     'top1': round(result.top1, 3), 'top5': round(result.top5, 3),
                     'metrics_source': 'measured by oqat zoo build', 'sha256': result.sha256})
    table = {'schema': registry.SCHEMA, 'schema_version': registry.SCHEMA_VERSION, 'models': rows}
    write_json(path, table)
