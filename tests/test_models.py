"""OQATNet and OQATSupernet: timm interface, batch 1, elastic forward == extracted subnet."""
from __future__ import annotations

import random

import pytest
import torch

from oqatnets import OQATNet, OQATSupernet, SubnetSpec, get_space


@pytest.fixture(scope='module')
def small_supernet():
    torch.manual_seed(0)
    sup = OQATSupernet(space='small', bits=3, num_classes=10)
    with torch.no_grad():  # give BN and the kernel transforms non-trivial values
        for name, p in sup.named_parameters():
            if 'transform_' in name:
                p.add_(torch.randn_like(p) * 0.05)
        for m in sup.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    sup.train()
    sup.set_max_subnet()
    sup(torch.randn(8, 3, 32, 32))  # LSQ step init from one batch
    return sup.eval()


def test_static_net_timm_interface():
    spec = get_space('small').sample(4, random.Random(1))
    net = OQATNet(spec, space='small', num_classes=7, in_chans=1).eval()
    x = torch.randn(1, 1, spec.resolution, spec.resolution)
    feats = net.forward_features(x)
    assert feats.shape[1] == net.num_features == 192
    assert net.forward_head(feats, pre_logits=True).shape == (1, 256)
    assert net(x).shape == (1, 7)  # batch 1 works
    assert net.get_classifier().out_features == 7
    net.reset_classifier(0)
    assert net(x).shape == (1, 256)
    net.reset_classifier(3)
    assert net(x).shape == (1, 3) and net.num_classes == 3
    assert [f['reduction'] for f in net.feature_info] == [1, 2, 4, 8, 8, 8, 8]
    assert net.feature_info[-1]['num_chs'] == net.num_features


def test_reset_classifier_keeps_every_step_size():
    net = OQATNet(get_space('small').smallest(2), space='small', num_classes=10)
    net(torch.randn(2, 3, 24, 24))
    steps = {k: v.clone() for k, v in net.state_dict().items() if k.endswith('_step')}
    net.reset_classifier(5)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in steps.items())


def test_imagenet_net_matches_space_layer_table():
    net = OQATNet(get_space('imagenet').smallest(2))
    assert len(net.blocks) == 6 and [len(s) for s in net.blocks] == [1, 2, 2, 2, 2, 2]
    assert net.blocks[1][0].conv_dw.stride == (2, 2) and net.blocks[1][1].has_skip
    assert net.blocks[2][0].se.conv_reduce.out_channels == 24  # make_divisible(72 // 4, 8)


@pytest.mark.parametrize('seed', range(4))
def test_dynamic_forward_equals_extracted_subnet(small_supernet, seed):
    spec = small_supernet.space.sample(3, random.Random(seed))
    x = torch.randn(2, 3, spec.resolution, spec.resolution, dtype=torch.float64)
    sup = small_supernet.double()
    try:
        sup.set_active_subnet(spec)
        net = sup.get_subnet(spec).eval()
        with torch.no_grad():
            assert torch.allclose(sup(x), net(x), rtol=0, atol=1e-9)
        assert net.spec == spec
        assert set(net.state_dict()) <= set(sup.state_dict())
    finally:
        sup.float()


def test_extraction_copies_step_sizes_verbatim(small_supernet):
    spec = small_supernet.space.sample(3, random.Random(11))
    before = small_supernet.active_spec
    net = small_supernet.get_subnet(spec)
    assert small_supernet.active_spec == before  # extraction leaves the active subnet alone
    sup_state = small_supernet.state_dict()
    for key, value in net.state_dict().items():
        if key.endswith('_step'):
            assert torch.equal(value, sup_state[key])


def test_supernet_gradients_reach_weights_transforms_and_both_steps():
    sup = OQATSupernet(space='small', bits=2, num_classes=10)
    spec = SubnetSpec(24, [3] * 20, [4] * 20, [2] * 5, 2)
    sup.set_active_subnet(spec)
    sup(torch.randn(4, 3, 24, 24)).logsumexp(1).sum().backward()
    block = sup.blocks[1][0]
    for p in (block.conv_pw.weight, block.conv_pw.act_step, block.conv_pw.weight_step,
              block.conv_dw.weight, block.conv_dw.transform_7to5, block.conv_dw.transform_5to3,
              block.conv_dw.act_step, block.conv_dw.weight_step):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert sup.blocks[1][3].conv_pw.weight.grad is None  # inactive block untouched


def test_supernet_rejects_bad_specs():
    sup = OQATSupernet(space='small', bits=4, num_classes=10)
    with pytest.raises(ValueError, match='4-bit'):
        sup.set_active_subnet(get_space('small').largest(2))
    narrow = OQATSupernet(space=get_space('small').__class__(**{**get_space('small').to_dict(),
                                                                'name': 'k35', 'ks_choices': [3, 5]}))
    with pytest.raises(ValueError, match=r"SubnetSpec\.ks uses \[7\]"):
        narrow.set_active_subnet(get_space('small').largest(4))


def test_sampling_is_identical_for_identical_generators():
    sup = OQATSupernet(space='small', bits=4, num_classes=10)
    a = [sup.sample_active_subnet(random.Random(3)) for _ in range(2)]
    assert a[0] == a[1] and sup.active_spec == a[1]


def test_elastic_bn_updates_only_active_slice_in_training():
    sup = OQATSupernet(space='small', bits=4, num_classes=10).train()
    sup.set_min_subnet()
    bn = sup.blocks[1][0].bn_pw
    before = bn.running_mean.clone()
    sup(torch.randn(4, 3, 24, 24))
    active = 48  # 16 channels × e=3
    assert not torch.equal(bn.running_mean[:active], before[:active])
    assert torch.equal(bn.running_mean[active:], before[active:])
