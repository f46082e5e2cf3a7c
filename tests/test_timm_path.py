"""The timm path: hf-hub:/local-dir: through timm.create_model, timm's keyword arguments, features and model API."""
from __future__ import annotations

import pytest
import timm
import timm.optim
import torch
from timm.models import PretrainedCfg as TimmPretrainedCfg
from timm.models._features import FeatureGetterNet
from zoo_helpers import inputs, small_net, small_spec, small_table

import oqatnets
from oqatnets._io import sha256_file
from oqatnets.errors import InvalidArgumentError
from oqatnets.timm_compat import resolve_source


@pytest.fixture(scope='module')
def published(tmp_path_factory):
    """A user's finetune saved, and published into a temporary Hub cache as someuser/my-finetune."""
    root = tmp_path_factory.mktemp('timm')
    model = small_net(3)
    folder = oqatnets.save_pretrained(model, root / 'net', metrics={'top1': 40.0, 'source': 'unit test'})
    snapshot = oqatnets.publish_to_cache(folder, 'someuser/my-finetune', cache_dir=root / 'cache')
    return model, folder, root / 'cache', snapshot.name


def _outputs(model):
    with torch.no_grad():
        return model.eval()(inputs())


def test_timm_hf_hub_loads_the_repo_asked_for(published):
    model, _, cache, commit = published
    for name in ('hf-hub:someuser/my-finetune', f'hf-hub:someuser/my-finetune@{commit}'):
        loaded = timm.create_model(name, pretrained=True, cache_dir=cache)
        assert torch.equal(_outputs(loaded), _outputs(model))
        assert loaded.pretrained_cfg['hf_hub_id'] == name.removeprefix('hf-hub:')
        assert loaded.pretrained_cfg['top1'] == 40.0
    head = timm.create_model('hf-hub:someuser/my-finetune', pretrained=True, cache_dir=cache, num_classes=4)
    assert head.num_classes == 4 and torch.equal(head.conv_head.weight, model.conv_head.weight)


def test_timm_local_dir_loads_the_folder(published):
    model, folder, _, _ = published
    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True)
    assert torch.equal(_outputs(loaded), _outputs(model))
    assert loaded.pretrained_cfg['source'] == 'local-dir'


def test_a_timm_cfg_source_wins_over_the_registry_entry(published):
    _, folder, _, _ = published
    assert resolve_source('oqat_2bit_m', {'source': 'hf-hub', 'hf_hub_id': 'u/r@v1'}) == ('hf-hub:u/r@v1', {})
    assert resolve_source('oqat_2bit_m', {'source': 'local-dir', 'file': str(folder)}) == (f'local-dir:{folder}', {})
    assert resolve_source('oqat_2bit_m', 'in1k') == ('oqat_2bit_m.in1k', {})
    assert resolve_source('oqat_2bit_m', {'file': 'w.safetensors', 'mean': (0.5,)}) == \
        ('oqat_2bit_m', {'file': 'w.safetensors', 'mean': (0.5,)})


def test_a_cfg_passed_to_timm_is_honoured_or_refused():
    """timm's pretrained_cfg= (a dict, or its PretrainedCfg: only the fields set away from its defaults) sets the
    data config like pretrained_cfg_overlay; what the model owns is refused, never silently dropped."""
    for given in ({'mean': (0.1, 0.2, 0.3), 'crop_pct': 0.5}, TimmPretrainedCfg(mean=(0.1, 0.2, 0.3), crop_pct=0.5)):
        cfg = timm.create_model('oqat_2bit_m', pretrained_cfg=given).pretrained_cfg
        assert tuple(cfg['mean']) == (0.1, 0.2, 0.3) and cfg['crop_pct'] == 0.5
        assert cfg['interpolation'] == oqatnets.get_pretrained_cfg('oqat_2bit_m').interpolation  # the rest kept
    with pytest.raises(InvalidArgumentError, match='cannot set input_size'):
        timm.create_model('oqat_2bit_m', pretrained_cfg={'input_size': (3, 64, 64)})


def test_timm_lists_only_published_weights(published):
    model, folder, _, _ = published
    assert timm.list_pretrained('oqat*') == oqatnets.list_pretrained('oqat*')
    assert 'oqat_2bit_m' in timm.list_models('oqat*') and timm.get_pretrained_cfg('oqat_2bit_m').hf_hub_id is None
    oqatnets.register_zoo_table(small_table('oqat_timm_published_3bit', model.spec,
                                            sha256={'model.safetensors': sha256_file(folder / 'model.safetensors')}))
    assert 'oqat_timm_published_3bit.in1k' in timm.list_pretrained('oqat*')


def test_timm_keyword_arguments():
    spec = str(small_spec(2))
    model = timm.create_model('oqatnet', spec=spec, space='small', num_classes=10, drop_path_rate=0.2,
                              global_pool='avg', device='cpu', dtype=torch.float64, pretrained_model_args={})
    assert next(model.parameters()).dtype == torch.float64
    rates = [b.drop_path.drop_prob for stage in model.blocks[1:] for b in stage if hasattr(b.drop_path, 'drop_prob')]
    assert rates == sorted(rates) and 0 < rates[-1] < 0.2
    torch.manual_seed(0)
    plain = oqatnets.create_model('oqatnet', spec=spec, space='small', num_classes=10)
    torch.manual_seed(0)
    dropped = oqatnets.create_model('oqatnet', spec=spec, space='small', num_classes=10, drop_path_rate=0.2)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    assert torch.equal(_outputs(plain), _outputs(dropped))  # stochastic depth is a training-only change
    with pytest.raises(ValueError, match="global_pool='max'"):
        timm.create_model('oqatnet', spec=spec, space='small', global_pool='max')


def test_features_only_gives_the_feature_maps():
    spec = str(small_spec(2))
    features = timm.create_model('oqatnet', spec=spec, space='small', features_only=True)
    assert isinstance(features, FeatureGetterNet)
    maps = features(inputs())
    assert [m.shape[1] for m in maps] == features.feature_info.channels()
    assert [32 // m.shape[-1] for m in maps] == features.feature_info.reduction() == [1, 2, 4, 8]  # small space
    imagenet = oqatnets.create_model('oqat_2bit_m', features_only=True)
    assert imagenet.feature_info.reduction() == [2, 4, 8, 16, 32]
    picked = timm.create_model('oqatnet', spec=spec, space='small', features_only=True, out_indices=(1, 6))
    assert len(picked(inputs())) == 2


def test_features_only_keeps_the_models_data_config():
    """timm's resolve_data_config(model=features) fell back to ImageNet's 224 px bicubic defaults."""
    from timm.data import resolve_data_config
    model = oqatnets.create_model('oqat_2bit_m')
    for features in (timm.create_model('oqat_2bit_m', features_only=True),
                     oqatnets.create_model('oqat_2bit_m', features_only=True)):
        assert features.pretrained_cfg == model.pretrained_cfg
        assert resolve_data_config(model=features) == resolve_data_config(model=model)
        assert tuple(resolve_data_config(model=features)['input_size']) == (3, 208, 208)  # not ImageNet's 224


def test_supernet_features_follow_the_active_subnet():
    torch.manual_seed(0)
    supernet = oqatnets.create_supernet(2, space='small', num_classes=4).double()
    spec = supernet.space.smallest(2, 32)
    supernet.set_active_subnet(spec)
    x = inputs().double()
    with torch.no_grad():
        supernet(x)  # LSQ step init
    supernet.eval()
    subnet = supernet.get_subnet(spec).eval()
    with torch.no_grad():
        _, ours = supernet.forward_intermediates(x)
        _, static = subnet.forward_intermediates(x)
        assert len(ours) == len(static) == 7
        assert all(torch.allclose(a, b, rtol=0, atol=1e-9) for a, b in zip(ours, static))
        assert torch.equal(ours[-1], supernet.forward_features(x))


def test_forward_intermediates_and_grad_checkpointing():
    model = small_net(2)
    x = inputs()
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x)) and len(maps) == len(model.feature_info)
        assert len(model.forward_intermediates(x, indices=[0, 2], intermediates_only=True)) == 2
    grads = []
    for enable in (False, True):
        model.train().zero_grad()
        model.set_grad_checkpointing(enable)
        model(x).sum().backward()
        grads.append(model.conv_stem.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1])


def test_group_matcher_and_no_weight_decay_drive_timm_optim():
    model = small_net(2)
    assert model.no_weight_decay() and all(n.endswith('_step') for n in model.no_weight_decay())
    groups = timm.optim.param_groups_weight_decay(model, weight_decay=1e-4,
                                                  no_weight_decay_list=model.no_weight_decay())
    no_decay = {id(p) for g in groups if g['weight_decay'] == 0 for p in g['params']}
    assert all(id(p) in no_decay for n, p in model.named_parameters() if n.endswith('_step'))
    optimizer = timm.optim.create_optimizer_v2(model, 'sgd', lr=0.1, weight_decay=1e-4, layer_decay=0.7)
    assert len({g['lr_scale'] for g in optimizer.param_groups}) > 2  # stem, blocks and head get their own scales
