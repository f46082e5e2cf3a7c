"""Checkpoints: atomic, refused when corrupt or from another run, and a killed run resumes exactly."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_helpers import run_script

from oqatnets.training.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    TrainState,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from oqatnets.training.recipes import get_recipe

TESTS_DIR = str(Path(__file__).parent)


def _state(step: int = 3) -> TrainState:
    return TrainState(step=step, epoch=0, model={'w': torch.arange(4.0)}, optimizer={'state': {}, 'param_groups': []},
                      scheduler={'last_epoch': step}, rng=capture_rng({'subnets': random.Random(1)}),
                      fingerprint={'bits': 4, 'epochs': 2})


def test_checkpoint_roundtrip_restores_rng(tmp_path):
    rng = random.Random(5)
    rng.random()
    state = _state()
    state.rng = capture_rng({'subnets': rng})
    expected_py, expected_torch = rng.random(), torch.rand(3)
    save_checkpoint(tmp_path / CHECKPOINT_NAME, state)
    loaded = load_checkpoint(tmp_path / CHECKPOINT_NAME, expected_fingerprint={'bits': 4, 'epochs': 2})
    other = random.Random(0)
    restore_rng(loaded.rng, {'subnets': other})
    assert other.random() == expected_py and torch.equal(torch.rand(3), expected_torch)
    assert loaded.step == 3 and torch.equal(loaded.model['w'], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temporary files left


def test_corrupt_or_mismatched_checkpoint_is_refused_and_kept(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, _state())
    with pytest.raises(CheckpointError, match=r'different run \(bits: 4 != 3\)'):
        load_checkpoint(path, expected_fingerprint={'bits': 3, 'epochs': 2})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='corrupt') as info:
        load_checkpoint(path)
    assert '\n' not in str(info.value)
    assert path.read_bytes() == data[: len(data) // 2]  # nothing overwritten
    with pytest.raises(CheckpointError, match='drop --resume'):
        load_checkpoint(tmp_path / 'missing.pt')


def test_a_checkpoint_from_before_a_recipe_field_existed_resumes_at_its_default(tmp_path):
    recipe = get_recipe('small').to_dict()
    older = {k: v for k, v in recipe.items() if k not in ('float_sampling', 'step_lr_factor')}
    state = _state()
    state.fingerprint = {'bits': 4, 'recipe': older}
    save_checkpoint(tmp_path / CHECKPOINT_NAME, state)
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME, expected_fingerprint={'bits': 4, 'recipe': recipe}).step == 3
    changed = {**recipe, 'float_sampling': 'largest'}  # the old run trained the sandwich: a new value is another run
    with pytest.raises(CheckpointError, match=r"float_sampling"):
        load_checkpoint(tmp_path / CHECKPOINT_NAME, expected_fingerprint={'bits': 4, 'recipe': changed})


def test_a_changed_setting_is_named_by_its_path_not_by_whole_recipes():
    from oqatnets.training.checkpoint import fingerprint_diff
    saved = {'bits': 4, 'recipe': {'lr': 0.1, 'epochs': 3, 'kd': {'ratio': 1.0}}, 'data': 'a'}
    assert fingerprint_diff(saved, {'bits': 4, 'recipe': {'lr': 0.2, 'epochs': 3, 'kd': {'ratio': 0.5}}, 'data': 'a'}) == [
        'recipe.kd.ratio: 1.0 != 0.5', 'recipe.lr: 0.1 != 0.2']
    assert fingerprint_diff(saved, {'bits': 2, 'recipe': None}) == [
        'bits: 4 != 2', "data: 'a' != None", f"recipe: {saved['recipe']!r} != None"]


def test_resume_requires_flag_when_a_checkpoint_exists(tmp_path):
    from training_helpers import TINY_SPACE, synthetic_dataset

    from oqatnets.supernet import OQATSupernet
    from oqatnets.training import get_recipe, init_distributed, train_supernet
    save_checkpoint(tmp_path / CHECKPOINT_NAME, _state())
    net = OQATSupernet(space=TINY_SPACE, bits=4, num_classes=4)
    with pytest.raises(CheckpointError, match='pass --resume'):
        train_supernet(supernet=net, train_set=synthetic_dataset(32), recipe=get_recipe('small').override(batch_size=16),
                       bits=4, epochs=1, out_dir=tmp_path, ctx=init_distributed(device='cpu'))
    with pytest.raises(CheckpointError, match='different run'):
        train_supernet(supernet=net, train_set=synthetic_dataset(32), recipe=get_recipe('small').override(batch_size=16),
                       bits=4, epochs=1, out_dir=tmp_path, ctx=init_distributed(device='cpu'), resume=True)


def _run(script: Path, out: Path, resume: bool, state: Path) -> None:
    subprocess.run([sys.executable, str(script), str(out), '1' if resume else '0', str(state)], check=True,
                   capture_output=True, timeout=300)


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path):
    # 1 float epoch + 2 quantized epochs of 6 steps: the kill lands early, the resume crosses the
    # float → 4-bit switch (LSQ init) and two epoch boundaries.
    script = tmp_path / 'run.py'
    script.write_text(run_script(TESTS_DIR, epochs=2, float_epochs=1, batch_size=16, checkpoint_every=2))
    _run(script, tmp_path / 'full', False, tmp_path / 'full_state')

    out = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, str(script), str(out), '0'], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / CHECKPOINT_NAME).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(out / CHECKPOINT_NAME).step
    assert killed_at < 18, 'the run finished before it could be killed'

    _run(script, out, True, tmp_path / 'resumed_state')
    full = torch.load(tmp_path / 'full_state.rank0', weights_only=True)
    resumed = torch.load(tmp_path / 'resumed_state.rank0', weights_only=True)
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    assert load_checkpoint(out / CHECKPOINT_NAME).step == 18
    lines = (out / 'metrics.jsonl').read_text().splitlines()
    assert len(lines) == 3  # one line per epoch, none repeated by the resume


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_summary(tmp_path):
    from training_helpers import TINY_SPACE, synthetic_dataset

    from oqatnets.supernet import OQATSupernet
    from oqatnets.training import get_recipe, init_distributed, train_supernet
    settings = dict(train_set=synthetic_dataset(32), recipe=get_recipe('small').override(batch_size=16), bits=4,
                    epochs=1, out_dir=tmp_path, ctx=init_distributed(device='cpu'))
    train_supernet(supernet=OQATSupernet(space=TINY_SPACE, bits=4, num_classes=4), **settings)
    before = (tmp_path / 'summary.json').read_bytes()
    result = train_supernet(supernet=OQATSupernet(space=TINY_SPACE, bits=4, num_classes=4), resume=True, **settings)
    assert (tmp_path / 'summary.json').read_bytes() == before  # it was rewritten with empty throughput
    assert result.summary['throughput']['train']['images_per_s'] > 0 and result.summary['last_epoch']
