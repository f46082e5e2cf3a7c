"""The main job end to end on a tiny slice of Fashion-MNIST: every stage's output exists and loads."""
from __future__ import annotations

import importlib
import json

import pytest
import torch

import oqatnets
from oqatnets.errors import DataError, InvalidArgumentError


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    from oqatnets.training.demo import run_demo
    out = tmp_path_factory.mktemp('demo')
    try:
        report = run_demo(out, preset='tiny', device='cpu')
    except DataError as exc:
        pytest.skip(f'Fashion-MNIST could not be prepared here: {exc}')
    return out, report


@pytest.mark.slow
def test_demo_writes_report_table_plot_zoo_and_supernets(demo_run):
    out, report = demo_run
    on_disk = json.loads((out / 'report.json').read_text())
    assert on_disk['entries'] == report['entries']
    assert len(report['entries']) == 9
    assert sorted({e['bits'] for e in report['entries']}) == [2, 3, 4]
    assert (out / 'pareto.png').stat().st_size > 1000
    assert set(report['inheritance']) == {'3bit_before_training', '2bit_before_training'}
    for bits in (4, 3, 2):
        run_dir = out / f'supernet_w{bits}a{bits}'
        assert (run_dir / 'checkpoint.pt').is_file() and (run_dir / 'run.json').is_file()
        supernet = oqatnets.create_model(f'local-dir:{run_dir / "supernet"}', pretrained=True)
        assert isinstance(supernet, oqatnets.OQATSupernet) and supernet.bits == bits
    table = json.loads((out / 'zoo.json').read_text())
    assert [row['name'] for row in table['models']][:3] == [f'oqat_fmnist_4bit_{s}.fmnist' for s in 'sml']
    header = report['table_markdown'].splitlines()[0]
    for column in ('entry', 'bits', 'resolution', 'MACs', 'BitOPs', 'packed size', 'top-1'):
        assert column in header


@pytest.mark.slow
def test_demo_entries_load_offline_from_the_hub_cache(demo_run):
    out, report = demo_run
    oqatnets.register_zoo_table(out / 'zoo.json')
    for entry in report['entries']:
        assert entry['budget_bitops_g'] >= entry['bitops_g'] - 1e-9  # the search kept its budget
        assert entry['packed_top1'] == entry['top1']  # the packed file is the same network
        model = oqatnets.create_model(entry['entry'], pretrained=True, cache_dir=out / 'hub')
        assert str(model.spec) == entry['spec'] and model.num_classes == 10
        with torch.no_grad():
            assert model.eval()(torch.zeros(1, 3, entry['resolution'], entry['resolution'])).shape == (1, 10)
    assert oqatnets.is_model('oqat_fmnist_2bit_m')


@pytest.mark.slow
def test_demo_entries_carry_the_recipes_bn_calibration(demo_run):
    from oqatnets.training.calibrate import calibrated_subnet
    from oqatnets.training.demo import DEMO_PRESETS, demo_recipe, prepare_demo_data
    out, report = demo_run
    preset = DEMO_PRESETS['tiny']
    recipe = demo_recipe(preset)
    assert recipe.bn_calibration == 'population'
    calib = prepare_demo_data(preset, recipe).prepared.calib
    oqatnets.register_zoo_table(out / 'zoo.json')
    entry = next(e for e in report['entries'] if e['bits'] == 2)
    published = oqatnets.create_model(entry['entry'], pretrained=True, cache_dir=out / 'hub')
    supernet = oqatnets.create_model(f'local-dir:{out / "supernet_w2a2" / "supernet"}', pretrained=True)
    # the pipeline calibrates in the training layout: in another one, float rounding can flip a 2-bit rounding
    supernet = supernet.to(memory_format=torch.channels_last)
    spec = published.spec
    for mode, same in (('population', True), ('batch', False)):
        again = calibrated_subnet(supernet, spec, calib_batches=calib, mode=mode)
        close = [torch.allclose(a, b, rtol=1e-4, atol=1e-6) for (name, a), (_, b)
                 in zip(published.named_buffers(), again.named_buffers()) if name.endswith(('running_mean', 'running_var'))]
        assert all(close) if same else not all(close), mode


def test_load_finished_run_refuses_what_it_cannot_analyse(demo_run, tmp_path):
    from oqatnets.training.demo import DEMO_PRESETS, load_finished_run
    out, report = demo_run
    loaded, preset = load_finished_run(out)
    assert preset == DEMO_PRESETS['tiny'] and loaded['entries'] == report['entries']
    with pytest.raises(InvalidArgumentError, match=r'no report\.json there'):
        load_finished_run(tmp_path)
    stopped = {k: v for k, v in loaded.items() if k != 'entries'}
    (tmp_path / 'report.json').write_text(json.dumps({**stopped, 'stopped_after': 'training'}))
    with pytest.raises(InvalidArgumentError, match='stopped after training'):
        load_finished_run(tmp_path)
    (tmp_path / 'report.json').write_text(json.dumps({**loaded, 'preset': {**loaded['preset'], 'train_images': 1}}))
    with pytest.raises(InvalidArgumentError, match='ran a preset this version does not have'):
        load_finished_run(tmp_path)


def test_demo_refuses_to_overwrite_a_run(demo_run):
    from oqatnets.training.demo import run_demo
    out, _ = demo_run
    with pytest.raises(ValueError, match='--overwrite'):
        run_demo(out, preset='tiny')


@pytest.mark.slow
def test_demo_seed_fixes_the_initial_weights(demo_run, tmp_path):
    """Two runs with one seed train the same supernet (torch's own start-up seed differs per process)."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from oqatnets.training.demo import DEMO_PRESETS, run_demo
    preset = replace(DEMO_PRESETS['tiny'], train_images=64, epochs=(1, 1, 1))
    torch.seed()  # whatever the global stream holds must not matter
    first = run_demo(tmp_path / 'a', preset=preset, device='cpu', stop_after_training=True)
    torch.manual_seed(12345)
    second = run_demo(tmp_path / 'b', preset=preset, device='cpu', stop_after_training=True)
    for bits in ('4', '2'):
        a = load_file(f"{first['artifacts']['supernets'][bits]}/supernet/model.safetensors")
        b = load_file(f"{second['artifacts']['supernets'][bits]}/supernet/model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_failed_overwrite_keeps_the_earlier_run(tmp_path, monkeypatch):
    """--overwrite replaces an earlier run only when the new one succeeds."""
    from dataclasses import replace

    from oqatnets.training.demo import DEMO_PRESETS, ran_preset, report_supernet_dirs, run_demo
    demo = importlib.import_module('oqatnets.training.demo')
    out = tmp_path / 'run'
    out.mkdir()
    (out / 'report.json').write_text('the earlier run')

    def fail(**kwargs):
        raise KeyboardInterrupt  # as Ctrl-C in the middle of training
    monkeypatch.setattr(demo, 'train_supernet', fail)
    preset = replace(DEMO_PRESETS['tiny'], train_images=64, epochs=(1, 1, 1))
    try:
        with pytest.raises(KeyboardInterrupt):
            run_demo(out, preset=preset, device='cpu', overwrite=True)
    except DataError as exc:
        pytest.skip(f'Fashion-MNIST could not be prepared here: {exc}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']
    assert sorted(p.name for p in out.iterdir()) == ['report.json']
    assert (out / 'report.json').read_text() == 'the earlier run'
    monkeypatch.undo()
    result = run_demo(out, preset=preset, device='cpu', overwrite=True, stop_after_training=True)
    assert sorted(result['artifacts']['supernets']) == ['2', '3', '4'] and result['stopped_after'] == 'training'
    on_disk = json.loads((out / 'report.json').read_text())
    assert on_disk['seed'] == 0 and on_disk['preset']['train_images'] == 64 and 'entries' not in on_disk
    assert ran_preset(on_disk, preset) and not ran_preset(on_disk, DEMO_PRESETS['tiny'])
    assert report_supernet_dirs(out, on_disk) == {b: out / f'supernet_w{b}a{b}' for b in (4, 3, 2)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']
