"""Bit inheritance: steps doubled per bit dropped, every other tensor unchanged, bad requests refused."""
from __future__ import annotations

import pytest
import torch
from training_helpers import TINY_SPACE

from oqatnets.quant import iter_quant_convs
from oqatnets.supernet import OQATSupernet
from oqatnets.training import inherit_bits


def _initialised_supernet(bits: int = 4) -> OQATSupernet:
    torch.manual_seed(0)
    net = OQATSupernet(space=TINY_SPACE, bits=bits, num_classes=4)
    for spec in (TINY_SPACE.largest(bits), TINY_SPACE.smallest(bits)):
        net.set_active_subnet(spec)
        net(torch.randn(2, 3, spec.resolution, spec.resolution))  # LSQ init of every step
    return net


@pytest.mark.parametrize('target', [3, 2])
def test_inheritance_doubles_steps_and_keeps_everything_else(target):
    parent = _initialised_supernet(4)
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    child = inherit_bits(parent, target)
    assert child.bits == target and all(m.bits == target for _, m in iter_quant_convs(child))
    scale = 2 ** (4 - target)
    child_state = child.state_dict()
    assert child_state.keys() == before.keys()
    steps = 0
    for name, value in child_state.items():
        if name.endswith(('act_step', 'weight_step')):
            steps += 1
            assert torch.equal(value, before[name] * scale), name
        elif name.endswith('step_initialized'):  # the steps now say they are the child's
            assert int(before[name]) == 4 and int(value) == target, name
        else:
            assert torch.equal(value, before[name]), name
    assert steps == 2 * len(list(iter_quant_convs(parent)))
    for name, value in parent.state_dict().items():  # the parent is untouched
        assert torch.equal(value, before[name])


def test_inheritance_refuses_bad_requests():
    parent = _initialised_supernet(3)
    with pytest.raises(ValueError, match='goes down'):
        inherit_bits(parent, 4)
    with pytest.raises(ValueError, match='not supported'):
        inherit_bits(parent, 5)
    fresh = OQATSupernet(space=TINY_SPACE, bits=4, num_classes=4)
    with pytest.raises(ValueError, match='no trained step'):
        inherit_bits(fresh, 3)
    fresh.set_bits(32)
    with pytest.raises(ValueError, match='float'):
        inherit_bits(fresh, 3)


def test_inheritance_of_a_static_net_updates_its_spec():
    parent = _initialised_supernet(4)
    net = parent.get_subnet(TINY_SPACE.largest(4))
    child = inherit_bits(net, 2)
    assert child.spec.bits == 2 and child.bits == 2


def test_a_folder_parent_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    """A derived model's ``supernet`` names the same folder from anywhere; a zoo name or Hub id stays as given."""
    from oqatnets.training.artifacts import recorded_source
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'run').mkdir()
    assert recorded_source('run') == str(tmp_path / 'run')
    assert recorded_source('local-dir:run') == f'local-dir:{tmp_path / "run"}'
    assert recorded_source('oqat_2bit_m') == 'oqat_2bit_m' and recorded_source('org/repo') == 'org/repo'
