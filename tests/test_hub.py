"""save_pretrained / config.json / model card, the local Hub cache, create_model loading paths."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import safetensors
import torch
from huggingface_hub import ModelCard, hf_hub_download
from PIL import Image
from timm.data import create_transform, resolve_data_config
from zoo_helpers import inputs, small_net, small_table

import oqatnets
from oqatnets._io import sha256_file
from oqatnets.errors import ChecksumError, InvalidArgumentError, PretrainedWeightsError
from oqatnets.quant import iter_quant_convs
from oqatnets.weights import write_safetensors


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    model = small_net(3)
    folder = oqatnets.save_pretrained(model, tmp_path_factory.mktemp('saved') / 'net',
                                      metrics={'top1': 51.5, 'top5': 90.25, 'source': 'unit test'},
                                      dataset='fashion-mnist', pretrained_cfg={'supernet': 'org/parent'})
    return model, folder


def _outputs(model):
    with torch.no_grad():
        return model.eval()(inputs())


def test_save_pretrained_writes_the_hub_folder(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.packed.safetensors',
                                                        'model.safetensors']
    config = json.loads((folder / 'config.json').read_text())
    assert {'architecture', 'num_classes', 'num_features', 'global_pool', 'label_names', 'model_args',
            'pretrained_cfg', 'quantization'} <= set(config)
    assert config['model_args'] == {'space': 'small', 'num_classes': 10, 'in_chans': 3, 'spec': str(model.spec)}
    q = config['quantization']
    assert (q['method'], q['bits'], q['granularity']) == ('lsq', 3, 'per_tensor')
    assert q['activation'] == {'qmin': 0, 'qmax': 7, 'signed': False} and 'bitops' in q['bitops_convention']
    cfg = config['pretrained_cfg']
    assert cfg['top1'] == 51.5 and cfg['metrics_source'] == 'unit test' and cfg['dataset'] == 'fashion-mnist'
    assert cfg['sha256']['model.safetensors'] == sha256_file(folder / 'model.safetensors')
    card = ModelCard.load(folder / 'README.md')
    data = card.data
    assert (data.license, data.library_name, data.datasets, data.metrics, data.base_model) == \
        ('apache-2.0', 'oqatnets', ['fashion-mnist'], ['accuracy'], 'org/parent')
    results = {r.metric_name: r for r in data.eval_results}
    assert results['Top-1 accuracy (%)'].metric_value == 51.5 and results['Top-5 accuracy (%)'].metric_value == 90.25
    # no split was given, so the model-index names none (it used to claim 'validation')
    assert {(r.dataset_type, r.dataset_split) for r in data.eval_results} == {('fashion-mnist', None)}
    assert 'BitOPs (G)' in card.text and '51.500' in card.text
    assert not [p for p in folder.iterdir() if p.name.startswith('.')]  # no temp files left behind


def test_local_dir_round_trip_gives_the_same_outputs(saved):
    model, folder = saved
    loaded = oqatnets.create_model(f'local-dir:{folder}', pretrained=True)
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert loaded.pretrained_cfg['source'] == 'local-dir'


def test_supernet_round_trip(tmp_path):
    torch.manual_seed(0)
    supernet = oqatnets.create_supernet(2, space='small', num_classes=4)
    supernet.set_active_subnet(supernet.space.smallest(2, 32))
    supernet(inputs())
    folder = oqatnets.save_pretrained(supernet, tmp_path / 'super')
    assert not (folder / 'model.packed.safetensors').exists()
    assert '2-bit (weights and activations) OQAT supernet' in (folder / 'README.md').read_text()
    config = json.loads((folder / 'config.json').read_text())
    assert 'spec' not in config['model_args'] and config['model_args']['bits'] == 2
    loaded = oqatnets.create_model(f'local-dir:{folder}', pretrained=True)
    spec = supernet.space.smallest(2, 32)
    assert torch.equal(_outputs(loaded.get_subnet(spec)), _outputs(supernet.get_subnet(spec)))


@pytest.mark.parametrize('name', ['model.safetensors', 'model.packed.safetensors'])
def test_a_folder_whose_weights_are_not_the_ones_it_hashes_is_not_published(saved, tmp_path, hub_calls, name):
    folder = tmp_path / 'copy'
    shutil.copytree(saved[1], folder)
    with open(folder / name, 'r+b') as f:
        f.truncate(1000)
    for publish in (lambda: oqatnets.publish_to_cache(folder, 'me/bad', cache_dir=tmp_path / 'cache'),
                    lambda: oqatnets.push_to_hub(folder, 'me/bad')):
        with pytest.raises(ChecksumError, match=f'{re.escape(str(folder / name))}.*config.json expects.*save the folder'):
            publish()
    assert not (tmp_path / 'cache').exists() and [call[0] for call in hub_calls] == ['init']  # no repo created


def test_publish_to_cache_uses_the_real_layout_and_loads_offline(saved, tmp_path, monkeypatch):
    model, folder = saved
    snapshot = oqatnets.publish_to_cache(folder, 'someone/tiny-oqat', cache_dir=tmp_path)
    repo = tmp_path / 'models--someone--tiny-oqat'
    commit = (repo / 'refs' / 'main').read_text()
    assert snapshot == repo / 'snapshots' / commit
    link = snapshot / 'model.safetensors'
    assert link.is_symlink() and link.resolve().parent == (repo / 'blobs').resolve()
    assert link.resolve().name == sha256_file(folder / 'model.safetensors')
    path = hf_hub_download('someone/tiny-oqat', 'config.json', cache_dir=tmp_path, local_files_only=True)
    assert json.loads(open(path).read())['model_args']['spec'] == str(model.spec)
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path))  # no cache_dir: the environment decides
    loaded = oqatnets.create_model('hf-hub:someone/tiny-oqat', pretrained=True)
    assert torch.equal(_outputs(loaded), _outputs(model))
    loaded = oqatnets.create_model(f'hf-hub:someone/tiny-oqat@{commit}', pretrained=True, cache_dir=tmp_path)
    assert torch.equal(_outputs(loaded), _outputs(model))


def test_registered_entry_loads_through_hf_hub_download_and_checks_sha256(saved, tmp_path, monkeypatch):
    model, folder = saved
    monkeypatch.setenv('OQATNETS_HUB_ORG', 'testorg')
    good = sha256_file(folder / 'model.safetensors')
    oqatnets.register_zoo_table(small_table('oqat_hubtest_3bit', model.spec, sha256={'model.safetensors': good}))
    with pytest.raises(RuntimeError, match=r'could not fetch the weights of oqat_hubtest_3bit\.in1k'):
        oqatnets.create_model('oqat_hubtest_3bit', pretrained=True, cache_dir=tmp_path)
    oqatnets.publish_to_cache(folder, 'testorg/oqat_hubtest_3bit.in1k', cache_dir=tmp_path)
    loaded = oqatnets.create_model('oqat_hubtest_3bit', pretrained=True, cache_dir=tmp_path)
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert loaded.pretrained_cfg['hf_hub_id'] == 'testorg/oqat_hubtest_3bit.in1k'
    oqatnets.register_zoo_table(small_table('oqat_hubtest_3bit', model.spec, sha256={'model.safetensors': '0' * 64}))
    with pytest.raises(ChecksumError, match=r"the registry \(oqat_hubtest_3bit.in1k's zoo table row\) expects 0000"):
        oqatnets.create_model('oqat_hubtest_3bit', pretrained=True, cache_dir=tmp_path)


def test_unpublished_builtin_weights_fail_with_what_to_do(tmp_path):
    with pytest.raises(RuntimeError) as info:
        oqatnets.create_model('oqat_2bit_m', pretrained=True, cache_dir=tmp_path)
    message = str(info.value)
    assert 'not published' in message and 'LocalEntryNotFoundError' in message
    for hint in ('oqat convert-official', 'oqat train', 'local-dir:', 'pretrained_cfg_overlay'):
        assert hint in message
    assert '\n' not in message


def test_changing_classes_and_channels_keeps_every_step_size(saved):
    model, folder = saved
    for kwargs in ({'num_classes': 4}, {'in_chans': 1}, {'in_chans': 5, 'num_classes': 0}):
        loaded = oqatnets.create_model(f'local-dir:{folder}', pretrained=True, **kwargs)
        for (name, a), (_, b) in zip(iter_quant_convs(model), iter_quant_convs(loaded)):
            assert torch.equal(a.act_step, b.act_step) and torch.equal(a.weight_step, b.weight_step), name
            assert torch.equal(a.weight, b.weight), name
        assert loaded.num_classes == kwargs.get('num_classes', 10)
        assert loaded.conv_stem.in_channels == kwargs.get('in_chans', 3)
        assert loaded.pretrained_cfg['input_size'][0] == kwargs.get('in_chans', 3)
        with torch.no_grad():
            out = loaded.eval()(inputs(in_chans=loaded.in_chans))
        assert out.shape == (2, loaded.num_classes or loaded.head_hidden_size) and torch.isfinite(out).all()
    grey = oqatnets.create_model(f'local-dir:{folder}', pretrained=True, in_chans=1)
    assert torch.allclose(grey.conv_stem.weight, model.conv_stem.weight.sum(1, keepdim=True))
    head = oqatnets.create_model(f'local-dir:{folder}', pretrained=True, num_classes=10)
    assert torch.equal(head.classifier.weight, model.classifier.weight)


def test_other_input_channels_get_a_mean_and_std_per_channel(saved, tmp_path):
    """timm's own transform of the derived cfg feeds a grey image to a 1-channel model; saved, the cfg loads back."""
    _, folder = saved
    rgb = oqatnets.create_model(f'local-dir:{folder}', pretrained=True).pretrained_cfg
    grey = oqatnets.create_model(f'local-dir:{folder}', pretrained=True, in_chans=1)
    assert grey.pretrained_cfg['mean'] == [pytest.approx(sum(rgb['mean']) / 3)]
    assert grey.pretrained_cfg['std'] == [pytest.approx(sum(rgb['std']) / 3)]
    transform = create_transform(**resolve_data_config(model=grey))
    with torch.no_grad():
        out = grey.eval()(transform(Image.new('L', (40, 30), 128))[None])
    assert out.shape == (1, 10)
    again = oqatnets.create_model(f'local-dir:{oqatnets.save_pretrained(grey, tmp_path / "grey")}', pretrained=True)
    assert again.pretrained_cfg['mean'] == grey.pretrained_cfg['mean']
    five = oqatnets.create_model(f'local-dir:{folder}', pretrained=True, in_chans=5).pretrained_cfg
    assert five['mean'] == [*rgb['mean'], *rgb['mean'][:2]] and five['input_size'][0] == 5


def test_overlay_file_and_checkpoint_path(saved, tmp_path):
    model, folder = saved
    oqatnets.register_zoo_table(small_table('oqat_overlay_3bit', model.spec))
    packed = oqatnets.create_model('oqat_overlay_3bit', pretrained=True,
                                   pretrained_cfg_overlay=dict(file=str(folder / 'model.packed.safetensors')))
    assert torch.equal(_outputs(packed), _outputs(model))
    fresh = oqatnets.create_model('oqat_overlay_3bit', checkpoint_path=folder / 'model.safetensors')
    assert torch.equal(_outputs(fresh), _outputs(model))
    pickle = tmp_path / 'weights.pth'
    torch.save(model.state_dict(), pickle)
    with pytest.raises(ValueError, match='safetensors files only'):
        oqatnets.create_model('oqat_overlay_3bit', pretrained=True, pretrained_cfg_overlay=dict(file=str(pickle)))


def test_repo_with_only_the_packed_file_loads(saved, tmp_path):
    model, folder = saved
    only_packed = tmp_path / 'packed-only'
    only_packed.mkdir()
    for name in ('config.json', 'model.packed.safetensors'):
        (only_packed / name).write_bytes((folder / name).read_bytes())
    oqatnets.publish_to_cache(only_packed, 'someone/packed-only', cache_dir=tmp_path / 'cache')
    loaded = oqatnets.create_model('hf-hub:someone/packed-only', pretrained=True, cache_dir=tmp_path / 'cache')
    assert torch.equal(_outputs(loaded), _outputs(model))


class HubCalls(list):
    """Calls made of the fake HfApi, and what it was set up to answer."""

    has_card = True
    card = ''


@pytest.fixture()
def hub_calls(monkeypatch) -> list:
    """What push_to_hub asks of ``HfApi`` (a fake whose repo has a card iff ``hub_calls.has_card``), with
    the uploaded folder's files and card text captured at upload time."""
    calls = HubCalls()

    class FakeApi:
        def __init__(self, **kwargs):
            calls.append(('init', kwargs))

        def create_repo(self, repo_id, **kwargs):
            calls.append(('create_repo', repo_id, kwargs))

        def file_exists(self, repo_id, filename, revision=None):
            return calls.has_card and filename == 'README.md'

        def upload_folder(self, **kwargs):
            folder = Path(kwargs['folder_path'])
            calls.append(('upload_folder', sorted(p.name for p in folder.iterdir()), kwargs))
            calls.card = (folder / 'README.md').read_text()
            return 'https://hub/commit/1'

    monkeypatch.setattr('oqatnets.hub.HfApi', FakeApi)
    return calls


def test_push_to_hub_uploads_and_keeps_an_existing_card(saved, hub_calls):
    _, folder = saved
    assert oqatnets.push_to_hub(folder, 'me/net', private=True) == 'https://hub/commit/1'
    assert hub_calls[0][1]['library_name'] == 'oqatnets'
    assert hub_calls[1] == ('create_repo', 'me/net', {'private': True, 'exist_ok': True, 'repo_type': 'model'})
    assert hub_calls[2][2]['ignore_patterns'] == ['README.md']
    assert 'model.packed.safetensors' in hub_calls[2][1]


def test_a_card_says_to_load_from_where_the_weights_are(saved, hub_calls):
    """A model with no zoo name is loaded from the folder it was saved to, or from the repo it was pushed to;
    never from a made-up repo of the zoo's organisation."""
    model, folder = saved
    assert not model.pretrained_cfg.get('tag')
    card = (folder / 'README.md').read_text()
    assert f"create_model('local-dir:{folder}', pretrained=True)" in card and 'hf-hub:' not in card
    hub_calls.has_card = False
    oqatnets.push_to_hub(model, 'me/net', revision='v1')
    assert "create_model('hf-hub:me/net@v1', pretrained=True)" in hub_calls.card
    assert hub_calls.card.startswith('---') and '# Model card for net\n' in hub_calls.card
    before = (folder / 'README.md').read_bytes()
    oqatnets.push_to_hub(folder, 'me/other')
    assert "create_model('hf-hub:me/other', pretrained=True)" in hub_calls.card and 'local-dir:' not in hub_calls.card
    assert (folder / 'README.md').read_bytes() == before  # the saved folder itself is untouched


def test_a_card_saved_for_one_repo_is_published_loading_from_the_one_it_goes_to(saved, tmp_path):
    """A zoo-built folder's card names its entry's repo; published elsewhere, it must load from there."""
    model, _ = saved
    folder = oqatnets.save_pretrained(model, tmp_path / 'entry', model_card={'load_name': 'hf-hub:org/entry'})
    snapshot = oqatnets.publish_to_cache(folder, 'me/copy', cache_dir=tmp_path / 'cache', revision='v1')
    card = (snapshot / 'README.md').read_text()
    assert "create_model('hf-hub:me/copy@v1', pretrained=True)" in card and 'org/entry' not in card


def test_a_card_saved_without_a_name_is_published_under_the_repos(saved, tmp_path):
    """A folder saved without a zoo name gets the generic ``oqatnet.custom`` title; published, its card is named
    after the repo (title and model-index), as a model pushed directly is; a name the user gave stays."""
    model, _ = saved
    unnamed = oqatnets.save_pretrained(model, tmp_path / 'a', metrics={'top1': 50.0, 'source': 'a test'})
    assert '# Model card for oqatnet.custom' in (unnamed / 'README.md').read_text()
    card = ModelCard.load(oqatnets.publish_to_cache(unnamed, 'me/my_net.fmnist', cache_dir=tmp_path / 'c') / 'README.md')
    assert '# Model card for my_net.fmnist' in card.text and 'custom' not in card.content
    assert card.data.model_name == 'my_net.fmnist' and card.data.eval_results[0].metric_value == 50.0
    named = oqatnets.save_pretrained(model, tmp_path / 'b', model_card={'name': 'my own name'})
    card = (oqatnets.publish_to_cache(named, 'me/other', cache_dir=tmp_path / 'c') / 'README.md').read_text()
    assert '# Model card for my own name' in card



def test_a_parent_recorded_by_its_local_path_is_not_published(saved, tmp_path, hub_calls):
    """Training records a parent supernet by its folder on this machine; that path means nothing elsewhere and
    names the user's files, so it stays in the local folder and leaves every published file and the packed one."""
    model, _ = saved
    parent = f'local-dir:{tmp_path / "home-of-alice" / "supernet_w2a2"}'
    folder = oqatnets.save_pretrained(model, tmp_path / 'entry', pretrained_cfg={'supernet': parent})
    assert json.loads((folder / 'config.json').read_text())['pretrained_cfg']['supernet'] == parent
    assert b'home-of-alice' not in (folder / 'model.packed.safetensors').read_bytes()
    snapshot = oqatnets.publish_to_cache(folder, 'me/entry', cache_dir=tmp_path / 'cache')
    assert not any(b'home-of-alice' in p.read_bytes() for p in snapshot.iterdir())
    assert 'supernet' not in json.loads((snapshot / 'config.json').read_text())['pretrained_cfg']
    assert '| Parent supernet | a local folder, not published |' in (snapshot / 'README.md').read_text()
    loaded = oqatnets.create_model('hf-hub:me/entry', pretrained=True, cache_dir=tmp_path / 'cache',
                                   local_files_only=True)
    assert torch.equal(_outputs(loaded), _outputs(model))
    hub_calls.has_card = False
    for source in (folder, loaded):  # a folder, and a model whose cfg still carries the parent
        loaded.set_pretrained_cfg({**loaded.pretrained_cfg, 'supernet': parent})
        oqatnets.push_to_hub(source, 'me/entry')
        assert 'home-of-alice' not in hub_calls.card and 'a local folder, not published' in hub_calls.card
    assert json.loads((folder / 'config.json').read_text())['pretrained_cfg']['supernet'] == parent  # untouched


def test_an_older_packed_file_is_published_without_its_local_parent(saved, tmp_path):
    """Packed files written before they left a local parent out embed it in their cfg: the published copy is
    rewritten without it (tensors unchanged), its new hash in the published config, and it loads."""
    model, _ = saved
    parent = str(tmp_path / 'home-of-bob' / 'supernet_w2a2')
    folder = oqatnets.save_pretrained(model, tmp_path / 'entry', pretrained_cfg={'supernet': parent})
    packed = folder / 'model.packed.safetensors'
    with safetensors.safe_open(packed, 'pt') as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(metadata['pretrained_cfg'])
    write_safetensors(tensors, packed, metadata={**metadata, 'pretrained_cfg': json.dumps({**cfg, 'supernet': parent})})
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg']['sha256']['model.packed.safetensors'] = sha256_file(packed)
    (folder / 'config.json').write_text(json.dumps(config))
    snapshot = oqatnets.publish_to_cache(folder, 'me/old', cache_dir=tmp_path / 'cache')
    assert not any(b'home-of-bob' in p.read_bytes() for p in snapshot.iterdir())
    assert b'home-of-bob' in packed.read_bytes()  # the local folder is left as it was
    loaded = oqatnets.create_model('hf-hub:me/old', pretrained=True, cache_dir=tmp_path / 'cache', local_files_only=True,
                                   pretrained_cfg_overlay=dict(file=str(snapshot / 'model.packed.safetensors')))
    assert torch.equal(_outputs(loaded), _outputs(model))

def test_label_names_must_name_every_class(saved, tmp_path):
    model, _ = saved
    with pytest.raises(InvalidArgumentError, match='label_names has 2 names for 10 classes'):
        oqatnets.save_pretrained(model, tmp_path / 'x', pretrained_cfg={'label_names': ['a', 'b']})
    assert not (tmp_path / 'x').exists()
    with pytest.raises(InvalidArgumentError, match='pretrained_cfg_overlay: label_names has 1 names'):
        oqatnets.create_model('oqat_2bit_m', num_classes=10, pretrained_cfg_overlay=dict(label_names=['a']))


def test_model_card_license_and_base_model_rules(tmp_path):
    model = small_net(2)
    local = oqatnets.save_pretrained(model, tmp_path / 'a', pretrained_cfg={'supernet': str(tmp_path / 'run4'),
                                                                            'license': 'other'})
    data = ModelCard.load(local / 'README.md').data
    assert data.base_model is None and data.eval_results is None  # a path is no Hub id; nothing was measured
    assert (data.license, data.license_name) == ('other', 'oqa-authors-no-license') and data.license_link
    parent = {'supernet': 'oqat_supernet_mbv3_w2a2'}
    unpublished = oqatnets.save_pretrained(model, tmp_path / 'b', pretrained_cfg=parent,
                                           metrics={'top1': 12.0, 'images': 64, 'split': 'test', 'source': 'a test'},
                                           dataset='cifar10')
    data = ModelCard.load(unpublished / 'README.md').data
    assert data.base_model is None
    (result,) = data.eval_results
    assert (result.dataset_type, result.dataset_split, result.dataset_args, result.metric_value) == \
        ('cifar10', 'test', {'num_images': 64}, 12.0)


def test_the_model_index_gives_only_the_accuracy_of_its_split(tmp_path):
    """A search's held-out top-1 was measured on training images, not on the split the card's results name:
    it stays in the body's table and out of the model-index."""
    folder = oqatnets.save_pretrained(small_net(2), tmp_path / 'm', dataset='fashion-mnist', metrics={
        'top1': 80.0, 'images': 100, 'split': 'test', 'source': 'a test', 'holdout_top1': 82.5})
    card = ModelCard.load(folder / 'README.md')
    assert [(r.metric_name, r.dataset_split, r.metric_value) for r in card.data.eval_results] == [
        ('Top-1 accuracy (%)', 'test', 80.0)]
    assert '| holdout_top1 | 82.500 |' in card.text


@pytest.mark.parametrize('name,error,words', [
    ('hf-hub:bad name!!', InvalidArgumentError, 'is not a Hub repo id'),
    ('hf-hub:someone/not-there', PretrainedWeightsError, 'could not fetch config.json of hf-hub:someone/not-there'),
    ('hf-hub:someone/not-there@v9', PretrainedWeightsError, 'hf-hub:someone/not-there@v9')])
def test_a_hub_id_that_cannot_be_fetched_is_named_in_one_line(name, error, words, tmp_path):
    with pytest.raises(error, match=re.escape(words)) as info:
        oqatnets.create_model(name, cache_dir=tmp_path)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('field,value', [('input_size', 'big'), ('input_size', [3, 0, 0]), ('crop_pct', 'x'),
                                         ('interpolation', 'zzz'), ('label_names', 5), ('std', [0.2, 0, 0.2]),
                                         ('mean', [0.2, 0.3])])
def test_a_data_config_preprocessing_cannot_use_is_refused_on_load(field, value, saved, tmp_path):
    _, folder = saved
    bad = tmp_path / 'bad'
    bad.mkdir()
    for name in ('model.safetensors', 'model.packed.safetensors'):
        (bad / name).write_bytes((folder / name).read_bytes())
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg'][field] = value
    (bad / 'config.json').write_text(json.dumps(config))
    with pytest.raises(oqatnets.errors.InvalidFileError, match=f'config.json: pretrained_cfg {field} '):
        oqatnets.create_model(f'local-dir:{bad}', pretrained=True)


def test_empty_sources_and_outputs_under_a_file_are_refused_in_one_line(saved, tmp_path):
    model, _ = saved
    for name in ('local-dir:', 'hf-hub:'):
        with pytest.raises(InvalidArgumentError, match='names no'):
            oqatnets.create_model(name)
    (tmp_path / 'img.png').write_bytes(b'x')
    (tmp_path / 'gone').symlink_to(tmp_path / 'missing')
    for path, words in ((tmp_path / 'img.png' / 'sub', 'img.png is a file, not a folder'),
                        (tmp_path / 'img.png', 'img.png is a file; the output must be a folder'),
                        (tmp_path / 'gone' / 'sub', f"gone is a symlink to {tmp_path / 'missing'}, which does not exist, "
                                                    'not a folder')):
        with pytest.raises(oqatnets.errors.UnsafeOutputError, match=re.escape(words)):
            oqatnets.save_pretrained(model, path)


@pytest.mark.parametrize('out_indices', [(0, 9), 9, (), (1.5,), True])
def test_feature_positions_the_model_does_not_have_are_refused(out_indices):
    with pytest.raises(InvalidArgumentError, match='feature maps'):
        oqatnets.create_model('oqat_2bit_m', features_only=True, out_indices=out_indices)


def test_a_folder_that_cannot_be_set_aside_leaves_nothing_beside_it(saved, tmp_path, monkeypatch):
    """Replacing a folder first moves it into a hidden one beside it; when that move fails (a busy or
    protected folder) the error stands and no empty hidden folder is left."""
    model, _ = saved
    target = oqatnets.save_pretrained(model, tmp_path / 'net')
    before = sorted(p.name for p in tmp_path.iterdir())
    real_replace = os.replace

    def refusing(src, dst):
        if Path(src) == target:
            raise OSError(16, 'Device or resource busy', str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, 'replace', refusing)
    with pytest.raises(OSError, match='busy'):
        oqatnets.save_pretrained(model, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
