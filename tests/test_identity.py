"""One owner per fact: each silent wrong result of round 1 is pinned here (issue "One owner for every fact").

A model owns its bit-width, spec and rebuild arguments; a derived model (other bits, spec, head or
input, a subnet, an inherited net) carries a derived cfg without its source's identity; weights
files record the model they hold and refuse to load into another.
"""
from __future__ import annotations

import json
import re

import pytest
import safetensors
import safetensors.torch
import timm
import torch
from zoo_helpers import RESOLUTION, image_folder, inputs, small_net, small_table

import oqatnets
from oqatnets._io import sha256_file
from oqatnets.errors import IncompatibleWeightsError, InvalidArgumentError, OQATNetsError
from oqatnets.factory import build_model
from oqatnets.features import features_model
from oqatnets.quant import iter_quant_convs
from oqatnets.training import inherit_bits
from oqatnets.weights import write_safetensors

S = 'r32_k' + '3' * 20 + '_e' + '3' * 20 + '_d22222_b{}'
IDENTITY = ('hf_hub_id', 'top1', 'top5', 'metrics_source', 'aliases', 'description', 'tag', 'file', 'source')


def _initialised(model: torch.nn.Module) -> torch.nn.Module:
    model.train()
    with torch.no_grad():
        model(torch.randn(2, model.in_chans, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0)))
    return model.eval()


def _no_identity(cfg: dict) -> None:
    assert not any(cfg.get(k) for k in IDENTITY), {k: cfg.get(k) for k in IDENTITY if cfg.get(k)}


def test_set_bits_updates_spec_profile_and_cfg():
    net = oqatnets.create_model('oqat_2bit_m', spec=S.format(4), space='small', num_classes=3)
    oqatnets.set_bits(net, 2)  # the free function, not the method
    assert net.bits == 2 and net.spec.bits == 2 and str(net.spec) == S.format(2)
    assert oqatnets.profile(net).bitops == oqatnets.profile(S.format(2), space='small', num_classes=3).bitops
    assert net.pretrained_cfg['bits'] == 2 and net.pretrained_cfg['spec'] == S.format(2)
    assert net.model_args() == {'space': 'small', 'num_classes': 3, 'in_chans': 3, 'spec': S.format(2)}


def test_a_model_built_with_other_arguments_drops_the_entry_identity():
    entry = oqatnets.create_model('oqat_2bit_m')
    assert entry.pretrained_cfg['architecture'] == 'oqat_2bit_r208_200m'
    assert entry.pretrained_cfg['hf_hub_id'] == 'oqatnets/oqat_2bit_r208_200m.in1k'
    assert entry.pretrained_cfg.get('top1') is None, 'no weights loaded: no accuracy to claim'
    for kwargs in ({'spec': S.format(2), 'space': 'small'}, {'num_classes': 10}, {'in_chans': 1}):
        cfg = oqatnets.create_model('oqat_2bit_m', **kwargs).pretrained_cfg
        _no_identity(cfg)
        assert cfg['architecture'] == 'oqatnet' and cfg['interpolation'] == 'bilinear'
    cfg = oqatnets.create_model('oqat_2bit_m', spec=S.format(2), space='small', num_classes=3).pretrained_cfg
    assert cfg['input_size'] == [3, 32, 32] and cfg['num_classes'] == 3 and cfg['space'] == 'small'


def test_save_pretrained_of_a_derived_net_claims_nothing_of_the_entry(tmp_path):
    net2 = _initialised(oqatnets.create_model('oqat_2bit_m', spec=S.format(2), space='small', num_classes=3))
    folder = oqatnets.save_pretrained(net2, tmp_path / 'd')
    config = json.loads((folder / 'config.json').read_text())
    _no_identity({k: v for k, v in config['pretrained_cfg'].items() if k != 'sha256'})
    card = (folder / 'README.md').read_text()
    assert '59.780' not in card and 'Top-1:' not in card and 'oqat_2bit_r208_200m' not in card
    assert config['architecture'] == 'oqatnet'
    rebuilt = oqatnets.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(inputs()), net2(inputs()))


def test_a_subnet_cfg_is_derived_from_its_supernet():
    supernet = oqatnets.create_supernet(bits=2)
    spec = supernet.space.smallest(2, 128)
    cfg = supernet.get_subnet(spec).pretrained_cfg
    _no_identity(cfg)
    assert cfg['architecture'] == 'oqatnet' and cfg['input_size'] == [3, 128, 128] and cfg['bits'] == 2
    assert cfg['spec'] == str(spec) and cfg['supernet'] == 'oqatnets/oqat_supernet_mbv3_w2a2.in1k'


@pytest.fixture()
def published(tmp_path):
    """A registered entry whose table names its weights (hub id, sha256, reported top-1), published in a temporary
    Hub cache, and a file of other weights."""
    model = small_net(2)
    folder = oqatnets.save_pretrained(model, tmp_path / 'entry')
    oqatnets.publish_to_cache(folder, 'org/idtest', cache_dir=tmp_path / 'hub')
    sha = json.loads((folder / 'config.json').read_text())['pretrained_cfg']['sha256']
    oqatnets.register_zoo_table(small_table('oqat_idtest_2bit', model.spec, hf_hub_id='org/idtest', top1=71.5,
                                            metrics_source='the table', sha256=sha))
    with torch.no_grad():
        model.classifier.weight.mul_(2)  # the same net, other weights
    other = oqatnets.save_pretrained(model, tmp_path / 'other')
    return folder, other, tmp_path / 'hub'


def test_other_weights_than_the_entrys_get_a_derived_cfg(published):
    folder, other, hub = published
    own = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub,
                                pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors')))
    assert own.pretrained_cfg['hf_hub_id'] == 'org/idtest' and own.pretrained_cfg['top1'] == 71.5, \
        'the very file the table hashes: still the entry'
    weights = other / 'model.safetensors'
    for model in (oqatnets.create_model('oqat_idtest_2bit', checkpoint_path=weights),
                  oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub, checkpoint_path=weights),
                  oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub,
                                        pretrained_cfg_overlay=dict(file=str(weights)))):
        _no_identity(model.pretrained_cfg)
        assert model.pretrained_cfg['architecture'] == 'oqatnet' and model.pretrained_cfg['mean'] == [0.5] * 3
        saved = oqatnets.save_pretrained(model, folder.parent / 'resaved')
        card = (saved / 'README.md').read_text()
        assert 'Top-1:' not in card and 'org/idtest' not in card


def test_a_file_overlaid_on_a_folder_is_other_weights_not_a_corrupt_file(published):
    """``file=`` over a ``local-dir:`` model: the folder's hashes are of its own weights; a good file of other
    weights is not called corrupt, it loads with a derived cfg, and the folder's own file keeps the identity."""
    folder, other, _ = published
    for load in (lambda **kw: oqatnets.create_model(f'local-dir:{folder}', pretrained=True, **kw),
                 lambda **kw: timm.create_model(f'local-dir:{folder}', pretrained=True, **kw)):
        model = load(pretrained_cfg_overlay=dict(file=str(other / 'model.safetensors')))
        assert not model.pretrained_cfg.get('top1') and not model.pretrained_cfg.get('sha256')
        assert torch.equal(model.classifier.weight, oqatnets.create_model(f'local-dir:{other}', pretrained=True)
                           .classifier.weight)
        own = load(pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors')))
        assert own.pretrained_cfg['sha256'], 'the very file the folder hashes: still the folder\'s weights'


def test_timm_checkpoint_path_and_load_state_dict_drop_the_identity(published):
    """timm's ``checkpoint_path`` is timm's own tensor loader, which cannot read the file's record: its cfg no
    longer names the entry (other bits are refused there by the tensors themselves: below)."""
    _, other, hub = published
    model = timm.create_model('oqat_idtest_2bit', checkpoint_path=str(other / 'model.safetensors'))
    _no_identity(model.pretrained_cfg)
    four = _initialised(oqatnets.create_model('oqat_idtest_2bit', bits=4))
    path = oqatnets.save_pretrained(four, other.parent / 'four') / 'model.safetensors'
    with pytest.raises(IncompatibleWeightsError):  # the checked way through timm (README)
        timm.create_model('oqat_idtest_2bit', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert model.pretrained_cfg['mean'] == [0.5] * 3  # the data config stays
    entry = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub)
    assert entry.pretrained_cfg['top1'] == 71.5
    entry.load_state_dict(oqatnets.create_model('oqat_idtest_2bit', checkpoint_path=other / 'model.safetensors')
                          .state_dict())
    _no_identity(entry.pretrained_cfg)


def test_saving_weights_changed_in_place_claims_nothing_of_the_entry(published):
    """Trained in a user's own loop after loading: save_pretrained sees that the weights are not the file the
    cfg hashes, and writes a derived cfg and card; the unchanged entry saves as itself."""
    folder, _, hub = published
    entry = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub)
    again = json.loads((oqatnets.save_pretrained(entry, folder.parent / 'again') / 'config.json').read_text())
    assert again['pretrained_cfg']['tag'] and again['pretrained_cfg']['top1'] == 71.5
    assert 'Top-1: 71.500 % (the table)' in (folder.parent / 'again' / 'README.md').read_text()
    with torch.no_grad():
        entry.classifier.bias.add_(1)
    saved = oqatnets.save_pretrained(entry, folder.parent / 'trained')
    cfg = json.loads((saved / 'config.json').read_text())['pretrained_cfg']
    _no_identity(cfg)
    assert cfg['mean'] == [0.5] * 3 and cfg['architecture'] == 'oqatnet'
    card = (saved / 'README.md').read_text()
    assert 'Top-1:' not in card and 'idtest' not in card and f"'local-dir:{saved}'" in card
    assert entry.pretrained_cfg['top1'] == 71.5, 'saving changes nothing of the model itself'


def test_packed_files_of_weights_changed_in_place_or_reheaded_claim_nothing_of_the_entry(published, tmp_path):
    """save_packed writes the cfg of the weights it packs, as save_pretrained does: an unchanged entry packs as
    itself; trained in place or given a new classifier (even of as many classes), it packs a derived cfg."""
    _, _, hub = published
    entry = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub)
    oqatnets.save_packed(entry, tmp_path / 'same.safetensors')
    assert oqatnets.load_packed(tmp_path / 'same.safetensors').pretrained_cfg['top1'] == 71.5
    with torch.no_grad():
        entry.classifier.bias.add_(1)
    oqatnets.save_packed(entry, tmp_path / 'trained.safetensors')
    loaded = oqatnets.load_packed(tmp_path / 'trained.safetensors').pretrained_cfg
    assert loaded.pop('file') == str(tmp_path / 'trained.safetensors')  # a loaded packed file names itself
    _no_identity(loaded)
    assert entry.pretrained_cfg['top1'] == 71.5, 'packing changes nothing of the model itself'
    fresh = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub)
    fresh.reset_classifier(fresh.num_classes)
    _no_identity(fresh.pretrained_cfg)
    assert fresh.pretrained_cfg['mean'] == [0.5] * 3


def test_a_figure_measured_through_another_transform_is_not_carried(published, tmp_path):
    """An overlay or a save that changes the transform (crop, interpolation, mean, std) keeps the weights' identity
    but drops the measured figures: they were measured through the transform the cfg no longer describes."""
    _, _, hub = published
    same = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub, pretrained_cfg_overlay=dict(
        mean=(0.5, 0.5, 0.5), license='mit'))  # the transform it already had: the figure stands
    assert same.pretrained_cfg['top1'] == 71.5
    for overlay in (dict(crop_pct=0.5), dict(interpolation='nearest'), dict(mean=(0.4, 0.5, 0.5)), dict(crop_mode='squash')):
        model = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub, pretrained_cfg_overlay=overlay)
        assert model.pretrained_cfg['hf_hub_id'] == 'org/idtest', 'the same weights'
        assert not any(model.pretrained_cfg.get(k) for k in ('top1', 'top5', 'metrics_source')), overlay
    entry = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub)
    saved = oqatnets.save_pretrained(entry, tmp_path / 'other-std', pretrained_cfg={'std': [0.3] * 3})
    cfg = json.loads((saved / 'config.json').read_text())['pretrained_cfg']
    assert 'top1' not in cfg and cfg['std'] == [0.3] * 3
    assert 'Top-1:' not in (saved / 'README.md').read_text()


def test_a_cfg_that_records_no_hash_vouches_only_for_the_weights_loaded_from_it(tmp_path):
    """A table row without sha256: a model built without its weights, or whose weights changed in place after
    loading (here BN statistics in a train-mode forward), saves as derived; loaded and unchanged, as the entry."""
    model = small_net(2)
    weights = oqatnets.save_pretrained(model, tmp_path / 'w') / 'model.safetensors'
    oqatnets.register_zoo_table(small_table('oqat_nohash_2bit', model.spec, hf_hub_id='org/nohash', top1=77.0,
                                            top5=98.0, file=str(weights)))
    fresh = oqatnets.create_model('oqat_nohash_2bit')
    saved = oqatnets.save_pretrained(fresh, tmp_path / 'fresh', packed=False)
    _no_identity(json.loads((saved / 'config.json').read_text())['pretrained_cfg'])
    assert 'nohash' not in (saved / 'README.md').read_text()
    loaded = oqatnets.create_model('oqat_nohash_2bit', pretrained=True)
    cfg = json.loads((oqatnets.save_pretrained(loaded, tmp_path / 'same') / 'config.json').read_text())['pretrained_cfg']
    assert (cfg['hf_hub_id'], cfg['top1'], cfg['top5']) == ('org/nohash', 77.0, 98.0)
    loaded.train()
    with torch.no_grad():
        loaded(inputs())
    saved = oqatnets.save_pretrained(loaded.eval(), tmp_path / 'changed')
    _no_identity(json.loads((saved / 'config.json').read_text())['pretrained_cfg'])
    assert 'nohash' not in (saved / 'README.md').read_text() and '77.0' not in (saved / 'README.md').read_text()


def test_new_metrics_replace_every_old_figure(published, tmp_path):
    """Metrics passed to save_pretrained replace top-1, top-5 and their source together, and a transform change
    drops the old figures even when the overrides name a new source."""
    folder, _, hub = published
    sha = json.loads((folder / 'config.json').read_text())['pretrained_cfg']['sha256']
    oqatnets.register_zoo_table(small_table('oqat_idtest_2bit', oqatnets.get_pretrained_cfg('oqat_idtest_2bit').spec,
                                            hf_hub_id='org/idtest', top1=71.5, top5=99.0, sha256=sha))
    entry = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub)
    assert entry.pretrained_cfg['top5'] == 99.0
    cfg = json.loads((oqatnets.save_pretrained(entry, tmp_path / 'a', metrics={'top1': 10.0, 'split': 'test', 'images': 3,
                                                                                'source': 'a run'})
                      / 'config.json').read_text())['pretrained_cfg']
    assert cfg['top1'] == 10.0 and 'top5' not in cfg and cfg['metrics_source'] == 'a run (test split, 3 images)'
    cfg = json.loads((oqatnets.save_pretrained(entry, tmp_path / 'b', pretrained_cfg={'interpolation': 'nearest'})
                      / 'config.json').read_text())['pretrained_cfg']
    assert 'top1' not in cfg and 'top5' not in cfg and 'metrics_source' not in cfg
    with pytest.raises(InvalidArgumentError, match="measured on 'other' but dataset='fashion-mnist'"):
        oqatnets.save_pretrained(entry, tmp_path / 'c', dataset='fashion-mnist',
                                 metrics={'top1': 1.0, 'dataset': 'other', 'source': 'x'})
    assert not (tmp_path / 'c').exists()


@pytest.mark.parametrize('overlay', [dict(top1=99.9), dict(top5=100.0), dict(metrics_source='measured on the test split')])
def test_an_overlay_cannot_give_a_measured_figure(published, overlay):
    """A figure on a cfg was measured by the code; an overlay typing one in (timm's path too) is refused."""
    _, _, hub = published
    with pytest.raises(InvalidArgumentError, match=f'cannot set {next(iter(overlay))}: .* measured, not given'):
        oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub, pretrained_cfg_overlay=overlay)
    with pytest.raises(InvalidArgumentError, match='measured, not given'):
        timm.create_model('oqat_idtest_2bit', pretrained=True, pretrained_cfg_overlay=overlay)


@pytest.mark.parametrize('cfg', [{'top1': 88.0}, {'metrics_source': 'measured'}, {'hf_hub_id': 'org/idtest'},
                                 {'tag': 'fmnist'}, {'sha256': {'model.safetensors': '0' * 64}}, {'aliases': ['x']}])
def test_save_pretrained_takes_no_name_hashes_or_figures_from_the_caller(published, tmp_path, cfg):
    """``pretrained_cfg=`` sets data fields only, so a derived
    model cannot be saved under its source's hub id, nor with a figure nobody measured."""
    _, _, hub = published
    entry = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub)
    with pytest.raises(InvalidArgumentError, match=f'cannot set {next(iter(cfg))}'):
        oqatnets.save_pretrained(entry, tmp_path / 'out', pretrained_cfg=cfg)
    assert not (tmp_path / 'out').exists()


def test_metrics_without_a_source_are_refused(tmp_path):
    """A figure saved without saying how it was measured would be labelled as measured by oqatnets."""
    with pytest.raises(InvalidArgumentError, match="metrics need a 'source'"):
        oqatnets.save_pretrained(small_net(2), tmp_path / 'm', metrics={'top1': 70.0})
    assert not (tmp_path / 'm').exists()


@pytest.mark.parametrize('value', ['high', -1, 100.5, True])
def test_a_config_whose_figure_is_not_a_percentage_is_refused(value, tmp_path):
    folder = oqatnets.save_pretrained(small_net(2), tmp_path / 'm', metrics={'top1': 50.0, 'source': 'a test'})
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg']['top1'] = value
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(OQATNetsError, match=r'top1 .* is not a percentage'):
        oqatnets.create_model(f'local-dir:{folder}', pretrained=True)


def test_an_overlay_cannot_contradict_the_model(published):
    hub = published[2]
    for overlay, argument in ((dict(bits=4), 'bits='), (dict(spec='r32_k' + '3' * 20 + '_e' + '3' * 20 + '_d22222_b4'), 'spec='),
                              (dict(num_classes=5), 'num_classes='), (dict(input_size=(3, 64, 64)), 'resolution')):
        with pytest.raises(InvalidArgumentError, match=f'cannot set {next(iter(overlay))}.*{argument}'):
            oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub, pretrained_cfg_overlay=overlay)


def test_derive_pretrained_cfg_and_set_resolution_drop_the_identity(published):
    hub = published[2]
    net = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub)
    assert net.pretrained_cfg['top1'] == 71.5
    net.derive_pretrained_cfg()
    _no_identity(net.pretrained_cfg)
    assert net.pretrained_cfg['mean'] == [0.5] * 3 and net.pretrained_cfg['dataset'] == 'fashion-mnist'
    other = oqatnets.create_model('oqat_idtest_2bit', pretrained=True, cache_dir=hub)
    other.set_resolution(24)
    assert other.spec.resolution == 24 and other.pretrained_cfg['input_size'] == [3, 24, 24]
    _no_identity(other.pretrained_cfg)
    assert oqatnets.profile(other).macs < oqatnets.profile(net).macs


@pytest.mark.parametrize('field,value', [('bits', 4), ('spec', S.format(4)), ('num_classes', 7)])
def test_a_config_whose_cfg_contradicts_its_model_args_is_refused(field, value, tmp_path):
    folder = oqatnets.save_pretrained(_initialised(oqatnets.create_model('oqatnet', spec=S.format(2), space='small',
                                                                         num_classes=3)), tmp_path / 'm')
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg'][field] = value
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(oqatnets.errors.InvalidFileError, match=f'config.json contradicts itself: pretrained_cfg.{field}'):
        oqatnets.create_model(f'local-dir:{folder}', pretrained=True)


@pytest.mark.parametrize('path,value', [(('num_classes',), 5), (('quantization', 'bits'), 4),
                                        (('architecture',), 'oqat_supernet'), (('architecture',), 'resnet50'),
                                        (('label_names',), ['x', 'y', 'z']),
                                        (('pretrained_cfg', 'input_size'), [3, 24, 24])])
def test_a_config_whose_top_level_fields_contradict_its_model_args_is_refused(path, value, tmp_path):
    """The fields timm and other Hub tools read (num_classes, architecture, quantization) must describe the model
    model_args build; they were ignored, so the folder claimed one model and loaded another."""
    folder = oqatnets.save_pretrained(_initialised(oqatnets.create_model('oqatnet', spec=S.format(2), space='small',
                                                                         num_classes=3)), tmp_path / 'm')
    config = json.loads((folder / 'config.json').read_text())
    config['label_names'] = config['pretrained_cfg']['label_names'] = ['a', 'b', 'c']
    (config[path[0]] if len(path) == 2 else config)[path[-1]] = value
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(oqatnets.errors.InvalidFileError, match=re.escape(f'contradicts itself: {".".join(path)} is {value!r}')):
        oqatnets.create_model(f'local-dir:{folder}', pretrained=True)


@pytest.mark.parametrize('name', ['../other/model.safetensors', '/etc/passwd', 'model.pth'])
def test_a_weights_file_name_outside_the_folder_is_refused(name, tmp_path):
    folder = oqatnets.save_pretrained(_initialised(oqatnets.create_model('oqatnet', spec=S.format(2), space='small',
                                                                         num_classes=3)), tmp_path / 'm')
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg']['hf_hub_filename'] = name
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(oqatnets.errors.InvalidFileError, match='hf_hub_filename'):
        oqatnets.create_model(f'local-dir:{folder}', pretrained=True)


def test_finetuned_and_recalibrated_folders_claim_nothing_of_their_source(tmp_path):
    """``oqat finetune --resolution`` saves the net at the resolution it trained at; neither command keeps the
    source's accuracy or where it came from."""
    from click.testing import CliRunner

    from oqatnets.cli.main import cli
    source = oqatnets.save_pretrained(small_net(2, num_classes=3), tmp_path / 'src',
                                      metrics={'top1': 88.5, 'source': 'the source run'})
    data = str(image_folder(tmp_path / 'data', size=32))
    runner = CliRunner()
    result = runner.invoke(cli, ['finetune', f'local-dir:{source}', '--data', data, '--out', str(tmp_path / 'ft'),
                                 '--epochs', '1', '--batch-size', '4', '--resolution', '24', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ['calibrate', f'local-dir:{source}', '--data', data, '--out', str(tmp_path / 'cal'),
                                 '--calib-images', '4', '--holdout', '0', '--no-eval', '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    for folder, resolution in ((tmp_path / 'ft' / 'model', 24), (tmp_path / 'cal', RESOLUTION)):
        config = json.loads((folder / 'config.json').read_text())
        cfg = config['pretrained_cfg']
        assert cfg['input_size'] == [3, resolution, resolution] and cfg['spec'].startswith(f'r{resolution}_')
        assert config['model_args']['spec'] == cfg['spec']
        text = (folder / 'config.json').read_text() + (folder / 'README.md').read_text()
        assert 'the source run' not in text and '88.5' not in text
    assert json.loads((tmp_path / 'ft' / 'model' / 'config.json').read_text())['pretrained_cfg']['metrics_source'] \
        .startswith('oqat finetune')
    net = oqatnets.create_model(f'local-dir:{tmp_path / "ft" / "model"}', pretrained=True)
    assert net.spec.resolution == 24 and oqatnets.profile(net).macs < oqatnets.profile(small_net(2, num_classes=3)).macs


def test_a_measured_figure_names_the_split_and_the_images_it_was_measured_on(tmp_path):
    """A card's model-index and the cfg's ``metrics_source`` say which split a top-1 is of: a folder's
    ``test/`` is a test split, its ``val/`` a validation split (the Hub's names), with the image count."""
    from click.testing import CliRunner

    from oqatnets.cli.main import cli
    source = oqatnets.save_pretrained(small_net(2, num_classes=3), tmp_path / 'src')
    with_val = image_folder(tmp_path / 'with_val', size=32)
    with_test = image_folder(tmp_path / 'with_test', size=32)
    (with_test / 'val').rename(with_test / 'test')
    runner = CliRunner()
    for data, split in ((with_val, 'validation'), (with_test, 'test')):
        out = tmp_path / f'cal_{split}'
        result = runner.invoke(cli, ['calibrate', f'local-dir:{source}', '--data', str(data), '--out', str(out),
                                     '--calib-images', '4', '--holdout', '0', '--device', 'cpu'])
        assert result.exit_code == 0, result.output
        assert json.loads((out / 'config.json').read_text())['pretrained_cfg']['metrics_source'].endswith(
            f'({split} split, 12 images)')
        card = (out / 'README.md').read_text()
        assert f'      split: {split}\n' in card and 'num_images: 12' in card


def test_inherited_model_is_derived():
    parent = small_net(4)
    parent.set_pretrained_cfg({**parent.pretrained_cfg, 'hf_hub_id': 'org/parent', 'top1': 90.0})
    child = inherit_bits(parent, 2)
    assert child.spec.bits == 2 and child.pretrained_cfg['bits'] == 2
    _no_identity(child.pretrained_cfg)
    assert parent.pretrained_cfg['hf_hub_id'] == 'org/parent', 'the parent keeps its own identity'


@pytest.mark.parametrize('packed', [True, False])
def test_weights_of_other_bits_are_refused(tmp_path, packed):
    m4 = _initialised(oqatnets.create_model('oqat_2bit_m', spec=S.format(4), space='small', num_classes=3))
    folder = oqatnets.save_pretrained(m4, tmp_path / 'm4')
    path = folder / ('model.packed.safetensors' if packed else 'model.safetensors')
    with pytest.raises(IncompatibleWeightsError, match='spec differ') as info:
        oqatnets.create_model('oqat_2bit_m', spec=S.format(2), space='small', num_classes=3, checkpoint_path=path)
    assert str(path) in str(info.value) and '_b4' in str(info.value) and '_b2' in str(info.value)
    with pytest.raises(IncompatibleWeightsError):  # the same through the folder, asking for other bits
        oqatnets.create_model(f'local-dir:{folder}', pretrained=True, bits=2)
    with pytest.raises(IncompatibleWeightsError, match='space'):
        oqatnets.create_model(f'local-dir:{folder}', pretrained=True, space='imagenet')
    same = oqatnets.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(same(inputs()), m4(inputs()))



def _small(bits: int) -> torch.nn.Module:
    return oqatnets.create_model('oqatnet', spec=S.format(bits), space='small', num_classes=3)


def test_a_state_dict_of_other_bits_is_refused_by_load_state_dict_and_timm(tmp_path):
    """The tensors say what their steps are, so torch's own ``load_state_dict`` and timm's ``checkpoint_path=``,
    which read no file record, refuse a 4-bit model's weights in a 2-bit model, before copying anything."""
    m4 = _initialised(_small(4))
    path = oqatnets.save_pretrained(m4, tmp_path / 'm4') / 'model.safetensors'
    state = safetensors.torch.load_file(path)
    two = _initialised(_small(2))
    before = {k: v.clone() for k, v in two.state_dict().items()}
    with pytest.raises(IncompatibleWeightsError, match=r'step_initialized says these step sizes are 4-bit.*is 2-bit'):
        two.load_state_dict(state)
    assert all(torch.equal(v, before[k]) for k, v in two.state_dict().items()), 'a refused load copies nothing'
    with pytest.raises(IncompatibleWeightsError):  # one submodule alone
        two.final_conv.load_state_dict({k[len('final_conv.'):]: v for k, v in state.items()
                                        if k.startswith('final_conv.')})
    with pytest.raises(IncompatibleWeightsError):
        timm.create_model('oqatnet', spec=S.format(2), space='small', num_classes=3, checkpoint_path=str(path))
    with pytest.raises(IncompatibleWeightsError, match='is 32-bit'):  # nor into the float network
        _small(32).load_state_dict(state)
    four = timm.create_model('oqatnet', spec=S.format(4), space='small', num_classes=3, checkpoint_path=str(path))
    m4.set_bits(32)  # quantization off for a float check: its steps are still the 4-bit ones, and load back
    m4.load_state_dict(state)
    m4.set_bits(4)
    with torch.no_grad():
        assert torch.equal(four.eval()(inputs()), m4(inputs()))
    assert {int(c.step_initialized) for _, c in iter_quant_convs(four)} == {4}


def test_a_state_dict_from_before_the_steps_recorded_their_bits_loads_as_the_models():
    """Older files hold ``step_initialized`` as a bool: they load unchecked, and the model then records its bits."""
    m2 = _initialised(_small(2))
    old = {k: v.bool() if k.endswith('step_initialized') else v for k, v in m2.state_dict().items()}
    fresh = _small(2)
    fresh.load_state_dict(old)
    assert {int(c.step_initialized) for _, c in iter_quant_convs(fresh)} == {2}
    with torch.no_grad():
        assert torch.equal(fresh.eval()(inputs()), m2(inputs()))
    untrained = _small(4)
    untrained.load_state_dict({k: v.bool() if k.endswith('step_initialized') else v
                               for k, v in _small(4).state_dict().items()})
    assert all(c.step_bits is None for _, c in iter_quant_convs(untrained))



def test_a_folder_written_before_the_steps_recorded_their_bits_keeps_its_figures(tmp_path):
    """An older folder's model.safetensors (bool ``step_initialized``, its sha256 in config.json) loads, and a
    model loaded from it, plain or packed, is still those weights: saved again it keeps the folder's top-1."""
    folder = oqatnets.save_pretrained(_initialised(_small(2)), tmp_path / 'old',
                                      metrics={'top1': 61.5, 'source': 'a test'})
    path = folder / 'model.safetensors'
    with safetensors.safe_open(path, 'pt') as f:
        metadata = f.metadata()
    old = {k: v.bool() if k.endswith('step_initialized') else v for k, v in safetensors.torch.load_file(path).items()}
    write_safetensors(old, path, metadata=metadata)
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg']['sha256']['model.safetensors'] = sha256_file(path)
    (folder / 'config.json').write_text(json.dumps(config))

    def saved_again(model: torch.nn.Module, name: str) -> dict:
        return json.loads((oqatnets.save_pretrained(model, tmp_path / name) / 'config.json').read_text())['pretrained_cfg']

    for overlay in (None, dict(file=str(folder / 'model.packed.safetensors'))):
        loaded = oqatnets.create_model(f'local-dir:{folder}', pretrained=True, pretrained_cfg_overlay=overlay)
        assert saved_again(loaded, f'again{overlay is None}')['top1'] == 61.5
    loaded.classifier.weight.data.add_(1.0)  # weights changed after loading are still not the folder's
    _no_identity(saved_again(loaded, 'changed'))

def test_inherited_weights_load_into_the_childs_bits_only():
    parent = small_net(4)
    child_state = inherit_bits(parent, 2).state_dict()
    child = small_net(2)
    child.load_state_dict(child_state)
    with pytest.raises(IncompatibleWeightsError, match='2-bit'):
        small_net(4).load_state_dict(child_state)

def test_saving_the_same_model_again_writes_the_same_bytes(tmp_path):
    """Weights files and the folder's config (which records their sha256) are byte-stable: the
    safetensors library alone writes its metadata in hash-map order, different on each save."""
    model = _initialised(oqatnets.create_model('oqat_2bit_m', spec=S.format(2), space='small', num_classes=3))
    folders = [oqatnets.save_pretrained(model, tmp_path / f'm{i}') for i in range(4)]
    for name in ('model.safetensors', 'model.packed.safetensors', 'config.json'):
        assert len({(folder / name).read_bytes() for folder in folders}) == 1, name
    raw = (folders[0] / 'model.packed.safetensors').read_bytes()
    size = int.from_bytes(raw[:8], 'little')
    assert size % 8 == 0
    metadata = json.loads(raw[8:8 + size])['__metadata__']
    assert list(metadata) == sorted(metadata) and len(metadata) > 2
    again = oqatnets.create_model(f'local-dir:{folders[0]}', pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(again(inputs()), model(inputs()))


@pytest.mark.parametrize('packed', [False, True])
def test_weights_of_the_unsigned_space_do_not_load_into_the_signed_one(tmp_path, packed):
    """Same tensors, other quantizer: a 'small' file refuses a 'small_signed' model and the reverse."""
    m = _initialised(oqatnets.create_model('oqatnet', spec=S.format(2), space='small', num_classes=3))
    folder = oqatnets.save_pretrained(m, tmp_path / 'm')
    path = folder / ('model.packed.safetensors' if packed else 'model.safetensors')
    with pytest.raises(IncompatibleWeightsError, match='space'):
        oqatnets.create_model('oqatnet', spec=S.format(2), space='small_signed', num_classes=3, checkpoint_path=path)
    signed = oqatnets.create_model('oqatnet', spec=S.format(2), space='small_signed', num_classes=3)
    assert signed.model_args()['space'] == 'small_signed' and signed.final_conv.signed_input
    assert not m.final_conv.signed_input
    signed_folder = oqatnets.save_pretrained(_initialised(signed), tmp_path / 's')
    quant = json.loads((signed_folder / 'config.json').read_text())['quantization']
    signed_layers = quant['block_input_activation'].pop('layers')
    assert quant['block_input_activation'] == {'qmin': -2, 'qmax': 1, 'signed': True}
    expand_convs = {name for name, _ in iter_quant_convs(signed) if name.endswith('.conv_pw')}
    assert expand_convs and set(signed_layers) == expand_convs | {'blocks.0.0.conv_dw', 'final_conv'}
    assert 'block_input_activation' not in json.loads((folder / 'config.json').read_text())['quantization']
    assert 'signed block inputs' in (signed_folder / 'README.md').read_text()
    assert 'signed weights, unsigned activations' in (folder / 'README.md').read_text()


def test_checkpoint_of_other_classes_is_refused_in_one_line(tmp_path):
    folder = oqatnets.save_pretrained(small_net(2, num_classes=10), tmp_path / 'n')
    spec = json.loads((folder / 'config.json').read_text())['model_args']['spec']
    with pytest.raises(IncompatibleWeightsError, match='num_classes'):
        oqatnets.create_model('oqatnet', spec=spec, space='small', num_classes=3,
                              checkpoint_path=folder / 'model.safetensors')


def test_generic_architectures_build_from_model_args():
    net = oqatnets.create_model('oqatnet', spec=S.format(3), space='small', num_classes=5)
    assert isinstance(net, oqatnets.OQATNet) and net.bits == 3 and net.num_classes == 5
    supernet = oqatnets.create_model('oqat_supernet', bits=2, space='small', num_classes=5)
    assert isinstance(supernet, oqatnets.OQATSupernet) and supernet.pretrained_cfg['architecture'] == 'oqat_supernet'
    with pytest.raises(InvalidArgumentError, match='takes no argument'):
        oqatnets.create_model('oqatnet', spec=S.format(3), space='small', kernel=3)


def test_bits_beside_a_spec_are_honoured_or_refused():
    assert oqatnets.create_model('oqat_2bit_m', bits=4).spec.bits == 4
    with pytest.raises(InvalidArgumentError, match='give one of them'):
        oqatnets.create_model('oqatnet', spec=S.format(2), bits=4, space='small')


def test_profile_refuses_a_space_the_model_was_not_built_in():
    net = oqatnets.create_model('oqat_2bit_m')
    with pytest.raises(InvalidArgumentError, match='own space'):
        oqatnets.profile(net, space='small')


@pytest.mark.parametrize('call', [
    lambda: oqatnets.create_model('oqat_2bit_mm'),
    lambda: oqatnets.create_model('oqat_2bit_m', num_classes=-3),
    lambda: oqatnets.OQATNet(S.format(2), space='small', in_chans=0),
    lambda: oqatnets.SubnetSpec.parse('r32_k3'),
    lambda: oqatnets.set_bits(small_net(2), 5),
    lambda: oqatnets.create_supernet(bits=2, space='nope'),
    lambda: oqatnets.create_model('local-dir:/no/such/folder', pretrained=True),
    lambda: oqatnets.create_model('oqat_2bit_m', pretrained=True),
    lambda: oqatnets.load_packed(__file__),
    lambda: oqatnets.profile(torch.nn.Linear(2, 2)),
    lambda: small_net(2).reset_classifier(-1),
    lambda: small_net(2).reset_classifier(2.5),
    lambda: small_net(2).forward_intermediates(inputs(), indices=99),
    lambda: small_net(2).forward_intermediates(inputs(), indices=[]),
    lambda: small_net(2).forward_intermediates(inputs(), indices='a'),
    lambda: oqatnets.create_model(None),
    lambda: oqatnets.create_model('oqat_2bit_m.'),
    lambda: oqatnets.SubnetSpec.parse(S.format(2).replace('32', '\uff13\uff12', 1)),  # fullwidth digits
    lambda: oqatnets.create_model('oqatnet'),
    lambda: oqatnets.create_model('oqat_supernet', spec=S.format(2), space='small'),
    lambda: oqatnets.create_model('oqat_2bit_s', device='bogus'),
    lambda: oqatnets.create_model('oqat_2bit_s', device='cuda:0') if not torch.cuda.is_available() else 1 / 0,
    lambda: oqatnets.create_model('oqat_2bit_s', dtype='float16'),
    lambda: oqatnets.create_model('oqat_2bit_s', dtype=torch.int8),
    lambda: oqatnets.create_model('oqat_2bit_s', out_indices=(1, 2)),
    lambda: oqatnets.OQATSupernet(space='small', bits=2, num_classes=3).get_subnet(5),
    lambda: build_model(small_net(2).model_args(), state_dict=small_net(2).state_dict(), in_chans=0),
    lambda: build_model(small_net(2).model_args(), state_dict=small_net(2).state_dict(), in_chans='3'),
    lambda: oqatnets.save_pretrained(torch.nn.Linear(2, 2), 'never-written'),
    lambda: oqatnets.save_pretrained(features_model(small_net(2)), 'never-written'),
    lambda: oqatnets.save_packed(None, 'never-written.safetensors'),
    lambda: oqatnets.set_bits(torch.nn.Linear(2, 2), 2),
    lambda: oqatnets.get_bits('a model'),
])
def test_library_errors_for_bad_input_are_oqatnets_errors(call):
    with pytest.raises(OQATNetsError):
        call()


def test_a_spec_string_works_wherever_a_spec_does():
    supernet = _initialised(oqatnets.OQATSupernet(space='small', bits=2, num_classes=3))
    spec = supernet.space.smallest(2, RESOLUTION)
    assert supernet.get_subnet(str(spec)).spec == spec
    supernet.set_active_subnet(str(spec))
    assert supernet.active_spec == spec
