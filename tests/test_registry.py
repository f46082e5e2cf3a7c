"""Registry, names, zoo tables and timm integration (no forward passes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from zoo_helpers import small_spec, small_table

import oqatnets
from oqatnets import registry
from oqatnets.errors import InvalidFileError
from oqatnets.spec import SubnetSpec

SML = {4: {'s': (152, 68.360), 'm': (184, 168.057), 'l': (216, 286.910)},
       3: {'s': (152, 73.368), 'm': (192, 174.790), 'l': (212, 292.019)},
       2: {'s': (160, 87.848), 'm': (208, 199.504), 'l': (220, 289.256)}}


def _published_rows():
    table = json.loads(registry.zoo_data_file('models.json').read_text())
    return [row for row in table['models'] if 'spec' in row]


def test_builtin_table_has_the_19_pareto_subnets_and_3_supernets():
    rows = _published_rows()
    assert len(rows) == 19
    for row in rows:
        spec = SubnetSpec.parse(row['spec'])
        arch = row['name'].split('.')[0]
        assert arch == f'oqat_{spec.bits}bit_r{spec.resolution}_{round(row["reported_macs"])}m'
    assert oqatnets.list_models('oqat_supernet_*') == [f'oqat_supernet_mbv3_w{b}a{b}' for b in (2, 3, 4)]


@pytest.mark.parametrize('bits', [2, 3, 4])
@pytest.mark.parametrize('size', ['s', 'm', 'l'])
def test_sml_aliases_pick_the_spec_subnets(bits, size):
    resolution, macs = SML[bits][size]
    cfg = oqatnets.get_pretrained_cfg(f'oqat_{bits}bit_{size}')
    assert cfg.input_size == (3, resolution, resolution) and cfg.bits == bits
    assert cfg.profile['macs'] == pytest.approx(macs, abs=5e-4)


def test_profile_numbers_come_from_the_code_and_match_the_readme():
    for row in _published_rows():
        prof = oqatnets.get_pretrained_cfg(row['name']).profile
        assert prof['macs'] == pytest.approx(row['reported_macs'], abs=5e-4), row['name']
        assert prof['arch_params'] == pytest.approx(row['reported_params'], abs=5e-4), row['name']  # README Params
        assert prof['bitops'] > 0 and prof['size_mbit'] > 0


def test_every_entry_records_what_the_spec_asks_for():
    cfg = oqatnets.get_pretrained_cfg('oqat_2bit_m')
    assert cfg.architecture == 'oqat_2bit_r208_200m' and cfg.tag == 'in1k'
    assert cfg.spec == str(SubnetSpec.parse(cfg.spec)) and cfg.space == 'imagenet'
    assert (cfg.crop_pct, cfg.interpolation) == (0.875, 'bilinear')
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert cfg.top1 == 59.78 and 'README' in cfg.metrics_source
    assert cfg.license == 'apache-2.0' and cfg.supernet == 'oqat_supernet_mbv3_w2a2'
    assert cfg.sha256 == {'model.safetensors': None, 'model.packed.safetensors': None}
    assert cfg.hf_hub_id == 'oqatnets/oqat_2bit_r208_200m.in1k'
    assert not cfg.is_published


def test_hub_org_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv('OQATNETS_HUB_ORG', 'mirror-org')
    assert oqatnets.get_pretrained_cfg('oqat_3bit_l.in1k').hf_hub_id == 'mirror-org/oqat_3bit_r212_292m.in1k'


def test_names_tags_and_aliases_resolve():
    assert registry.resolve_model_name('oqat_2bit_m') == ('oqat_2bit_r208_200m', 'in1k')
    assert registry.resolve_model_name('oqat_2bit_r208_200m.in1k') == ('oqat_2bit_r208_200m', 'in1k')
    assert registry.resolve_model_name('oqa_mbv3_d234_e346_k357_w1.0_b4') == ('oqat_supernet_mbv3_w4a4', 'in1k')
    assert oqatnets.is_model('oqa_mbv3_d234_e346_k357_w1.0_b3.in1k')
    assert not oqatnets.is_model('oqat_2bit_m.ft_cifar')
    with pytest.raises(RuntimeError, match="no tag 'ft_cifar'"):
        registry.resolve_model_name('oqat_2bit_m.ft_cifar')


def test_unknown_name_suggests_close_matches():
    with pytest.raises(RuntimeError, match=r"unknown model 'oqat_2bit_mm'; did you mean .*oqat_2bit_m"):
        oqatnets.create_model('oqat_2bit_mm')
    with pytest.raises(ValueError, match='local-dir:'):
        oqatnets.create_model('some/folder')


def test_list_models_wildcards_excludes_and_tags():
    assert oqatnets.list_models('oqat_?bit_m') == ['oqat_2bit_m', 'oqat_3bit_m', 'oqat_4bit_m']
    names = oqatnets.list_models('oqat_4bit_*', exclude_filters=['*_r*'])
    assert names == ['oqat_4bit_l', 'oqat_4bit_m', 'oqat_4bit_s']
    tagged = oqatnets.list_models('oqat_4bit_r1*', include_tags=True)
    assert tagged and all(n.endswith('.in1k') for n in tagged)
    assert oqatnets.list_pretrained('oqat_*bit_r*') == []  # nothing published in the builtin table


def test_register_zoo_table_from_dict_and_file(tmp_path):
    spec = small_spec(2)
    added = oqatnets.register_zoo_table(small_table('oqat_reg_2bit_x.ft_fmnist', spec, aliases=['oqat_reg_x'],
                                                    sha256={'model.safetensors': 'ab' * 32}))
    assert added == ['oqat_reg_2bit_x.ft_fmnist']
    cfg = oqatnets.get_pretrained_cfg('oqat_reg_x')
    assert cfg.space == 'small' and cfg.input_size == (3, 32, 32) and cfg.num_classes == 10 and cfg.is_published
    assert 'oqat_reg_2bit_x.ft_fmnist' in oqatnets.list_pretrained('oqat_reg_*')
    model = oqatnets.create_model('oqat_reg_x')
    assert model.spec == spec and model.space.name == 'small' and model.num_classes == 10
    path = tmp_path / 'zoo.json'
    path.write_text(json.dumps(small_table('oqat_reg_supernet_w3a3', bits=3)))
    assert oqatnets.register_zoo_table(path) == ['oqat_reg_supernet_w3a3.in1k']
    assert type(oqatnets.create_model('oqat_reg_supernet_w3a3')).__name__ == 'OQATSupernet'
    with pytest.raises(InvalidFileError, match='is a folder; point at the zoo'):
        oqatnets.register_zoo_table(tmp_path)


@pytest.mark.parametrize('table, message', [
    ({'models': [{'name': 'x_bad'}]}, 'needs "spec"'),
    ({'models': [{'name': 'x_bad', 'bits': 2, 'colour': 'red'}]}, 'unknown fields'),
    ({'schema': 'other', 'models': []}, 'not an oqatnets-zoo table'),
    ({'models': [{'name': 'x_bad', 'spec': 'r32_nonsense'}]}, "<dict>: row 'x_bad': cannot parse subnet spec"),
    ({'models': [{'name': 'x_bad', 'spec': 5}]}, "<dict>: row 'x_bad': spec must be a SubnetSpec"),
    ({'models': [{'name': 'x_bad', 'bits': 'two'}]}, "<dict>: row 'x_bad': invalid literal"),
    ({'models': [{'name': 'oqat_2bit_m.evil', 'bits': 2}]}, 'would shadow oqat_2bit_m, an alias of oqat_2bit_r208_200m'),
    ({'models': [{'name': 'x_new', 'bits': 2, 'aliases': ['oqat_4bit_l']}]}, 'alias oqat_4bit_l of x_new.* already names'),
    ({'models': [{'name': 'x_new', 'bits': 2, 'aliases': ['oqat_supernet_mbv3_w2a2']}]}, 'already names'),
    ({'models': [{'name': 'x_a', 'bits': 2, 'aliases': ['x_same']}, {'name': 'x_b', 'bits': 2, 'aliases': ['x_same']}]},
     'alias x_same of x_b.* already names x_a'),
    # helper 11 (2026-11-30): a built-in name given to another network, and rows predict or a load would crash on
    ({'models': [{'name': 'oqat_2bit_r208_200m.in1k', 'space': 'small', 'spec': str(small_spec(4)), 'num_classes': 10}]},
     r"would replace the built-in oqat_2bit_r208_200m.in1k \(2-bit, 1000 classes"),
    ({'models': [{'name': 'x_dup', 'bits': 2}, {'name': 'x_dup', 'bits': 4}]}, 'x_dup.* named by more than one row'),
    ({'models': [{'name': 'x_bad', 'bits': 2, 'top1': 150}]}, r"row 'x_bad': top1 150 is not a percentage"),
    ({'models': [{'name': 'x_bad', 'bits': 2, 'top1': 'high'}]}, 'is not a percentage'),
    ({'models': [{'name': 'x_bad', 'bits': 2, 'top1': 70, 'top5': 60}]}, 'top5 60 is below top1 70'),
    ({'models': [{'name': 'x_bad', 'bits': 2, 'num_classes': 10, 'label_names': ['a', 'b']}]}, '2 names for 10 classes'),
    ({'models': [{'name': 'x_bad', 'bits': 2, 'std': [0, 1, 1]}]}, 'std .* is not a list of positive numbers'),
    ({'models': [{'name': 'x_bad', 'space': 'small', 'spec': str(small_spec(2)), 'input_size': [3, 24, 24]}]},
     r'input_size \[3, 24, 24\] is not \[in_chans, resolution, resolution\] of its spec'),
])
def test_bad_tables_fail_with_a_clear_message(table, message):
    before = oqatnets.list_models()
    with pytest.raises(ValueError, match=message):
        oqatnets.register_zoo_table(table)
    assert oqatnets.list_models() == before  # a refused table registers no row


def test_a_row_may_replace_a_built_in_entry_with_the_same_network(tmp_path):
    """What `oqat zoo build` writes: the built-in entry's own network, now with a file and its hash."""
    entry = registry.get_entry('oqat_2bit_r208_200m.in1k')
    row = {'name': entry.name, 'spec': str(entry.spec), 'num_classes': 1000, 'top1': 60.0, 'metrics_source': 'a build'}
    try:
        oqatnets.register_zoo_table({'models': [row]})
        assert oqatnets.get_pretrained_cfg('oqat_2bit_m').top1 == 60.0
    finally:
        oqatnets.register_zoo_table({'models': [dict(entry.row)]})


def test_zoo_table_env_var_is_read_on_first_use(tmp_path):
    a, b = tmp_path / 'a.json', tmp_path / 'b.json'
    a.write_text(json.dumps(small_table('oqat_env_a', small_spec(2))))
    b.write_text(json.dumps(small_table('oqat_env_b', small_spec(3, seed=1))))
    env = {**os.environ, 'OQATNETS_ZOO_TABLE': os.pathsep.join([str(a), str(b)])}
    code = 'import oqatnets; print(oqatnets.list_models("oqat_env_*"))'
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['oqat_env_a', 'oqat_env_b']"


def test_two_env_tables_may_not_define_one_name_differently(tmp_path):
    """Tables listed in OQATNETS_ZOO_TABLE are peers: one silently replacing the other's hashes would make
    the first's good weights fail as corrupt. The same row twice is fine; a different one names both files."""
    a, b, same = tmp_path / 'a.json', tmp_path / 'b.json', tmp_path / 'same.json'
    a.write_text(json.dumps(small_table('oqat_env_dup', small_spec(2), sha256={'model.safetensors': '1' * 64})))
    same.write_text(a.read_text())
    b.write_text(json.dumps(small_table('oqat_env_dup', small_spec(2), sha256={'model.safetensors': '2' * 64})))
    code = 'import oqatnets; print(oqatnets.list_models("oqat_env_*"))'
    for tables, ok in (([a, same], True), ([a, b], False)):
        env = {**os.environ, 'OQATNETS_ZOO_TABLE': os.pathsep.join(map(str, tables))}
        result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
        assert (result.returncode == 0) == ok, result.stderr
        if not ok:
            assert f'{a} and {b} both define oqat_env_dup.in1k, differently' in result.stderr
    env = {**os.environ, 'OQATNETS_ZOO_TABLE': os.pathsep.join([str(a), str(b)])}
    result = subprocess.run([sys.executable, '-c', 'from oqatnets.cli.main import cli; cli()', 'list'], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2 and 'both define oqat_env_dup.in1k' in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_timm_builds_the_same_model_with_the_entry_transform():
    timm = pytest.importorskip('timm')
    model = timm.create_model('oqat_2bit_m')
    assert isinstance(model, oqatnets.OQATNet)
    assert model.spec == oqatnets.create_model('oqat_2bit_m').spec
    cfg = timm.data.resolve_data_config({}, model=model)
    assert tuple(cfg['input_size']) == (3, 208, 208) and cfg['crop_pct'] == 0.875
    assert cfg['interpolation'] == 'bilinear' and tuple(cfg['mean']) == (0.485, 0.456, 0.406)
    transform = timm.data.create_transform(**cfg)
    sizes = [getattr(t, 'size', None) for t in transform.transforms]
    assert 238 in sizes or 237 in sizes or [237] in sizes  # resize to ceil(208 / 0.875)
    assert 'oqat_2bit_m' in timm.list_models('oqat_*')


def test_timm_sees_tables_registered_later():
    timm = pytest.importorskip('timm')
    oqatnets.register_zoo_table(small_table('oqat_late_2bit', small_spec(2)))
    assert timm.create_model('oqat_late_2bit').space.name == 'small'


def test_hubconf_exposes_the_registry_entrypoints():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'hubconf.py'
    spec = importlib.util.spec_from_file_location('hubconf_under_test', path)
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert {'torch', 'timm', 'huggingface_hub', 'safetensors'} <= set(hubconf.dependencies)
    assert all(importlib.util.find_spec(name) for name in hubconf.dependencies)
    model = hubconf.oqat_3bit_s(num_classes=7)
    assert model.spec.resolution == 152 and model.num_classes == 7
    assert callable(hubconf.oqat_supernet_mbv3_w4a4)
