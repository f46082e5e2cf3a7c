"""Hub I/O: saving a Hub-ready folder, pushing it, a local Hub cache, and fetching from the Hub.

- :func:`save_pretrained` writes ``config.json`` (:mod:`oqatnets.card`), ``model.safetensors``
  and ``model.packed.safetensors`` (:mod:`oqatnets.weights`) and a model card ``README.md``;
  the folder is written aside and swapped in whole, files of the old folder that it does not
  write are carried over.
- :func:`push_to_hub` uploads such a folder with :class:`huggingface_hub.HfApi`.
- :func:`publish_to_cache` writes a folder into a local Hugging Face cache in the real on-disk
  layout, so ``hf_hub_download(..., local_files_only=True)`` and ``HF_HUB_OFFLINE=1`` find it.
- :func:`download` / :func:`load_model_config_from_hf` fetch through ``hf_hub_download`` with
  ``library_name='oqatnets'``; weights are read with safetensors only, never unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch.nn as nn
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id

from ._io import atomic_dir, atomic_path, check_output, sha256_file, verify_sha256, write_text
from .card import UNNAMED_TAG, model_config, read_model_config, render_model_card
from .errors import ChecksumError, FileMissingError, InvalidArgumentError, InvalidFileError, PretrainedWeightsError
from .net import require_oqat_model
from .pretrained import (
    ACCURACY_FIELDS,
    CONFIG_FILE,
    IDENTITY_FIELDS,
    MODEL_CARD_FILE,
    PACKED_FILE,
    WEIGHTS_FILE,
    PretrainedCfg,
    is_local_path,
    without_local_parent,
)
from .quant import FLOAT_BITS
from .supernet import OQATSupernet
from .version import __version__
from .weights import cfg_of_weights, check_record, drop_local_parent, read_weights, save_packed, save_weights

__all__ = ['save_pretrained', 'push_to_hub', 'publish_to_cache', 'download', 'load_model_config_from_hf',
           'load_model_config_from_path', 'split_revision', 'sha256_file', 'verify_sha256', 'ChecksumError',
           'metrics_source']

_WRITTEN = (CONFIG_FILE, WEIGHTS_FILE, PACKED_FILE, MODEL_CARD_FILE)


def _carry_over(old: Path, new: Path) -> None:
    """Copy what ``old`` holds besides the files save_pretrained writes into ``new``."""
    if not old.is_dir():
        return
    for entry in old.iterdir():
        if entry.name in _WRITTEN:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, new / entry.name, follow_symlinks=False)


def save_pretrained(model: nn.Module, save_directory: 'str | os.PathLike', *, model_card: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None, dataset: str | None = None,
                    pretrained_cfg: 'PretrainedCfg | dict | None' = None, packed: bool = True) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``model.packed.safetensors`` (quantized OQATNet of 2
    to 8 bits only) and a model card ``README.md`` into ``save_directory``, all or nothing; returns the folder.

    ``metrics`` (e.g. ``{'top1': 61.2, 'top5': 83.0, 'source': 'oqat zoo build on ImageNet val'}``, the
    ``source`` saying how they were measured) goes into the pretrained cfg and the card; ``dataset`` names
    the data the weights were trained or evaluated on; ``pretrained_cfg`` overrides data fields of the
    model's own cfg. The model's facts (architecture, bits, spec, space, classes, input size) always come
    from the model, and its name, hub id and hashes from its own cfg while that vouches for the weights
    (:func:`oqatnets.weights.cfg_of_weights`): ``pretrained_cfg`` naming those or the accuracy is refused.
    """
    require_oqat_model(model, action='save_pretrained')
    folder = check_output(save_directory, folder=True)
    overrides = pretrained_cfg.to_dict() if isinstance(pretrained_cfg, PretrainedCfg) else dict(pretrained_cfg or {})
    given = [k for k in (*IDENTITY_FIELDS, *ACCURACY_FIELDS) if overrides.get(k)]
    if given:
        raise InvalidArgumentError(
            f'save_pretrained(pretrained_cfg=...) cannot set {", ".join(given)}: the weights\' name and hashes come '
            "from the cfg they were loaded with, and a figure goes in through metrics={..., 'source': ...}")
    if metrics and not metrics.get('source') and any(metrics.get(k) is not None for k in ('top1', 'top5')):
        raise InvalidArgumentError("metrics need a 'source' saying how they were measured, e.g. "
                                   "{'top1': 71.2, 'source': 'oqat eval on ImageNet val'}")
    if metrics and metrics.get('dataset') and dataset and metrics['dataset'] != dataset:
        raise InvalidArgumentError(f'metrics were measured on {metrics["dataset"]!r} but dataset={dataset!r}; '
                                   'give one data set')
    dataset = dataset or (metrics or {}).get('dataset')
    if dataset:
        overrides['dataset'] = dataset
    if metrics:  # every figure is replaced: one the new metrics lack is not carried over from the old cfg
        overrides.update(top1=metrics.get('top1'), top5=metrics.get('top5'), metrics_source=metrics_source(metrics))
    with atomic_dir(folder) as tmp:
        _carry_over(folder, tmp)
        hashes: dict[str, str | None] = {WEIGHTS_FILE: sha256_file(save_weights(model, tmp / WEIGHTS_FILE))}
        config = model_config(model, overrides, own=cfg_of_weights(model, hashes[WEIGHTS_FILE]))
        card = dict(model_card or {})
        if not config['pretrained_cfg'].get('tag'):  # no zoo name: the folder just written is how to load it
            card.setdefault('load_name', f'local-dir:{folder.absolute()}')
        if packed and not isinstance(model, OQATSupernet) and 2 <= model.bits < FLOAT_BITS:  # the packed format's range
            hashes[PACKED_FILE] = sha256_file(save_packed(model, tmp / PACKED_FILE,
                                                          pretrained_cfg=config['pretrained_cfg']))
        config['pretrained_cfg']['sha256'] = hashes
        write_text(tmp / CONFIG_FILE, json.dumps(config, indent=2, default=str) + '\n')
        write_text(tmp / MODEL_CARD_FILE, str(render_model_card(model, config, metrics=metrics, model_card=card)))
    return folder


def metrics_source(metrics: dict[str, Any]) -> str:
    """The cfg's ``metrics_source``: how the figures were measured, with the split and image count when known,
    so that a cfg read without its card still says what its top-1 is a top-1 of."""
    source = metrics.get('source') or 'not given'
    where = [f'{metrics["split"]} split' if metrics.get('split') else '',
             f'{metrics["images"]} images' if metrics.get('images') else '']
    return f'{source} ({", ".join(w for w in where if w)})' if any(where) else source


def _check_repo_id(repo_id: str) -> None:
    """Refuse a repo id the Hub would refuse (and that a cache folder could not tell apart), before anything is written."""
    try:
        if repo_id.count('/') != 1:
            raise HFValidationError('it needs exactly one "/"')
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InvalidArgumentError(f'repo_id={repo_id!r} is not a Hub repo id ({" ".join(str(exc).split())[:160]}); '
                                   'write it as "org/name" with letters, digits, - _ .') from None


def _api(token: str | None) -> HfApi:
    return HfApi(token=token, library_name='oqatnets', library_version=__version__)


def push_to_hub(model_or_dir: 'nn.Module | str | os.PathLike', repo_id: str, *, token: str | None = None,
                revision: str | None = None, private: bool = False, commit_message: str = 'Add model',
                **save_kwargs: Any) -> str:
    """Upload a model (saved with :func:`save_pretrained` first) or a saved folder to ``repo_id``.

    Creates the repo if needed; the model card is uploaded only when the repo has none yet (as
    timm does, so hand-edited cards survive). A model's card is named after ``repo_id`` and loads
    from it (as timm's does) unless ``model_card`` says otherwise. Returns the commit URL.
    """
    _check_repo_id(repo_id)
    api = _api(token)
    load_name = f'hf-hub:{repo_id}' + (f'@{revision}' if revision else '')
    with tempfile.TemporaryDirectory() as tmp:
        saved = isinstance(model_or_dir, nn.Module)
        if saved:
            card = {'name': repo_id.rpartition('/')[2], 'load_name': load_name,
                    **(save_kwargs.pop('model_card', None) or {})}
            folder = save_pretrained(model_or_dir, Path(tmp) / 'model', model_card=card, **save_kwargs)
        else:
            folder = _check_folder(Path(model_or_dir))  # before the repo is created: a refused push writes nothing
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type='model')
        has_card = api.file_exists(repo_id, MODEL_CARD_FILE, revision=revision)
        folder = _as_published(folder, load_name, Path(tmp) / 'published', card=not (has_card or saved))
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                 commit_message=commit_message, ignore_patterns=[MODEL_CARD_FILE] if has_card else None)
    return str(getattr(info, 'commit_url', info))


_REVISION = re.compile(r'[A-Za-z0-9][A-Za-z0-9._/-]*', re.ASCII)  # a git ref name, conservatively
_CARD_LOAD = re.compile(r"create_model\('(?:local-dir|hf-hub):[^']*'")
# the name render_model_card gives a model without a zoo name (``{architecture}.custom``), in the title and model-index
_CARD_UNNAMED = re.compile(rf'^(\s*(?:# Model card for |- name: |model_name: ))\S+\.{UNNAMED_TAG}$', re.MULTILINE)


LOCAL_PARENT = 'a local folder, not published'  # how a published card names a parent recorded by its local path


def _as_published(folder: Path, load_name: str, scratch: Path, *, card: bool = True) -> Path:
    """A copy of ``folder`` in ``scratch`` as it is published to ``load_name``.

    A parent supernet recorded by its path on this machine (meaningless elsewhere, and private) leaves
    config.json and an older packed file's embedded cfg, and the card calls it a local folder. With ``card``,
    the card's usage line loads from ``load_name`` instead of the folder itself or the repo it was saved for,
    and a card saved without a name is named after the repo, as a model pushed directly is. Only the files that
    change are written again.
    """
    shutil.copytree(folder, scratch)
    config = json.loads((scratch / CONFIG_FILE).read_text(encoding='utf-8'))
    cfg = config.get('pretrained_cfg') or {}
    parent = cfg.get('supernet')
    published = {**config, 'pretrained_cfg': without_local_parent(cfg)} if cfg else config
    if (scratch / PACKED_FILE).is_file() and drop_local_parent(scratch / PACKED_FILE):  # an older packed file
        published['pretrained_cfg']['sha256'] = {**cfg['sha256'], PACKED_FILE: sha256_file(scratch / PACKED_FILE)}
    if published != config:
        write_text(scratch / CONFIG_FILE, json.dumps(published, indent=2, default=str) + '\n')
    card_path = scratch / MODEL_CARD_FILE
    text = card_path.read_text(encoding='utf-8') if card_path.is_file() else ''
    rewritten = text
    if card:
        rewritten = _CARD_LOAD.sub(f"create_model('{load_name}'", rewritten)
        repo_name = load_name.removeprefix('hf-hub:').partition('@')[0].rpartition('/')[2]
        rewritten = _CARD_UNNAMED.sub(lambda m: m[1] + repo_name, rewritten)
    if is_local_path(parent):
        rewritten = rewritten.replace(parent, LOCAL_PARENT)
    if rewritten != text:
        write_text(card_path, rewritten)
    return scratch


def _check_folder(folder: Path) -> Path:
    """``folder`` if it is a saved model folder that loading would accept: its config.json hashes each weights
    file, and each file records the model the config describes (what :func:`oqatnets.create_model` checks)."""
    if not (folder / CONFIG_FILE).is_file():
        raise FileMissingError(f'{folder} has no {CONFIG_FILE}; write the folder with oqatnets.save_pretrained first')
    if not any((folder / f).is_file() for f in (WEIGHTS_FILE, PACKED_FILE)):
        raise FileMissingError(f'{folder} has neither {WEIGHTS_FILE} nor {PACKED_FILE}')
    cfg, args = read_model_config(folder / CONFIG_FILE)
    again = 'save the folder again with oqatnets.save_pretrained before publishing it'
    for name in (WEIGHTS_FILE, PACKED_FILE):
        path = folder / name
        if not path.is_file():
            continue
        if not cfg.sha256.get(name):
            raise InvalidFileError(f'{folder / CONFIG_FILE} records no sha256 of {name}; {again}')
        verify_sha256(path, cfg.sha256[name], recorded_by=str(folder / CONFIG_FILE), remedy=again)
        record = read_weights(path).record
        if record is None:
            raise InvalidFileError(f'{path} does not record the model it holds; {again}')
        check_record(record, args, where=path)
    return folder


def _cache_root(cache_dir: 'str | os.PathLike | None') -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get('HF_HUB_CACHE') or constants.HF_HUB_CACHE)


def publish_to_cache(folder: 'str | os.PathLike', repo_id: str, *, cache_dir: 'str | os.PathLike | None' = None,
                     revision: str = 'main') -> Path:
    """Write a saved folder into a local Hugging Face cache as ``repo_id`` at ``revision``.

    Layout (huggingface_hub's): ``models--{org}--{name}/blobs/<sha256>``,
    ``snapshots/<commit>/<file>`` as relative links to the blobs, ``refs/<revision>`` holding the
    commit id (a hash of the files, so identical content gives the same commit). Returns the
    snapshot folder. Offline ``hf_hub_download`` then finds the files. The card's usage line is
    published loading from ``repo_id``, whatever folder or repo it named.
    """
    folder = _check_folder(Path(folder))
    _check_repo_id(repo_id)
    root = _cache_root(cache_dir)
    if root.exists() and not root.is_dir():
        raise InvalidArgumentError(f'cache_dir {root} is a file; pass a folder for the Hub cache')
    repo = root / f'models--{repo_id.replace("/", "--")}'
    parts = revision.split('/')
    if not _REVISION.fullmatch(revision) or any(p in ('', '.', '..') for p in parts) or revision.endswith('.lock'):
        raise InvalidArgumentError(f'revision={revision!r} is not a branch or tag name (letters, digits, . _ - /; '
                                   'no "..", empty or absolute parts)')
    load_name = f'hf-hub:{repo_id}' + ('' if revision == 'main' else f'@{revision}')
    with tempfile.TemporaryDirectory() as scratch:
        folder = _as_published(folder, load_name, Path(scratch) / 'model')  # the card loads from the repo
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
    write_text(repo / 'refs' / revision, commit)
    return snapshot


def split_revision(repo_id: str) -> tuple[str, str | None]:
    """``'org/name@rev'`` → ``('org/name', 'rev')``."""
    repo, _, revision = repo_id.partition('@')
    return repo, revision or None


def download(repo_id: str, filename: str, *, revision: str | None = None,
             cache_dir: 'str | os.PathLike | None' = None, local_files_only: bool = False) -> Path:
    """``hf_hub_download`` tagged with ``library_name='oqatnets'`` (honours ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``;
    ``local_files_only`` reads the cache without any network request)."""
    if cache_dir is None:
        cache_dir = os.environ.get('HF_HUB_CACHE') or None  # read now: huggingface_hub reads it at import
    return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                local_files_only=local_files_only, library_name='oqatnets',
                                library_version=__version__))


def offline_note() -> str:
    """`` with HF_HUB_OFFLINE set`` when it is, for messages about what could not be fetched."""
    return ' with HF_HUB_OFFLINE set' if os.environ.get('HF_HUB_OFFLINE', '').lower() in ('1', 'true', 'yes') else ''


def load_model_config_from_hf(model_id: str, *, cache_dir: 'str | os.PathLike | None' = None,
                              local_files_only: bool = False) -> tuple[PretrainedCfg, dict[str, Any]]:
    """(pretrained cfg, model_args) from ``config.json`` of ``org/name[@revision]`` on the Hub."""
    repo_id, revision = split_revision(model_id)
    try:
        path = download(repo_id, CONFIG_FILE, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    except HFValidationError as exc:
        raise InvalidArgumentError(f'hf-hub:{model_id} is not a Hub repo id ({exc}); write hf-hub:org/name[@revision]') \
            from None
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as exc:  # not found, not cached offline
        raise PretrainedWeightsError(f'could not fetch {CONFIG_FILE} of hf-hub:{model_id}{offline_note()} '
                                     f'({type(exc).__name__}); check the repo id and revision, the connection, '
                                     'HF_HUB_OFFLINE, HF_HUB_CACHE or cache_dir') from None
    cfg, args = read_model_config(path)
    return cfg.replace(hf_hub_id=model_id, source='hf-hub'), args


def load_model_config_from_path(folder: 'str | os.PathLike') -> tuple[PretrainedCfg, dict[str, Any]]:
    """(pretrained cfg, model_args) from ``folder/config.json``; the cfg points at the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileMissingError(f'local-dir: {folder} is not a folder')
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileMissingError(f'{folder} has no {CONFIG_FILE}; write the folder with oqatnets.save_pretrained')
    cfg, args = read_model_config(path)
    weights = next((folder / f for f in cfg.weight_files if (folder / f).is_file()), None)
    if weights is None:
        raise FileMissingError(f'{folder} holds no weights ({" or ".join(cfg.weight_files)})')
    return cfg.replace(file=str(weights), source='local-dir', hf_hub_id=None), args
