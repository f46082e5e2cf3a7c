"""`oqat zoo build` on a tiny ImageFolder with a small-space supernet and a registered zoo table."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import ModelCard
from zoo_helpers import image_folder, inputs, small_table

import oqatnets
from oqatnets.cli.main import cli
from oqatnets.spec import get_space


def test_zoo_build_extracts_recalibrates_evaluates_and_saves(tmp_path):
    torch.manual_seed(0)
    supernet = oqatnets.create_supernet(2, space='small', num_classes=3)
    supernet.set_max_subnet()
    supernet.train()
    with torch.no_grad():
        supernet(inputs(4))  # initialise every step size
    supernet_dir = oqatnets.save_pretrained(supernet.eval(), tmp_path / 'supernet')
    space = get_space('small')
    specs = {'oqat_zb_2bit_s': space.smallest(2, 28), 'oqat_zb_2bit_l': space.largest(2, 32)}
    for name, spec in specs.items():
        oqatnets.register_zoo_table(small_table(name, spec, num_classes=3, mean=[0.485, 0.456, 0.406],
                                                std=[0.229, 0.224, 0.225], crop_pct=0.875))
    oqatnets.register_zoo_table(small_table('oqat_zb_3bit_other', space.smallest(3, 32), num_classes=3))
    data = image_folder(tmp_path / 'data', per_class=3)
    out = tmp_path / 'zoo'
    result = CliRunner().invoke(cli, ['zoo', 'build', f'local-dir:{supernet_dir}', '--data', str(data), str(out),
                                      '--calib-images', '6', '--calib-batch', '3', '--batch-size', '4', '--json'])
    assert result.exit_code == 0, result.output
    rows = {r['name']: r for r in json.loads(result.output)}
    assert set(rows) == {'oqat_zb_2bit_s.in1k', 'oqat_zb_2bit_l.in1k'}  # only this supernet's bit-width
    for name, spec in specs.items():
        folder = out / f'{name}.in1k'
        config = json.loads((folder / 'config.json').read_text())
        assert config['model_args']['spec'] == str(spec)
        entry_cfg = oqatnets.get_pretrained_cfg(name)  # the build makes the entry's weights: its name is theirs
        assert (config['pretrained_cfg']['hf_hub_id'], config['pretrained_cfg']['tag']) == (entry_cfg.hf_hub_id, 'in1k')
        assert config['pretrained_cfg']['top1'] == rows[f'{name}.in1k']['top1']
        assert 'measured by oqat zoo build' in config['pretrained_cfg']['metrics_source']
        assert '(population mode)' in config['pretrained_cfg']['metrics_source']  # the small recipe's calibration
        card = ModelCard.load(folder / 'README.md').data
        top1 = next(r for r in card.eval_results if r.metric_name.startswith('Top-1'))
        assert top1.metric_value == pytest.approx(rows[f'{name}.in1k']['top1'], abs=1e-3)
        assert top1.dataset_split == 'validation' and top1.dataset_args['num_images'] > 0
        assert (folder / 'model.packed.safetensors').is_file()
        built = oqatnets.create_model(f'local-dir:{folder}', pretrained=True).eval()
        reference = supernet.get_subnet(spec)
        # same weights and steps as the supernet; only the BN statistics were recalibrated
        for key, value in reference.state_dict().items():
            if 'running' not in key and 'num_batches' not in key:
                assert torch.equal(built.state_dict()[key], value), key
        assert not torch.equal(built.final_bn.running_mean, reference.final_bn.running_mean)
        assert config['pretrained_cfg']['supernet'] == f'local-dir:{supernet_dir}'  # the supernet used, not the row's
    table = json.loads((out / 'zoo.json').read_text())
    assert {r['name'] for r in table['models']} == set(rows)
    assert {r['supernet'] for r in table['models']} == {f'local-dir:{supernet_dir}'}
    assert all(r['sha256']['model.safetensors'] for r in table['models'])
    oqatnets.register_zoo_table(out / 'zoo.json')
    assert 'oqat_zb_2bit_s.in1k' in oqatnets.list_pretrained('oqat_zb_*')
    # an explicit mode is honoured: the authors' per-batch statistics give other BN statistics
    result = CliRunner().invoke(cli, ['zoo', 'build', f'local-dir:{supernet_dir}', '--data', str(data), str(tmp_path / 'b'),
                                      '--calib-images', '6', '--calib-batch', '3', '--calibration-mode', 'batch', '--json'])
    assert result.exit_code == 0, result.output
    folder = tmp_path / 'b' / 'oqat_zb_2bit_l.in1k'
    assert '(batch mode)' in json.loads((folder / 'config.json').read_text())['pretrained_cfg']['metrics_source']
    by_batch = oqatnets.create_model(f'local-dir:{folder}', pretrained=True)
    by_population = oqatnets.create_model(f'local-dir:{out / "oqat_zb_2bit_l.in1k"}', pretrained=True)
    assert not torch.equal(by_batch.final_bn.running_var, by_population.final_bn.running_var)


def test_zoo_build_refuses_more_calibration_images_than_there_are(tmp_path):
    supernet = oqatnets.create_supernet(2, space='small', num_classes=3)
    supernet.train()(inputs(4))
    supernet_dir = oqatnets.save_pretrained(supernet.eval(), tmp_path / 'supernet')
    oqatnets.register_zoo_table(small_table('oqat_zbc_2bit_s', get_space('small').smallest(2, 28), num_classes=3))
    data = image_folder(tmp_path / 'data', per_class=1)
    result = CliRunner().invoke(cli, ['zoo', 'build', f'local-dir:{supernet_dir}', '--data', str(data),
                                      str(tmp_path / 'o'), '--calib-images', '5000'])
    assert result.exit_code == 2 and 'calib_images=5000' in result.output and 'has 3 training images' in result.output
    assert not (tmp_path / 'o').exists()


def test_zoo_build_refuses_a_subnet(tmp_path):
    from zoo_helpers import small_net
    folder = oqatnets.save_pretrained(small_net(2), tmp_path / 'net')
    data = image_folder(tmp_path / 'data', per_class=1)
    result = CliRunner().invoke(cli, ['zoo', 'build', f'local-dir:{folder}', '--data', str(data), str(tmp_path / 'o')])
    assert result.exit_code == 2 and 'is not a supernet' in result.output
