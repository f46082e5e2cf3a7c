"""SubnetSpec validation and its compact string form; search spaces."""
from __future__ import annotations

import random

import pytest

from oqatnets import SubnetSpec, get_space
from oqatnets.spec import make_divisible


def test_string_form_round_trips():
    rng = random.Random(0)
    for space in ('imagenet', 'small'):
        for bits in (2, 3, 4, 32):
            spec = get_space(space).sample(bits, rng)
            assert SubnetSpec.parse(str(spec)) == spec


def test_string_form_is_compact_and_readable():
    spec = get_space('imagenet').largest(2)
    assert str(spec) == 'r224_k' + '7' * 20 + '_e' + '6' * 20 + '_d44444_b2'


@pytest.mark.parametrize('field,kwargs,match', [
    ('ks', dict(ks=[4] * 20), r'SubnetSpec\.ks .*\[3, 5, 7\]'),
    ('ks', dict(ks=[3] * 19), r'SubnetSpec\.ks must be 20'),
    ('e', dict(e=[5] * 20), r'SubnetSpec\.e .*\[3, 4, 6\]'),
    ('d', dict(d=[1, 2, 3, 4, 4]), r'SubnetSpec\.d .*\[2, 3, 4\]'),
    ('bits', dict(bits=5), r'SubnetSpec\.bits must be one of'),
    ('resolution', dict(resolution=0), r'SubnetSpec\.resolution'),
    ('resolution', dict(resolution='224'), r'SubnetSpec\.resolution'),
])
def test_bad_fields_name_the_field_and_allowed_values(field, kwargs, match):
    base = dict(resolution=224, ks=[3] * 20, e=[3] * 20, d=[2] * 5, bits=4)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SubnetSpec(**base)


@pytest.mark.parametrize('text', ['', 'r224', 'r224_k777_e666_d444_b4', 'x' * 60])
def test_parse_rejects_garbage_with_an_example(text):
    with pytest.raises(ValueError, match='expected r<res>'):
        SubnetSpec.parse(text)


def test_dict_round_trip_and_unknown_fields():
    spec = get_space('small').smallest(3)
    assert SubnetSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match='unknown SubnetSpec fields'):
        SubnetSpec.from_dict({**spec.to_dict(), 'width': 1.0})


def test_active_blocks_follow_depth():
    spec = SubnetSpec(128, [3, 5, 7, 3] * 5, [3, 4, 6, 3] * 5, [2, 3, 4, 2, 3], 2)
    blocks = list(spec.active_blocks())
    assert len(blocks) == 14
    assert blocks[:3] == [(0, 0, 3, 3), (0, 1, 5, 4), (1, 0, 3, 3)]


def test_make_divisible_mobilenet_rule():
    assert make_divisible(18) == 24  # 16 would be below 90% of 18
    assert make_divisible(30) == 32 and make_divisible(144) == 144


def test_unknown_space():
    with pytest.raises(ValueError, match='unknown search space'):
        get_space('cifar')


def test_sampling_is_reproducible():
    a = get_space('imagenet').sample(4, random.Random(7))
    b = get_space('imagenet').sample(4, random.Random(7))
    assert a == b


def test_space_dicts_written_before_signed_inputs_keep_the_unsigned_quantizer():
    data = {k: v for k, v in get_space('small').to_dict().items() if k != 'signed_inputs'}
    assert get_space({**data, 'name': 'custom'}).signed_inputs is False
    assert get_space('small_signed').as_arg() == 'small_signed' and get_space('small_signed').signed_inputs
    assert not get_space('imagenet').signed_inputs  # the authors' space keeps their quantizer


def test_space_dicts_written_with_the_round1_field_names_still_load():
    data = {**get_space('small').to_dict(), 'name': 'old'}
    for new, old in (('ks_choices', 'kernel_choices'), ('e_choices', 'expand_choices'), ('d_choices', 'depth_choices')):
        data[old] = data.pop(new)
    assert get_space(data).ks_choices == get_space('small').ks_choices
