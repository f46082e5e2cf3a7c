"""Initialising from the float Once-for-All supernet: checked against the ``ofa`` package itself."""
from __future__ import annotations

import random

import pytest
import torch

from oqatnets.training import load_ofa_supernet
from oqatnets.training.ofa_init import OFAInitError, ofa_to_oqat_key

ofa_networks = pytest.importorskip('ofa.imagenet_classification.elastic_nn.networks')


def _random_ofa(seed: int) -> torch.nn.Module:
    """The authors' float supernet with random weights and BN statistics (the defaults are 0/1)."""
    torch.manual_seed(seed)
    net = ofa_networks.OFAMobileNetV3(n_classes=17, width_mult=1.0, ks_list=[3, 5, 7],
                                      expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith('running_var'):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith(('running_mean', 'bn.bias')):
                tensor.normal_(0, 0.2)
            elif name.endswith('bn.weight'):
                tensor.uniform_(0.5, 1.5)
    return net.eval()


def test_ofa_weights_give_equal_outputs_for_random_subnets(tmp_path):
    ofa = _random_ofa(0)
    path = tmp_path / 'ofa_mbv3_d234_e346_k357_w1.0'
    torch.save({'state_dict': ofa.state_dict()}, path)
    ours = load_ofa_supernet(path, bits=32).double().eval()
    ofa = ofa.double()
    assert ours.num_classes == 17 and ours.pretrained_cfg['source'] == 'ofa'
    rng = random.Random(0)
    specs = [ours.space.largest(32), ours.space.smallest(32)] + [ours.space.sample(32, rng) for _ in range(3)]
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for spec in specs:
            ofa.set_active_subnet(ks=list(spec.ks), e=list(spec.e), d=list(spec.d))
            ours.set_active_subnet(spec)
            expected, got = ofa(x), ours(x)
            assert (got - expected).abs().max().item() <= 1e-6, str(spec)


def test_ofa_init_quantizes_and_refuses_other_files(tmp_path):
    ofa = _random_ofa(1)
    path = tmp_path / 'ofa.pth'
    torch.save(ofa.state_dict(), path)  # a bare state dict loads too
    net = load_ofa_supernet(path, bits=4, num_classes=10)
    assert net.num_classes == 10 and net.bits == 4
    net.set_active_subnet(net.space.smallest(4))
    assert torch.isfinite(net(torch.randn(2, 3, 64, 64))).all()  # steps initialise at the first quantized forward
    assert ofa_to_oqat_key('blocks.3.conv.depth_conv.conv.conv.weight') == 'blocks.1.2.conv_dw.weight'
    state = ofa.state_dict()
    state.pop('blocks.5.conv.point_linear.bn.bn.weight')
    torch.save(state, tmp_path / 'partial.pth')
    with pytest.raises(OFAInitError, match='1 missing keys'):
        load_ofa_supernet(tmp_path / 'partial.pth')
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'net': torch.nn.Linear(2, 2)}, tmp_path / 'pickle.pth')
    with pytest.raises(OFAInitError, match='not a loadable'):  # weights_only=True refuses module pickles
        load_ofa_supernet(tmp_path / 'pickle.pth')


def test_cli_init_ofa_needs_the_imagenet_space(tmp_path):
    from click.testing import CliRunner

    from oqatnets.cli.main import cli
    result = CliRunner().invoke(cli, ['train', 'supernet', '--data', 'fashion-mnist', '--space', 'small',
                                      '--init', f'ofa:{tmp_path / "ofa.pth"}', '--out', str(tmp_path / 'run')])
    assert result.exit_code == 2 and '--space imagenet' in result.output
