"""Loading models to train from, and exporting what training produced as zoo-entry folders.

Sources accepted everywhere: a training run folder (``run.json`` + ``checkpoint.pt``, its
exported ``supernet/`` preferred once written), a folder with ``config.json`` (what
``oqatnets.save_pretrained`` writes), or any name ``oqatnets.create_model`` knows
(``local-dir:PATH``, ``hf-hub:ORG/NAME``, a registered zoo name). Exports go through
``oqatnets.save_pretrained`` so that ``create_model('local-dir:…', pretrained=True)`` loads them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn as nn

from oqatnets.data import ImageData
from oqatnets.errors import CheckpointError, FileMissingError, InvalidArgumentError
from oqatnets.factory import create_model
from oqatnets.hub import save_pretrained
from oqatnets.supernet import OQATSupernet

from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .metrics import write_json

__all__ = ['RUN_FILE', 'SUPERNET_DIR', 'read_run_file', 'load_model', 'load_supernet', 'data_cfg', 'save_model_folder',
           'folder_cfg', 'recorded_source', 'measured_metrics']

RUN_FILE = 'run.json'
SUPERNET_DIR = 'supernet'


def read_run_file(folder: 'str | Path') -> dict[str, Any]:
    """The ``run.json`` of a training run folder, or :class:`CheckpointError` naming it when missing or unreadable."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        raise CheckpointError(f'{path} is missing; restore it or start a new run in another --out')
    try:
        run = json.loads(path.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f'{path} is not valid JSON ({exc}); restore it or start a new run in another --out') from None
    if not isinstance(run, dict) or not isinstance(run.get('model_args', {}), dict):
        raise CheckpointError(f'{path} is not a run file of `oqat train supernet`; restore it or start a new run')
    return run


def _from_run_dir(path: Path) -> nn.Module:
    if (path / SUPERNET_DIR / 'config.json').is_file():
        return load_model(str(path / SUPERNET_DIR))
    run = read_run_file(path)
    if 'model_args' not in run:
        raise CheckpointError(f'{path / RUN_FILE} has no model_args; it was not written by `oqat train supernet`')
    supernet = OQATSupernet(**run['model_args'])
    state = load_checkpoint(path / CHECKPOINT_NAME)
    built = {'bits': supernet.bits, 'space': supernet.space.to_dict(), 'num_classes': supernet.num_classes,
             'holdout_images': run.get('holdout_images'), 'split_seed': run.get('split_seed')}
    wrong = [key for key, value in built.items()
             if value is not None and key in state.fingerprint and state.fingerprint[key] != value]
    if wrong:  # the checkpoint's record of its own training is the fact; run.json was edited or is another run's
        raise CheckpointError(f'{path / RUN_FILE} and its {CHECKPOINT_NAME} disagree on {", ".join(wrong)}; '
                              'restore run.json or start a new run')
    supernet.load_state_dict(state.model)
    supernet.pretrained_cfg = dict(run.get('pretrained_cfg') or {})
    return supernet


def load_model(source: str, *, num_classes: int | None = None) -> nn.Module:
    """A trained model (supernet or static net) from a run folder, an exported folder or a zoo name."""
    path = Path(source)
    if path.is_dir() and (path / RUN_FILE).is_file():
        model = _from_run_dir(path)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
        return model
    name = f'local-dir:{path}' if path.is_dir() and (path / 'config.json').is_file() else source
    if path.is_dir() and name == source:
        raise FileMissingError(f'{path} has neither config.json nor {RUN_FILE}; pass an exported model folder, '
                                f'a training run folder or a zoo model name')
    return create_model(name, pretrained=True, num_classes=num_classes)


def recorded_source(source: str) -> str:
    """How a model source is recorded as a parent (cfg ``supernet``): a folder (``local-dir:`` or a path) by its
    absolute path, so that the record names the same folder from anywhere; a zoo name or Hub id as given."""
    local = source.removeprefix('local-dir:')
    return source[:len(source) - len(local)] + str(Path(local).absolute()) if Path(local).exists() else source


def load_supernet(source: str) -> OQATSupernet:
    """Like :func:`load_model`, refusing anything that is not an elastic supernet."""
    model = load_model(source)
    if not isinstance(model, OQATSupernet):
        raise InvalidArgumentError(f'{source} is a static {type(model).__name__}, not a supernet; pass the output of '
                         f'`oqat train supernet` or `oqat inherit`')
    return model


def data_cfg(data: ImageData, *, resolution: int) -> dict[str, Any]:
    """The pretrained-cfg fields that say how to feed the model images of ``data``."""
    return {'input_size': [3, resolution, resolution], 'mean': list(data.mean), 'std': list(data.std),
            'crop_pct': data.crop_pct, 'num_classes': data.num_classes,
            'label_names': list(data.class_names) or None, 'dataset': data.name}


def folder_cfg(model: nn.Module, data: ImageData | None = None) -> dict[str, Any]:
    """The cfg :func:`save_model_folder` gives ``model`` with ``data``: the model's, its data config replaced by
    ``data``'s. A figure for that folder is measured through this cfg's transform."""
    cfg = dict(model.pretrained_cfg)
    if data is not None:
        cfg.update(data_cfg(data, resolution=model.input_size[-1]))
    return cfg


def measured_metrics(result: dict[str, Any], data: ImageData, *, source: str) -> dict[str, Any]:
    """What a card says of a figure measured on ``data.val`` (by :func:`~.datasets.evaluate_as_files`): top-1,
    top-5, how many images of which split, and how (``source``, free text for the card's body). With five
    classes or fewer every image is in its top 5, so the card gives no top-5 rather than a vacuous 100 %."""
    top5 = {'top5': result['top5']} if data.num_classes > 5 else {}
    return {'top1': result['top1'], **top5, 'images': result['images'], 'split': data.val_split, 'source': source}


def save_model_folder(model: nn.Module, folder: 'str | Path', *, data: ImageData | None = None,
                 metrics: dict[str, Any] | None = None, description: str | None = None,
                 extra_cfg: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a zoo-entry folder (config.json, safetensors, packed file, model card)."""
    resolution = model.input_size[-1]
    cfg: dict[str, Any] = dict(data_cfg(data, resolution=resolution)) if data is not None else {}
    if description:
        cfg['description'] = description
    cfg.update(extra_cfg or {})
    return save_pretrained(model, folder, metrics=metrics, dataset=data.name if data is not None else None,
                           pretrained_cfg=cfg)


def write_run_file(out_dir: 'str | Path', supernet: OQATSupernet, *, data: ImageData,
                   run_info: dict[str, Any]) -> Path:
    """``run.json``: what rebuilds the supernet from ``checkpoint.pt`` (model args, data cfg, split)."""
    model_args = supernet.model_args()
    cfg = data_cfg(data, resolution=max(supernet.space.resolutions))
    return write_json(Path(out_dir) / RUN_FILE, {'model_args': model_args, 'pretrained_cfg': cfg, **run_info})


def save_trained_supernet(supernet: OQATSupernet, out_dir: 'str | Path', *, data: ImageData, bits: int,
                          last_epoch: dict[str, Any] | None, eval_images: int = 0) -> Path:
    """The run's ``supernet/`` folder: the trained supernet as ``create_model('local-dir:…')`` loads it. Its card
    keeps training's last check of the largest and smallest subnet (on the first ``eval_images`` of ``data.val``),
    said to be that: a check during training, not a figure measured through a cfg's transform."""
    metrics: dict[str, Any] = {k: v for k, v in (last_epoch or {}).items() if k.endswith('top1')}
    if metrics:
        metrics.update(images=min(eval_images, len(data.val)), split=data.val_split,
                       source="training's check after its last epoch: each subnet BN-recalibrated, the images "
                              'resized in batches at its resolution (not through a cfg transform)')
    return save_model_folder(supernet.cpu(), Path(out_dir) / SUPERNET_DIR, data=data, metrics=metrics,
                        description=f'{bits}-bit OQAT supernet ({supernet.space.name} space) trained on {data.name}')
