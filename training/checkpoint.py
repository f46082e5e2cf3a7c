"""Resumable training checkpoints: one file, written atomically, loaded without unpickling code.

A checkpoint holds the model, optimizer, scheduler and AMP-scaler states, every RNG stream (the
global torch generator, CUDA's, and each named :class:`random.Random` such as the subnet
sampler), the step and epoch, and a *fingerprint*: the JSON-able settings that must match for a
resume to continue the same run (recipe, bits, space, data, world size …).

It is written with ``torch.save`` to a temporary file in the same folder, flushed to disk and
renamed over the old one, so a run killed at any moment leaves either the previous or the new
checkpoint, never a torn one. It is read with ``torch.load(weights_only=True)``: tensors,
numbers, strings and containers only, so a tampered file cannot run code.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from oqatnets._io import check_output
from oqatnets.errors import CheckpointError

from .recipes import Recipe

__all__ = ['CheckpointError', 'TrainState', 'save_checkpoint', 'load_checkpoint', 'capture_rng', 'seeded_global_rng',
           'restore_rng', 'CHECKPOINT_NAME', 'fingerprint_diff']

CHECKPOINT_NAME = 'checkpoint.pt'
_FORMAT = 'oqatnets-train-checkpoint'
_VERSION = 1


@dataclass
class TrainState:
    """Everything a resume needs, as plain states (see :func:`save_checkpoint`)."""

    step: int
    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    fingerprint: dict[str, Any]
    scaler: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def seeded_global_rng(seed: int, *, device: torch.device) -> Iterator[None]:
    """Seed torch's global generator for the block (augmentation, dropout) and restore it afterwards,
    so training is repeatable and leaves the caller's random stream as it found it."""
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
        torch.manual_seed(seed)
        yield


def capture_rng(streams: dict[str, random.Random]) -> dict[str, Any]:
    """The state of torch's global generator(s) and of each named ``random.Random``."""
    state: dict[str, Any] = {'torch': torch.get_rng_state(),
                             'python': {name: rng.getstate() for name, rng in streams.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], streams: dict[str, random.Random]) -> None:
    """Put every RNG stream back where :func:`capture_rng` found it."""
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    missing = sorted(set(streams) - set(state['python']))
    if missing:
        raise CheckpointError(f'checkpoint has no state for the RNG streams {missing}; it was written by another version')
    for name, rng in streams.items():
        version, internal, gauss = state['python'][name]
        rng.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: 'str | Path', state: TrainState) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = check_output(path)  # a symlink, a device or a FIFO is refused
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {'format': _FORMAT, 'version': _VERSION, 'step': state.step, 'epoch': state.epoch,
               'model': state.model, 'optimizer': state.optimizer, 'scheduler': state.scheduler,
               'scaler': state.scaler, 'rng': state.rng,
               'fingerprint': json.dumps(state.fingerprint, sort_keys=True),
               'extra': json.dumps(state.extra, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _with_recipe_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with the recipe fields added since it was written at their defaults, which is what
    that run used (a recipe field always enters with the default that keeps the old behaviour)."""
    recipe = saved.get('recipe')
    if not isinstance(recipe, dict):
        return saved
    defaults = {f.name: f.default for f in fields(Recipe) if f.default is not MISSING}
    return {**saved, 'recipe': {**defaults, **recipe}}


def fingerprint_diff(saved: dict[str, Any], expected: dict[str, Any], *, prefix: str = '') -> list[str]:
    """``key: saved != expected`` for every setting that differs; a nested one is named by its path
    (``recipe.lr: 0.1 != 0.2``), so a message names the setting rather than printing whole recipes."""
    diff = []
    for key in sorted(set(saved) | set(expected)):
        a, b = saved.get(key), expected.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diff += fingerprint_diff(a, b, prefix=f'{prefix}{key}.')
        elif a != b:
            diff.append(f'{prefix}{key}: {a!r} != {b!r}')
    return diff


def load_checkpoint(path: 'str | Path', *, expected_fingerprint: dict[str, Any] | None = None) -> TrainState:
    """Read a checkpoint, refusing one that is corrupt or whose fingerprint differs from ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'no checkpoint at {path}; drop --resume to start a new run there')
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # zip, pickle and EOF errors all mean "not a readable checkpoint"
        raise CheckpointError(f'{path} is corrupt or not an oqatnets checkpoint ({type(exc).__name__}); '
                              f'delete it to start over, or point --out at another folder') from None
    if not isinstance(payload, dict) or payload.get('format') != _FORMAT:
        raise CheckpointError(f'{path} is not an oqatnets training checkpoint')
    if payload.get('version') != _VERSION:
        raise CheckpointError(f'{path} has checkpoint version {payload.get("version")}, this oqatnets reads {_VERSION}')
    fingerprint = json.loads(payload['fingerprint'])
    if expected_fingerprint is not None:
        diff = fingerprint_diff(_with_recipe_defaults(fingerprint),
                                json.loads(json.dumps(expected_fingerprint, sort_keys=True)))
        if diff:
            raise CheckpointError(f'{path} belongs to a different run ({"; ".join(diff)}); resume with the '
                                  f'same settings or choose another --out')
    return TrainState(step=payload['step'], epoch=payload['epoch'], model=payload['model'],
                      optimizer=payload['optimizer'], scheduler=payload['scheduler'], rng=payload['rng'],
                      fingerprint=fingerprint, scaler=payload['scaler'], extra=json.loads(payload['extra']))
