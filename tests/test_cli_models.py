"""The zoo commands of `oqat`, through click's CliRunner."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import OFFICIAL_B2
from huggingface_hub import hf_hub_download
from zoo_helpers import image_folder, inputs, small_net

import oqatnets
from oqatnets.cli.main import cli
from oqatnets.training.recipes import recipe_for_space


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    model = small_net(2, num_classes=3, seed=3)
    path = oqatnets.save_pretrained(model, tmp_path_factory.mktemp('cli') / 'net')
    return model, path


def test_list_table_and_json():
    result = run('list', 'oqat_?bit_m')
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].startswith('| name | model | bits') and len(lines) == 5
    rows = json.loads(run('list', 'oqat_2bit_*', '--json').output)
    assert {r['name'] for r in rows} >= {'oqat_2bit_s', 'oqat_2bit_r208_200m'}
    assert json.loads(run('list', '--pretrained', 'oqat_2bit_*', '--json').output) == []


def test_info_and_profile():
    info = json.loads(run('info', 'oqat_4bit_l', '--json').output)
    assert info['architecture'] == 'oqat_4bit_r216_287m' and info['profile']['macs'] == pytest.approx(286.91, abs=1e-3)
    assert 'hf_hub_id: oqatnets/oqat_4bit_r216_287m.in1k' in run('info', 'oqat_4bit_l').output
    spec = oqatnets.get_pretrained_cfg('oqat_2bit_m').spec
    by_name = json.loads(run('profile', 'oqat_2bit_m', '--json').output)[0]
    by_spec = json.loads(run('profile', spec, '--json').output)[0]
    assert by_name['bitops'] == by_spec['bitops'] and by_spec['macs'] == pytest.approx(199.504, abs=1e-3)
    small = json.loads(run('profile', str(small_net(2).spec), '--space', 'small', '--num-classes', '10', '--json').output)
    assert small[0]['resolution'] == 32


def test_info_and_profile_of_a_folder(folder):
    model, path = folder
    info = json.loads(run('info', f'local-dir:{path}', '--json').output)
    assert info['spec'] == str(model.spec) and info['num_classes'] == 3
    row = json.loads(run('profile', f'local-dir:{path}', '--json').output)[0]
    assert row['bitops'] == pytest.approx(oqatnets.profile(model).bitops)


@pytest.mark.parametrize('args, message, code', [
    (('info', 'oqat_2bit_mm'), "unknown model 'oqat_2bit_mm'; did you mean", 2),
    (('profile', 'r220_k123'), 'cannot parse subnet spec', 2),
    (('profile', 'oqat_supernet_mbv3_w2a2'), 'is a supernet', 2),
    (('profile', 'oqat_2bit_m', '--space', 'small'), 'has its own', 2),
    (('export', 'oqat_2bit_m', '--format', 'packed', 'x.safetensors'), 'not published', 1),
    (('export', 'local-dir:/no/such/dir', '--format', 'onnx', 'x.onnx'), 'is not a folder', 1),
    (('export', 'oqat_2bit_m', '--format', 'packed', '--check', 'x.safetensors'), 'goes with --format onnx', 2),
    (('export', 'oqat_2bit_m', 'x.bin'), "cannot tell the format from 'x.bin'", 2),
    (('export', 'oqat_2bit_m', '-'), 'not standard output', 2),
    (('convert-official', __file__, 'out'), 'cannot read the bit-width', 2),
    (('info', __file__), f'is a file; name the saved folder that holds it with its config.json: local-dir:{Path(__file__).parent}', 2),
    (('convert-official', __file__, 'out'), '--bits', 2),
])
def test_bad_input_exits_with_one_line(args, message, code):
    """Usage errors (bad names, specs, combinations) exit 2; known errors (files, weights) exit 1."""
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.output and 'Traceback' not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_export_packed_and_onnx(folder, tmp_path):
    model, path = folder
    result = run('export', f'local-dir:{path}', tmp_path / 'p.safetensors', '--json')  # packed, from the suffix
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)['format'] == 'packed'
    with torch.no_grad():
        assert torch.equal(oqatnets.load_packed(tmp_path / 'p.safetensors')(inputs()), model(inputs()))
    result = run('export', f'local-dir:{path}', tmp_path / 'm.onnx')  # the fast exact form, from the suffix
    assert result.exit_code == 0, result.output
    assert 'top-1 agreement 100%' in result.output and (tmp_path / 'm.onnx').is_file()
    result = run('export', f'local-dir:{path}', '--format', 'qcdq', tmp_path / 'q.onnx', '--json')
    assert json.loads(result.output)['format'] == 'qcdq'  # an explicit format is honoured


def test_push_into_a_local_cache_then_load(folder, tmp_path):
    model, path = folder
    result = run('push', path, 'me/cli-net', '--cache-dir', tmp_path)
    assert result.exit_code == 0, result.output
    loaded = oqatnets.create_model('hf-hub:me/cli-net', pretrained=True, cache_dir=tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(inputs()), model(inputs()))
    card = hf_hub_download('me/cli-net', 'README.md', cache_dir=tmp_path, local_files_only=True)
    assert "create_model('hf-hub:me/cli-net', pretrained=True)" in Path(card).read_text()  # not the saved folder
    assert f"'local-dir:{path}'" in (path / 'README.md').read_text()
    refused = run('push', path, 'me/private', '--cache-dir', tmp_path, '--private')
    assert refused.exit_code == 2 and "drop --private or --cache-dir" in refused.output
    assert not (tmp_path / 'models--me--private').exists()


def test_eval_and_predict_on_a_tiny_image_folder(folder, tmp_path):
    model, path = folder
    data = image_folder(tmp_path / 'data')
    result = run('eval', f'local-dir:{path}', '--data', data, '--recalibrate-bn', 6, '--batch-size', 4, '--json')
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)[0]
    assert row['images'] == 12 and 0 <= row['top1'] <= 100 and row['top5'] is None  # 3 classes: no vacuous top-5
    assert row['calibration_mode'] == recipe_for_space(model.space.name).bn_calibration  # the recipe's, by default
    result = run('eval', f'local-dir:{path}', '--data', data, '--recalibrate-bn', 6, '--batch-size', 4,
                 '--calibration-mode', 'batch', '--json')
    assert json.loads(result.output)[0]['calibration_mode'] == 'batch'
    image = data / 'val' / 'bee' / '0.png'
    rows = json.loads(run('predict', f'local-dir:{path}', image, '--json').output)
    assert [r['rank'] for r in rows] == [1, 2, 3] and abs(sum(r['probability'] for r in rows) - 1) < 1e-5
    assert run('predict', f'local-dir:{path}', tmp_path / 'missing.png').exit_code == 2


def test_counts_given_beyond_what_there_is_are_refused(folder, tmp_path):
    _, path = folder
    data = image_folder(tmp_path / 'data')
    result = run('eval', f'local-dir:{path}', '--data', data, '--recalibrate-bn', 1000)
    assert result.exit_code == 2 and '--recalibrate-bn 1000' in result.output and 'has 12 training images' in result.output
    headless = small_net(2, num_classes=0)
    headless_dir = oqatnets.save_pretrained(headless, tmp_path / 'headless')
    result = run('predict', f'local-dir:{headless_dir}', data / 'val' / 'bee' / '0.png')
    assert result.exit_code == 2 and 'has no classifier' in result.output
    result = run('eval', f'local-dir:{path}', '--data', data, '--calibration-mode', 'batch')  # nothing to calibrate
    assert result.exit_code == 2 and 'pass N > 0 or drop it' in result.output
    image = data / 'val' / 'bee' / '0.png'
    result = run('predict', f'local-dir:{path}', image, '--top', 50)
    assert result.exit_code == 2 and '--top 50' in result.output and 'has 3 classes' in result.output
    result = run('calibrate', f'local-dir:{path}', '--data', data, '--out', tmp_path / 'cal', '--calib-images', 5000,
                 '--holdout', 3, '--device', 'cpu')
    assert result.exit_code == 2 and '--calib-images 5000' in result.output and 'has 9 training images' in result.output
    assert not (tmp_path / 'cal').exists()
    result = run('calibrate', f'local-dir:{path}', '--data', data, '--out', tmp_path / 'cal', '--holdout', 3,
                 '--device', 'cpu', '--no-eval')  # the default 2000: as many as there are
    assert result.exit_code == 0, result.output


def test_an_explicit_format_must_match_the_files_suffix_and_budgets_are_checked_first(folder, tmp_path):
    _, path = folder
    result = run('export', f'local-dir:{path}', tmp_path / 'x.onnx', '--format', 'packed')
    assert result.exit_code == 2 and '--format packed does not write a .onnx file' in result.output
    assert run('export', f'local-dir:{path}', tmp_path / 'q.onnx', '--format', 'qcdq', '--no-check').exit_code == 0
    supernet = oqatnets.save_pretrained(oqatnets.create_supernet(2, space='small', num_classes=3), tmp_path / 'sn')
    result = run('search', f'local-dir:{supernet}', '--data', tmp_path / 'nowhere', '--budgets', 'abc',
                 '--out', tmp_path / 'o')
    assert result.exit_code == 2 and "--budgets 'abc'" in result.output and not (tmp_path / 'o').exists()


def test_eval_refuses_a_class_mismatch(folder, tmp_path):
    _, path = folder
    data = image_folder(tmp_path / 'data2', classes=('a', 'b'), per_class=1)
    result = run('eval', f'local-dir:{path}', '--data', data)
    assert result.exit_code == 2 and 'has 2 classes' in result.output


def test_predict_uses_imagenet_names_for_1000_classes(tmp_path):
    model = small_net(2, num_classes=1000)
    path = oqatnets.save_pretrained(model, tmp_path / 'in1k', packed=False)
    image = image_folder(tmp_path / 'd', classes=('x',), per_class=1) / 'val' / 'x' / '0.png'
    rows = json.loads(run('predict', f'local-dir:{path}', image, '--json').output)
    from torchvision.models import MobileNet_V3_Large_Weights
    categories = MobileNet_V3_Large_Weights.IMAGENET1K_V1.meta['categories']
    assert len(rows) == 5 and rows[0]['label'] == categories[rows[0]['class']]


@pytest.mark.skipif(not OFFICIAL_B2.is_file(), reason='authors\' reference checkpoint not found (set OQAT_REFERENCE_DIR)')
def test_convert_official_writes_a_loadable_folder(tmp_path):
    result = run('convert-official', OFFICIAL_B2, tmp_path / 'b2')
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / 'b2' / 'config.json').read_text())
    assert config['architecture'] == 'oqat_supernet' and config['model_args']['bits'] == 2
    assert config['pretrained_cfg']['license'] == 'other'
    supernet = oqatnets.create_model(f'local-dir:{tmp_path / "b2"}', pretrained=True)
    reference = oqatnets.load_official_supernet(OFFICIAL_B2)
    assert all(torch.equal(a, b) for a, b in zip(supernet.state_dict().values(), reference.state_dict().values()))


@pytest.mark.skipif(not OFFICIAL_B2.is_file(), reason='authors\' reference checkpoint not found (set OQAT_REFERENCE_DIR)')
@pytest.mark.parametrize('bits', ['4', '32'])
def test_convert_official_refuses_bits_its_file_name_contradicts(tmp_path, bits):
    """The file name is the only record of the bit-width: 2-bit step sizes are never labelled another width."""
    result = run('convert-official', OFFICIAL_B2, tmp_path / 'b', '--bits', bits)
    assert result.exit_code == 2 and f'holds a 2-bit supernet (its _b2) but bits={bits}' in result.output, result.output
    assert not (tmp_path / 'b').exists()
    assert run('convert-official', OFFICIAL_B2, tmp_path / 'b', '--bits', '2').exit_code == 0


def test_export_push_and_inherit_speak_json(tmp_path, monkeypatch):
    folder = oqatnets.save_pretrained(small_net(3), tmp_path / 'net')
    result = run('export', f'local-dir:{folder}', tmp_path / 'w.safetensors', '--format', 'packed', '--json')
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert row['format'] == 'packed' and row['bytes'] == (tmp_path / 'w.safetensors').stat().st_size
    result = run('push', folder, 'me/net', '--cache-dir', tmp_path / 'cache', '--json')
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)['snapshot'].startswith(str(tmp_path / 'cache'))
    supernet = oqatnets.create_supernet(3, space='small', num_classes=4)
    with torch.no_grad():
        supernet.train()(inputs())  # LSQ step init
    oqatnets.save_pretrained(supernet, tmp_path / 's3')
    result = run('inherit', tmp_path / 's3', tmp_path / 's2', '--bits', '2', '--json')
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {'folder': str(tmp_path / 's2'), 'bits': 2, 'source_bits': 3, 'step_scale': 2}
    monkeypatch.chdir(tmp_path)  # a relative source is recorded as the folder it names from anywhere
    assert run('inherit', 'local-dir:s3', 's2rel', '--bits', '2').exit_code == 0
    recorded = json.loads((tmp_path / 's2rel' / 'config.json').read_text())['pretrained_cfg']['supernet']
    assert recorded == f'local-dir:{tmp_path / "s3"}'
    before = {p.name: p.read_bytes() for p in (tmp_path / 's2').iterdir()}
    for args in (('inherit', tmp_path / 's3', tmp_path / 's2', '--bits', '1'),
                 ('export', f'local-dir:{folder}', tmp_path / 'w.safetensors', '--format', 'packed')):
        result = run(*args)  # what an earlier command wrote is not lost without --overwrite
        assert result.exit_code == 2 and 'already exists; pass --overwrite' in result.output, result.output
    assert {p.name: p.read_bytes() for p in (tmp_path / 's2').iterdir()} == before
    assert run('inherit', tmp_path / 's3', tmp_path / 's2', '--bits', '1', '--overwrite').exit_code == 0
    assert oqatnets.create_model(f'local-dir:{tmp_path / "s2"}', pretrained=True).bits == 1


def test_model_names_complete_in_the_shell():
    from click.shell_completion import ShellComplete

    from oqatnets.cli.completion import model_names
    assert 'oqat_2bit_m' in model_names()
    completer = ShellComplete(cli, {}, 'oqat', '_OQAT_COMPLETE')
    items = [c.value for c in completer.get_completions(['info'], 'oqat_2bit_')]
    assert items and all(v.startswith('oqat_2bit_') for v in items) and 'oqat_2bit_m' in items
    assert 'hf-hub:' in [c.value for c in completer.get_completions(['eval'], 'hf')]


def test_every_option_has_help_text():
    import click

    def commands(cmd, path):
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(click.Context(cmd)):
                yield from commands(cmd.get_command(click.Context(cmd), name), [*path, name])
        else:
            yield ' '.join(path), cmd

    bare = [f'{path} {p.opts[0]}' for path, cmd in commands(cli, []) for p in cmd.params
            if isinstance(p, click.Option) and not p.help]
    assert not bare


def test_eval_feeds_images_through_the_models_own_cfg_transform(tmp_path):
    """`oqat eval` measures what a user feeding the files through the model's cfg gets: its size, crop and
    normalisation, not ImageNet's (an entry trained on Fashion-MNIST was evaluated with ImageNet's)."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from oqatnets.data import cfg_transform
    from oqatnets.evaluation import evaluate
    from oqatnets.training.sources import load_image
    cfg = {'mean': [0.2] * 3, 'std': [0.3] * 3, 'crop_pct': 1.0, 'interpolation': 'bicubic'}
    folder = oqatnets.save_pretrained(small_net(2, num_classes=3), tmp_path / 'net', pretrained_cfg=cfg)
    data = image_folder(tmp_path / 'data', size=40)
    result = run('eval', f'local-dir:{folder}', '--data', data, '--json')
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)[0]
    model = oqatnets.create_model(f'local-dir:{folder}', pretrained=True).eval()
    val = ImageFolder(str(data / 'val'), transform=cfg_transform(model.pretrained_cfg), loader=load_image)
    expected = evaluate(model, DataLoader(val, batch_size=100), progress=False)
    assert row['images'] == expected['images'] == 12
    assert row['loss'] == pytest.approx(expected['loss'], rel=1e-6) and row['top1'] == expected['top1']
