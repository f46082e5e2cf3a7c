"""The training commands end to end on a slice of Fashion-MNIST, and their one-line errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from oqatnets.cli.main import cli

pytestmark = pytest.mark.slow


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_train_inherit_search_calibrate_finetune(tmp_path):
    import oqatnets
    run4, run3 = tmp_path / 'run4', tmp_path / 'inh3'
    common = ['--data', 'fashion-mnist', '--holdout', '300']
    result = _invoke('train', 'supernet', *common, '--bits', '4', '--epochs', '1', '--float-epochs', '0', '--batch-size', '32',
                     '--train-images', '256', '--eval-images', '100', '--out', str(run4), '--checkpoint-every', '4',
                     '--float-sampling', 'largest', '--resolution-sampling', 'per_step', '--step-lr-factor', '0.5')
    if result.exit_code == 2 and 'could not prepare' in result.output:
        pytest.skip('Fashion-MNIST unavailable offline')
    assert result.exit_code == 0, result.output
    summary = json.loads((run4 / 'summary.json').read_text())
    assert summary['steps'] == 8 and summary['throughput']['train']['images_per_s'] > 0
    assert summary['recipe']['augment'] is False  # the small recipe's default
    assert summary['recipe']['float_sampling'] == 'largest'  # explicit values are honoured
    assert summary['recipe']['resolution_sampling'] == 'per_step' and summary['recipe']['step_lr_factor'] == 0.5
    assert (run4 / 'supernet' / 'config.json').is_file()
    # the supernet's card keeps training's last check, said to be one: 100 test images, resized in batches
    card = (run4 / 'supernet' / 'README.md').read_text()
    assert '      split: test\n' in card and 'num_images: 100' in card and "training's check" in card
    assert len((run4 / 'metrics.jsonl').read_text().splitlines()) == 1

    result = _invoke('train', 'supernet', *common, '--bits', '4', '--epochs', '1', '--batch-size', '32',
                     '--train-images', '256', '--out', str(run4))
    assert result.exit_code == 2 and 'pass --resume' in result.output

    assert _invoke('inherit', str(run4), str(run3), '--bits', '3').exit_code == 0
    supernet3 = oqatnets.create_model(f'local-dir:{run3}', pretrained=True)
    assert supernet3.bits == 3

    out = tmp_path / 'search'
    result = _invoke('search', str(run4), str(run3), *common, '--budgets', 'auto:1', '--out', str(out),
                     '--population', '3', '--generations', '1', '--holdout-eval', '100', '--calib-images', '100',
                     '--no-test-eval')
    assert result.exit_code == 0, result.output
    report = json.loads((out / 'pareto.json').read_text())
    assert sorted(r['bits'] for r in report['results']) == [3, 4] and (out / 'pareto.png').stat().st_size > 0
    for r in report['results']:
        point = r['chosen'][0]
        assert point['bitops'] <= point['budget']
        net = oqatnets.create_model(f'local-dir:{out / "entries" / point["entry"]}', pretrained=True)
        assert str(net.spec) == point['spec']
        assert net.pretrained_cfg['metrics_source'].endswith('held-out training images (train split)')

    entry = out / 'entries' / report['results'][0]['chosen'][0]['entry']
    result = _invoke('calibrate', str(entry), *common, '--out', str(tmp_path / 'cal'), '--calib-images', '100',
                     '--calibration-mode', 'batch', '--no-eval')
    assert result.exit_code == 0, result.output

    result = _invoke('finetune', str(entry), '--data', 'fashion-mnist', '--epochs', '1', '--batch-size', '32',
                     '--train-images', '64', '--augment', '--out', str(tmp_path / 'ft'))
    assert result.exit_code == 0, result.output
    assert (tmp_path / 'ft' / 'model' / 'model.packed.safetensors').is_file()
    # Fashion-MNIST has no validation split: the figure is on its test split, and the card says so
    cfg = json.loads((tmp_path / 'ft' / 'model' / 'config.json').read_text())['pretrained_cfg']
    assert cfg['metrics_source'] == 'oqat finetune on fashion-mnist (test split, 10000 images)'
    assert '      split: test\n' in (tmp_path / 'ft' / 'model' / 'README.md').read_text()
    summary = json.loads(result.output[result.output.index('{\n'):])  # what the card says, printed too
    assert (summary['top1'], summary['split'], summary['model']) == (cfg['top1'], 'test', str(tmp_path / 'ft' / 'model'))


def test_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(cli, ['inherit', str(tmp_path), str(tmp_path / 'x'), '--bits', '3'])
    assert result.exit_code == 1 and result.output.count('\n') == 1 and 'config.json' in result.output
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'checkpoint.pt').write_bytes(b'garbage')
    result = CliRunner().invoke(cli, ['train', 'supernet', '--data', str(tmp_path / 'nowhere'), '--out',
                                      str(tmp_path / 'run'), '--resume'])
    assert result.exit_code == 1 and result.output.startswith('Error: no data at')


def test_train_command_under_torchrun(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(port), '-m', 'oqatnets.cli.main', 'train', 'supernet', '--data', 'fashion-mnist',
           '--holdout', '300', '--epochs', '1', '--float-epochs', '0', '--batch-size', '32', '--train-images', '64',
           '--eval-images', '0',
           '--out', str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    if 'could not prepare' in result.stderr:
        pytest.skip('Fashion-MNIST unavailable offline')
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / 'summary.json').read_text())['steps'] == 2  # 64 images, 2 ranks × 16 per step
    assert (out / 'supernet' / 'model.safetensors').is_file()


def test_resume_path_continues_another_run_folder_in_an_empty_out(tmp_path):
    first, second = tmp_path / 'first', tmp_path / 'second'
    args = ['train', 'supernet', '--data', 'fashion-mnist', '--holdout', '300', '--epochs', '1', '--float-epochs', '0',
            '--batch-size', '32', '--train-images', '64', '--eval-images', '0', '--checkpoint-every', '1']
    assert _invoke(*args, '--out', str(first)).exit_code == 0
    (tmp_path / 'busy').mkdir()
    (tmp_path / 'busy' / 'keep.txt').write_text('mine')
    refused = _invoke(*args, '--out', str(tmp_path / 'busy'), '--resume', str(first))
    assert refused.exit_code == 2 and 'is not empty; choose an empty or new --out' in refused.output
    assert sorted(p.name for p in (tmp_path / 'busy').iterdir()) == ['keep.txt']
    result = _invoke(*args, '--out', str(second), '--resume', str(first / 'checkpoint.pt'))
    assert result.exit_code == 0, result.output
    assert json.loads((second / 'summary.json').read_text())['steps'] == 2
    assert (second / 'supernet' / 'model.safetensors').is_file()
    again = _invoke(*args, '--out', str(second), '--resume')  # the flag alone: the run in --out
    assert again.exit_code == 0, again.output


def test_space_choices_are_the_registered_spaces():
    """The CLI spells the spaces out (no torch import at start-up); they must be spec's."""
    from oqatnets.cli.training import train_supernet_cmd
    from oqatnets.spec import list_spaces
    from oqatnets.training.recipes import list_recipes
    option = next(p for p in train_supernet_cmd.params if p.name == 'space')
    assert sorted(option.type.choices) == list_spaces() == list_recipes()
