"""The main job end to end on a tiny slice of Fashion-MNIST: every stage's output exists and loads."""
from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

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
    rows = {row['name'].split('.')[0]: row for row in json.loads((out / 'zoo.json').read_text())['models']}
    for entry in report['entries']:  # the table's figures are the ones measured on the entries loaded back
        row = rows[entry['entry']]
        assert (row['top1'], row['top5']) == (entry['top1'], entry['top5']) and 'test split' in row['metrics_source']
        assert oqatnets.get_pretrained_cfg(entry['entry']).top1 == entry['top1']
    for entry in report['entries']:
        assert entry['budget_bitops_g'] >= entry['bitops_g'] - 1e-9  # the search kept its budget
        assert entry['packed_equal_images'] == min(500, entry['test_images'])  # the packed file is the same network
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


def _benchmark(name: str):
    """A script of ``benchmarks/`` (not a package) imported as a module."""
    path = Path(__file__).resolve().parents[1] / 'benchmarks' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('space', ['small_signed', 'small_signed_28', 'imagenet'])
def test_the_claims_compare_subnets_of_the_supernets_own_space(space):
    """The hand-designed spec of claim 1 and the middle subnet of claims 2-3 run at resolutions the supernet
    trained at: MobileNetV3's at the largest (it once stayed at 32 px in the 20-28 px space)."""
    from oqatnets.spec import get_space
    bench, search_space = _benchmark('bench_claims'), get_space(space)
    mbv3, middle = bench.mbv3_large_like(search_space), bench.middle_subnet(search_space)
    assert mbv3.resolution == max(search_space.resolutions)
    assert min(search_space.resolutions) < middle.resolution < max(search_space.resolutions)
    for spec in (mbv3, middle):
        assert search_space.check(spec) is spec and spec.resolution in search_space.resolutions


@pytest.mark.slow
def test_bench_ceiling_trains_each_entry_alone_and_finetunes_it(demo_run, tmp_path):
    out, report = demo_run
    bench = _benchmark('bench_ceiling')
    path = tmp_path / 'ceiling.json'
    result = bench.main(['--demo-dir', str(out), '--bits', '2', '--seeds', '0', '--finetune-epochs', '1',
                         '--teacher', 'largest', '--out', str(path)])
    entries = sorted((e for e in report['entries'] if e['bits'] == 2), key=lambda e: e['budget_bitops_g'])
    assert [(r['entry'], r['spec'], r['entry_top1']) for r in result['rows']] == [
        (e['entry'], e['spec'], e['top1']) for e in entries]
    assert result['finetune'] == {'epochs': 1, 'lr': report['preset']['finetune_lr'], 'teacher': 'largest'}
    for row in result['rows']:
        assert row['phases'] == [(4, 1), (3, 1), (2, 1)]  # the tiny preset: no float epoch, one each at 4, 3, 2 bits
        for kind in ('alone', 'finetuned'):
            assert len(row[f'{kind}_top1_per_seed']) == 1 and 0 <= row[f'{kind}_mean'] <= 100
    assert json.loads(path.read_text())['rows'][0]['spec'] == result['rows'][0]['spec']
    assert 'entry finetuned mean ± std' in bench.markdown(result).splitlines()[0]


@pytest.mark.parametrize('args, message', [
    (['--no-alone'], 'leaves nothing to measure'),
    (['--teacher', 'largest'], 'applies to finetuning'),
    (['--finetune-epochs', '-1'], 'must be 0 or more'),
    (['--seeds', ','], 'at least one seed'),
    (['--finetune-lr', '0.1'], 'with --finetune-epochs N'),
    (['--finetune-epochs', '1', '--finetune-lr', '0'], 'give a positive LR'),
    (['--bits', '5'], 'choose among'),
])
def test_bench_ceiling_refuses_bad_arguments_before_any_work(tmp_path, capsys, args, message):
    bench = _benchmark('bench_ceiling')
    with pytest.raises(SystemExit) as exc:
        bench.main(['--demo-dir', str(tmp_path), '--out', str(tmp_path / 'out.json'), *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / 'out.json').exists()


@pytest.mark.slow
def test_bench_calibration_measures_every_draw_and_mode(demo_run, tmp_path):
    out, _ = demo_run
    bench = _benchmark('bench_calibration')
    result = bench.main(['--demo-dir', str(out), '--bits', '2', '--sizes', '128', '--draws', '2',
                         '--modes', 'population', '--no-numerics', '--out', str(tmp_path / 'calibration.json')])
    assert [r['subnet'] for r in result['rows']] == ['entry S', 'entry M', 'entry L', 'largest', 'smallest']
    assert all(r['mode'] == 'population' and len(r['top1_per_draw']) == 2 for r in result['rows'])
    assert result['numerics'] == [] and (tmp_path / 'calibration.json').is_file()


@pytest.mark.slow
def test_finetuned_preset_trains_each_entry_alone_after_the_search(tmp_path):
    """Each entry folder then holds the finetuned, recalibrated net and says so; the search's record is kept."""
    from dataclasses import replace

    from oqatnets.training.datasets import evaluate_as_files
    from oqatnets.training.demo import DEMO_PRESETS, demo_recipe, prepare_demo_data, run_demo
    preset = replace(DEMO_PRESETS['tiny'], train_images=64, finetune_epochs=1)
    try:
        report = run_demo(tmp_path / 'run', preset=preset, device='cpu')
    except DataError as exc:
        pytest.skip(f'Fashion-MNIST could not be prepared here: {exc}')
    out = tmp_path / 'run'
    folders = {p['entry'] for r in report['search']['results'] for p in r['chosen']}
    assert set(report['finetune']) == folders and 'finetune' in report['timing']
    recipe = demo_recipe(preset)
    demo_data = prepare_demo_data(preset, recipe)
    search_batches = demo_data.search_batches
    for result in report['search']['results']:
        bits = result['bits']
        supernet = oqatnets.create_model(f'local-dir:{out / f"supernet_w{bits}a{bits}" / "supernet"}', pretrained=True)
        for point in result['chosen']:
            record = report['finetune'][point['entry']]
            assert record['searched_holdout_top1'] == point['top1'] and record['epochs'] == 1 and record['lr'] == 0.1
            folder = out / 'search' / 'entries' / point['entry']
            cfg = json.loads((folder / 'config.json').read_text())['pretrained_cfg']
            assert 'finetuned alone for 1 epoch' in cfg['description'] and 'finetuning' in cfg['metrics_source']
            model = oqatnets.create_model(f'local-dir:{folder}', pretrained=True)
            test = evaluate_as_files(model, demo_data.test_set)  # the card's figure: test images through its cfg
            assert abs(cfg['top1'] - test['top1']) <= 100 / test['images'] + 1e-9
            searched = dict(supernet.get_subnet(model.spec).named_parameters())
            assert str(model.spec) == point['spec']
            changed = [name for name, weight in model.named_parameters() if not torch.equal(weight, searched[name])]
            assert any(name.endswith('conv_pwl.weight') for name in changed)  # trained, not the supernet's slice
            # evaluated in the layout it was trained and measured in; one image either way is float rounding
            again = oqatnets.evaluate(model.to(memory_format=torch.channels_last), search_batches,
                                      resolution=model.spec.resolution)
            assert abs(again['top1'] - record['holdout_top1']) <= 100 / again['images'] + 1e-9
    table = json.loads((out / 'zoo.json').read_text())
    assert all('finetuned alone for 1 epoch' in row['metrics_source'] for row in table['models'])


def test_ran_preset_reads_records_written_before_a_field_existed():
    from dataclasses import asdict, replace

    from oqatnets.training.demo import DEMO_PRESETS, ran_preset
    default = DEMO_PRESETS['default']
    earlier = {k: v for k, v in json.loads(json.dumps(asdict(default))).items() if not k.startswith('finetune_')}
    assert ran_preset({'preset': earlier}, default)  # the added fields' defaults are the earlier behaviour
    assert not ran_preset({'preset': earlier}, replace(default, finetune_epochs=1))
    assert not ran_preset({'preset': {**earlier, 'finetune_epochs': 1}}, default)


def test_a_finetuned_run_trained_the_default_presets_supernets():
    from dataclasses import asdict, replace

    from oqatnets.training.demo import DEMO_PRESETS, ran_preset
    default, finetuned = DEMO_PRESETS['default'], DEMO_PRESETS['finetuned']
    record = {'preset': json.loads(json.dumps(asdict(finetuned)))}
    assert not ran_preset(record, default)
    assert ran_preset(record, default, training_only=True)
    assert ran_preset({'preset': {**record['preset'], 'budgets': 'auto:5', 'population': 4}}, default, training_only=True)
    assert not ran_preset(record, replace(default, epochs=(2, 1, 1)), training_only=True)
    assert not ran_preset(record, replace(default, batch_size=64), training_only=True)


def test_demo_cli_offers_every_preset():
    from oqatnets.cli.training import demo_cmd
    from oqatnets.training.demo import DEMO_PRESETS
    option = next(p for p in demo_cmd.params if p.name == 'preset')
    assert tuple(option.type.choices) == tuple(DEMO_PRESETS)


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


def test_a_packed_file_that_is_not_the_entrys_network_stops_the_demo(tmp_path):
    """The demo checks each entry's packed file against the entry loaded back: equal logits bit for bit."""
    from zoo_helpers import inputs, small_net

    from oqatnets.factory import load_packed
    from oqatnets.training.demo import _check_packed
    from oqatnets.weights import save_packed
    model = small_net(2)
    path = save_packed(model, tmp_path / 'model.packed.safetensors')
    batches = [(inputs(2, seed=s), torch.zeros(2, dtype=torch.long)) for s in range(3)]
    assert _check_packed(load_packed(path), model, batches, path=path) == 4  # the first two batches
    with torch.no_grad():
        model.final_bn.bias.add_(0.5)  # the entry is no longer the network the file holds
    with pytest.raises(RuntimeError, match=r'model\.packed\.safetensors: the packed network'):
        _check_packed(load_packed(path), model, batches, path=path)
