"""Saving, publishing and fetching weights: ``config.json``, safetensors, model cards, the Hub cache.

- :func:`save_pretrained` writes a Hub-ready folder (``config.json`` in timm's schema plus a
  ``quantization`` block, ``model.safetensors``, ``model.packed.safetensors``, ``README.md``),
  every file atomically.
- :func:`push_to_hub` uploads such a folder with :class:`huggingface_hub.HfApi`.
- :func:`publish_to_cache` writes a folder into a local Hugging Face cache in the real on-disk
  layout, so ``hf_hub_download(..., local_files_only=True)`` and ``HF_HUB_OFFLINE=1`` find it.
- :func:`download` / :func:`load_model_config_from_hf` fetch through ``hf_hub_download`` with
  ``library_name='oqatnets'``; weights are read with safetensors only, never unpickled.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from string import Template
from typing import Any, Iterator

import torch
import torch.nn as nn

from .pretrained import CONFIG_FILE, MODEL_CARD_FILE, PACKED_FILE, WEIGHTS_FILE, PretrainedCfg
from .quant import FLOAT_BITS, quant_range
from .spec import get_space

__all__ = ['save_pretrained', 'push_to_hub', 'publish_to_cache', 'download', 'load_model_config_from_hf',
           'load_model_config_from_path', 'load_state_dict', 'sha256_file', 'verify_sha256', 'atomic_path',
           'model_args_of', 'model_config', 'render_model_card', 'split_revision', 'ChecksumError', 'BITOPS_CONVENTION']

BITOPS_CONVENTION = ('bitops = sum over quantized convs of MACs*b_w*b_a (G); float layers (stem, SE, classifier) '
                     'are reported apart as float_macs (M); macs_8bit_equiv = float MACs + quantized MACs*b^2/64 '
                     "(the authors' profile_quant)")


class ChecksumError(RuntimeError):
    """A weight file's sha256 differs from the one the registry records."""


@contextlib.contextmanager
def atomic_path(path: 'str | os.PathLike') -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; published files follow the umask
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding='utf-8')


def sha256_file(path: 'str | os.PathLike') -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: 'str | os.PathLike', expected: str | None) -> None:
    """Raise :class:`ChecksumError` if ``expected`` is given and ``path`` does not hash to it."""
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f'sha256 of {path} is {actual}, the registry expects {expected}: the file is corrupt or '
                            'not the published one; delete it from the Hub cache and download it again')


# ---------------------------------------------------------------------------------------------- config


def model_args_of(model: nn.Module) -> dict[str, Any]:
    """The keyword arguments that rebuild ``model`` (an OQATNet or OQATSupernet)."""
    space = model.space
    try:
        space_arg: Any = space.name if get_space(space.name) == space else space.to_dict()
    except ValueError:
        space_arg = space.to_dict()
    args: dict[str, Any] = {'space': space_arg, 'num_classes': model.num_classes, 'in_chans': model.in_chans}
    if hasattr(model, 'spec') and not hasattr(model, 'active_spec'):
        args['spec'] = str(model.spec)
    else:
        args['bits'] = model.bits
    return args


def _quantization_block(model: nn.Module) -> dict[str, Any]:
    bits = model.bits
    block: dict[str, Any] = {'method': 'lsq', 'bits': bits, 'weight_bits': bits, 'activation_bits': bits,
                             'granularity': 'per_tensor', 'step_parameters': ['weight_step', 'act_step'],
                             'shared_step_size': True, 'bitops_convention': BITOPS_CONVENTION}
    if bits < FLOAT_BITS:
        block['weight'] = dict(zip(('qmin', 'qmax'), quant_range(bits, signed=True)), signed=True)
        block['activation'] = dict(zip(('qmin', 'qmax'), quant_range(bits, signed=False)), signed=False)
    block['float_layers'] = ['conv_stem', 'bn', 'se', 'classifier']
    block['rounding'] = 'half_to_even'
    block['dequantize'] = 'code * abs(step)'
    return block


def default_architecture(model: nn.Module) -> str:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    if cfg.get('architecture'):
        return cfg['architecture']
    return f'oqat_supernet_w{model.bits}a{model.bits}' if hasattr(model, 'active_spec') else 'oqatnet'


def model_config(model: nn.Module, pretrained_cfg: 'PretrainedCfg | dict | None' = None) -> dict[str, Any]:
    """``config.json`` content: timm's schema, the spec and space in ``model_args``, a quantization block."""
    if isinstance(pretrained_cfg, PretrainedCfg):
        pretrained_cfg = pretrained_cfg.to_dict()
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    cfg.update(pretrained_cfg or {})
    args = model_args_of(model)
    resolution = model.spec.resolution if 'spec' in args else max(model.space.resolutions)
    cfg.setdefault('input_size', [model.in_chans, resolution, resolution])
    cfg['num_classes'] = model.num_classes
    cfg.setdefault('architecture', default_architecture(model))
    cfg['bits'], cfg['space'] = model.bits, args['space']
    if 'spec' in args:
        cfg['spec'] = args['spec']
    clean = PretrainedCfg.from_dict(cfg).to_dict(remove_source=True)
    return {
        'architecture': clean['architecture'],
        'num_classes': model.num_classes,
        'num_features': model.num_features,
        'global_pool': 'avg',
        'label_names': clean.get('label_names'),
        'model_args': args,
        'pretrained_cfg': clean,
        'quantization': _quantization_block(model),
    }


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str) + '\n'


# ---------------------------------------------------------------------------------------------- model card


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def _front_matter(cfg: dict[str, Any], config: dict[str, Any], has_metrics: bool) -> str:
    lines = [f'license: {cfg.get("license") or "apache-2.0"}', 'library_name: oqatnets',
             'pipeline_tag: image-classification', 'tags:']
    tags = ['image-classification', 'oqatnets', 'quantization', f'{config["quantization"]["bits"]}-bit', 'lsq',
            'mobilenetv3', 'once-for-all']
    lines += [f'- {t}' for t in tags]
    if cfg.get('dataset'):
        lines += ['datasets:', f'- {cfg["dataset"]}']
    if has_metrics:
        lines += ['metrics:', '- accuracy']
    if cfg.get('supernet'):
        base = cfg['supernet']
        lines.append(f'base_model: {_yaml_scalar(base if "/" in base else _hub_id_of(base))}')
    return '\n'.join(lines)


def _hub_id_of(arch: str) -> str:
    from .registry import DEFAULT_TAG, hub_org
    return f'{hub_org()}/{arch}.{DEFAULT_TAG}' if '.' not in arch else f'{hub_org()}/{arch}'


def _rows(items: dict[str, Any]) -> str:
    return '\n'.join(f'| {k} | {v} |' for k, v in items.items() if v is not None and v != '')


def render_model_card(model: nn.Module, config: dict[str, Any], *, metrics: dict[str, Any] | None = None,
               model_card: dict[str, Any] | None = None) -> str:
    """A model card ``README.md`` with Hub front matter, the profile and the accuracy."""
    from .profile import profile
    from .registry import zoo_data_file
    cfg = config['pretrained_cfg']
    card = dict(model_card or {})
    name = card.pop('name', None) or f'{cfg["architecture"]}.{cfg.get("tag") or "custom"}'
    details = {'Architecture': cfg['architecture'], 'Bits (W/A)': f'{model.bits}/{model.bits}',
               'Spec': f'`{cfg["spec"]}`' if cfg.get('spec') else 'elastic supernet',
               'Search space': cfg['space'] if isinstance(cfg['space'], str) else 'custom (see config.json)',
               'Input size': 'x'.join(map(str, cfg['input_size'])), 'Eval crop': cfg.get('crop_pct'),
               'Interpolation': cfg.get('interpolation'), 'Classes': model.num_classes,
               'Dataset': cfg.get('dataset'), 'Parent supernet': cfg.get('supernet'), 'License': cfg.get('license'),
               'Paper': 'arXiv:2010.04354'}
    details.update(card.pop('details', {}))
    if hasattr(model, 'active_spec') and not cfg.get('spec'):
        prof_rows = {'Largest subnet MACs (M)': f'{profile(model.space.largest(model.bits), space=model.space, num_classes=model.num_classes).macs:.3f}'}
    else:
        p = profile(model)
        prof_rows = {'MACs (M)': f'{p.macs:.3f}', 'Params (M)': f'{p.params:.3f}', 'BitOPs (G)': f'{p.bitops:.3f}',
                     'Float MACs (M)': f'{p.float_macs:.3f}', '8-bit-equivalent MACs (M)': f'{p.macs_8bit_equiv:.3f}',
                     'Size (Mbit)': f'{p.size_mbit:.3f}', 'Resolution': p.resolution}
    if metrics:
        source = metrics.get('source') or cfg.get('metrics_source') or 'measured'
        shown = {k: (f'{v:.3f}' if isinstance(v, float) else v) for k, v in metrics.items() if k != 'source'}
        metrics_text = '| metric | value |\n|---|---|\n' + _rows(shown) + f'\n\nSource: {source}.'
    elif cfg.get('top1') is not None:
        metrics_text = (f'Reported top-1: {cfg["top1"]:.3f} % ({cfg.get("metrics_source") or "source not given"}). '
                        'Not measured on these weights.')
    else:
        metrics_text = 'Not evaluated.'
    template = Template(zoo_data_file('model_card.md').read_text(encoding='utf-8'))
    return template.substitute(
        front_matter=_front_matter(cfg, config, bool(metrics)), name=name,
        description=card.pop('description', None) or cfg.get('description') or '',
        bits=model.bits, details=_rows(details), profile=_rows(prof_rows), metrics=metrics_text,
        load_name=card.pop('load_name', None) or f'hf-hub:{cfg.get("hf_hub_id") or _hub_id_of(name)}')


# ---------------------------------------------------------------------------------------------- saving


def _state_for_safetensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_pretrained(model: nn.Module, save_directory: 'str | os.PathLike', *, model_card: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None, dataset: str | None = None,
                    pretrained_cfg: 'PretrainedCfg | dict | None' = None, packed: bool = True) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``model.packed.safetensors`` (OQATNet only) and a
    model card ``README.md`` into ``save_directory``, each atomically; returns the folder.

    ``metrics`` (e.g. ``{'top1': 61.2, 'top5': 83.0, 'source': 'oqat zoo build on ImageNet val'}``)
    goes into the pretrained cfg and the card; ``dataset`` names the data the weights were trained
    or evaluated on; ``pretrained_cfg`` overrides fields of the model's own cfg.
    """
    from safetensors.torch import save_file
    from .packing import save_packed
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    overrides = pretrained_cfg.to_dict() if isinstance(pretrained_cfg, PretrainedCfg) else dict(pretrained_cfg or {})
    if dataset:
        overrides['dataset'] = dataset
    if metrics:
        overrides.update({k: metrics[k] for k in ('top1', 'top5') if k in metrics})
        overrides['metrics_source'] = metrics.get('source') or 'measured with oqatnets.evaluation.evaluate'
    config = model_config(model, overrides)
    hashes: dict[str, str | None] = {}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(_state_for_safetensors(model), str(tmp),
                  metadata={'format': 'pt', 'oqatnets.model_args': json.dumps(config['model_args'])})
    hashes[WEIGHTS_FILE] = sha256_file(folder / WEIGHTS_FILE)
    is_static = 'spec' in config['model_args']
    if packed and is_static and model.bits < FLOAT_BITS:
        save_packed(model, folder / PACKED_FILE, model_args=config['model_args'], pretrained_cfg=config['pretrained_cfg'])
        hashes[PACKED_FILE] = sha256_file(folder / PACKED_FILE)
    elif (folder / PACKED_FILE).exists():
        (folder / PACKED_FILE).unlink()  # a stale packed file would no longer match the weights
    config['pretrained_cfg']['sha256'] = hashes
    _write_text(folder / CONFIG_FILE, _json(config))
    _write_text(folder / MODEL_CARD_FILE, render_model_card(model, config, metrics=metrics, model_card=model_card))
    return folder


# ---------------------------------------------------------------------------------------------- Hub


def _api(token: str | None):
    from huggingface_hub import HfApi
    from . import __version__
    return HfApi(token=token, library_name='oqatnets', library_version=__version__)


def push_to_hub(model_or_dir: 'nn.Module | str | os.PathLike', repo_id: str, *, token: str | None = None,
                revision: str | None = None, private: bool = False, commit_message: str = 'Add model',
                **save_kwargs: Any) -> str:
    """Upload a model (saved with :func:`save_pretrained` first) or a saved folder to ``repo_id``.

    Creates the repo if needed; the model card is uploaded only when the repo has none yet (as
    timm does, so hand-edited cards survive). Returns the commit URL.
    """
    api = _api(token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type='model')
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model_or_dir, nn.Module):
            folder = save_pretrained(model_or_dir, Path(tmp) / 'model', **save_kwargs)
        else:
            folder = _check_folder(Path(model_or_dir))
        has_card = api.file_exists(repo_id, MODEL_CARD_FILE, revision=revision)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 commit_message=commit_message, ignore_patterns=[MODEL_CARD_FILE] if has_card else None)
    return str(getattr(info, 'commit_url', info))


def _check_folder(folder: Path) -> Path:
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f'{folder} has no {CONFIG_FILE}; write the folder with oqatnets.save_pretrained first')
    if not any((folder / f).is_file() for f in (WEIGHTS_FILE, PACKED_FILE)):
        raise FileNotFoundError(f'{folder} has neither {WEIGHTS_FILE} nor {PACKED_FILE}')
    return folder


def _cache_root(cache_dir: 'str | os.PathLike | None') -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants
    return Path(os.environ.get('HF_HUB_CACHE') or constants.HF_HUB_CACHE)


def publish_to_cache(folder: 'str | os.PathLike', repo_id: str, *, cache_dir: 'str | os.PathLike | None' = None,
                     revision: str = 'main') -> Path:
    """Write a saved folder into a local Hugging Face cache as ``repo_id`` at ``revision``.

    Layout (huggingface_hub's): ``models--{org}--{name}/blobs/<sha256>``,
    ``snapshots/<commit>/<file>`` as relative links to the blobs, ``refs/<revision>`` holding the
    commit id (a hash of the files, so identical content gives the same commit). Returns the
    snapshot folder. Offline ``hf_hub_download`` then finds the files.
    """
    folder = _check_folder(Path(folder))
    if repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise ValueError(f'repo id {repo_id!r} must look like "org/name"')
    repo = _cache_root(cache_dir) / f'models--{repo_id.replace("/", "--")}'
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith('.'))
    hashes = {p.name: sha256_file(p) for p in files}
    commit = hashlib.sha1(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
    snapshot = repo / 'snapshots' / commit
    for sub in ('blobs', 'refs'):
        (repo / sub).mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in files:
        blob = repo / 'blobs' / hashes[path.name]
        if not blob.exists():
            with atomic_path(blob) as tmp:
                shutil.copyfile(path, tmp)
        link = snapshot / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlinks (some Windows setups): huggingface_hub copies too
            shutil.copyfile(blob, link)
    _write_text(repo / 'refs' / revision, commit)
    return snapshot


def split_revision(repo_id: str) -> tuple[str, str | None]:
    """``'org/name@rev'`` → ``('org/name', 'rev')``."""
    repo, _, revision = repo_id.partition('@')
    return repo, revision or None


def download(repo_id: str, filename: str, *, revision: str | None = None,
             cache_dir: 'str | os.PathLike | None' = None) -> Path:
    """``hf_hub_download`` tagged with ``library_name='oqatnets'`` (honours ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``)."""
    from huggingface_hub import hf_hub_download
    from . import __version__
    if cache_dir is None:
        cache_dir = os.environ.get('HF_HUB_CACHE') or None  # read now: huggingface_hub reads it at import
    return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                library_name='oqatnets', library_version=__version__))


def _parse_config(config: dict[str, Any], where: str) -> tuple[PretrainedCfg, dict[str, Any]]:
    if 'model_args' not in config or 'architecture' not in config:
        raise ValueError(f'{where} is not an oqatnets config.json (no architecture/model_args); '
                         'write it with oqatnets.save_pretrained')
    cfg = PretrainedCfg.from_dict({**config.get('pretrained_cfg', {}), 'architecture': config['architecture']})
    args = dict(config['model_args'])
    args.setdefault('num_classes', config.get('num_classes', cfg.num_classes))
    return cfg, args


def load_model_config_from_hf(model_id: str, *, cache_dir: 'str | os.PathLike | None' = None
                              ) -> tuple[PretrainedCfg, dict[str, Any]]:
    """(pretrained cfg, model_args) from ``config.json`` of ``org/name[@revision]`` on the Hub."""
    repo_id, revision = split_revision(model_id)
    path = download(repo_id, CONFIG_FILE, revision=revision, cache_dir=cache_dir)
    cfg, args = _parse_config(json.loads(path.read_text()), f'{model_id}/{CONFIG_FILE}')
    return cfg.replace(hf_hub_id=model_id, source='hf-hub'), args


def load_model_config_from_path(folder: 'str | os.PathLike') -> tuple[PretrainedCfg, dict[str, Any]]:
    """(pretrained cfg, model_args) from ``folder/config.json``; the cfg points at the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'local-dir: {folder} is not a folder')
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f'{folder} has no {CONFIG_FILE}; write the folder with oqatnets.save_pretrained')
    cfg, args = _parse_config(json.loads(path.read_text()), str(path))
    weights = next((folder / f for f in cfg.weight_files if (folder / f).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f'{folder} holds no weights ({" or ".join(cfg.weight_files)})')
    return cfg.replace(file=str(weights), source='local-dir', hf_hub_id=None), args


def load_state_dict(path: 'str | os.PathLike') -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, plain or packed (dequantized); other formats are refused."""
    from safetensors.torch import load_file
    from .packing import is_packed_file, load_packed_state_dict
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no weights file at {path}')
    if path.suffix != '.safetensors':
        raise ValueError(f'{path.name}: oqatnets loads .safetensors files only (never pickles); '
                         'convert the authors\' checkpoints with `oqat convert-official`')
    if is_packed_file(path):
        return load_packed_state_dict(path)[0]
    return load_file(str(path))
