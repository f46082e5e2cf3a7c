"""Packed low-bit weights: bit layout, exact outputs at 2/3/4 bits, size against the profile."""
from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from zoo_helpers import inputs, small_net

import oqatnets
from oqatnets import load_packed, save_packed
from oqatnets.errors import InvalidArgumentError, InvalidFileError
from oqatnets.packing import FORMAT_NAME, pack_bits, packed_state_dict, unpack_bits
from oqatnets.quant import iter_quant_convs
from oqatnets.training import inherit_bits


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize('n', [1, 7, 8, 13, 1000])
def test_pack_unpack_round_trip(bits, n):
    values = torch.randint(0, 1 << bits, (n,), generator=torch.Generator().manual_seed(n * bits))
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (n * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits, n), values)


def test_three_bit_codes_cross_byte_boundaries_lsb_first():
    # 1..5 at 3 bits, LSB first: byte 0 = 1 | 2<<3 | (3 & 0b11)<<6, and the 3 spills into byte 1
    values = torch.tensor([1, 2, 3, 4, 5])
    stream = sum(int(v) << (3 * i) for i, v in enumerate(values))
    expected = [(stream >> (8 * k)) & 0xFF for k in range(2)]
    assert pack_bits(values, 3).tolist() == expected == [0xD1, 0x58]


def test_pack_rejects_out_of_range_values():
    with pytest.raises(ValueError, match=r'\[0, 3\]'):
        pack_bits(torch.tensor([4]), 2)


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_packed_file_reproduces_the_fake_quant_outputs_exactly(bits, tmp_path):
    model = small_net(bits, seed=bits)
    path = save_packed(model, tmp_path / 'model.packed.safetensors')
    with safe_open(str(path), framework='pt') as f:
        meta = f.metadata()
        keys = set(f.keys())
        codes = f.get_tensor('final_conv.weight_codes')
    assert meta['format'] == FORMAT_NAME and meta['bits'] == str(bits) and meta['weight_signed'] == 'true'
    assert json.loads(meta['shapes'])['final_conv'] == list(model.final_conv.weight.shape)
    assert codes.dtype == torch.uint8 and codes.numel() == -(-model.final_conv.weight.numel() * bits // 8)
    assert 'final_conv.weight' not in keys and 'final_conv.weight_step' in keys and 'conv_stem.weight' in keys
    loaded = load_packed(path)
    with torch.no_grad():
        assert torch.equal(loaded(inputs(4)), model(inputs(4)))
    for (name, a), (_, b) in zip(iter_quant_convs(model), iter_quant_convs(loaded)):
        assert torch.equal(a.weight_codes(), b.weight_codes()), name
        assert torch.equal(a.weight_step, b.weight_step) and torch.equal(a.act_step, b.act_step), name


def test_packing_needs_initialised_steps(tmp_path):
    model = oqatnets.OQATNet(small_net(2).spec, space='small', num_classes=10)
    with pytest.raises(ValueError, match='run one forward pass'):
        save_packed(model, tmp_path / 'x.safetensors')


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_packed_size_is_close_to_the_profile_size(bits, tmp_path):
    torch.manual_seed(0)
    model = oqatnets.create_model(f'oqat_{bits}bit_s')  # ImageNet space: the size the zoo reports
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    path = save_packed(model.eval(), tmp_path / 'p.safetensors')
    expected_bytes = oqatnets.profile(model).size_mbit * 1e6 / 8
    assert abs(path.stat().st_size - expected_bytes) / expected_bytes < 0.05


def test_a_one_bit_net_is_saved_without_a_packed_file_and_reloads(tmp_path):
    """The packed format holds 2 to 8 bits (1-bit weights are sign(w): -1, 0 or +1); saving a 1-bit net writes the plain
    file only instead of failing in the packer, and ``packed_state_dict`` says why it refuses."""
    net = inherit_bits(small_net(2), 1).eval()
    folder = oqatnets.save_pretrained(net, tmp_path / 'b1')
    assert (folder / 'model.safetensors').is_file() and not (folder / 'model.packed.safetensors').exists()
    again = oqatnets.create_model(f'local-dir:{folder}', pretrained=True).eval()
    with torch.no_grad():
        assert again.bits == 1 and torch.equal(again(inputs()), net(inputs()))
    with pytest.raises(InvalidArgumentError, match='1-bit weights are not packed'):
        packed_state_dict(net)


def _rewritten(path, tmp_path, *, tensors=None, **metadata):
    """A copy of the packed file at ``path`` with some metadata (or tensors) replaced."""
    with safe_open(str(path), framework='pt') as f:
        meta = {**f.metadata(), **metadata}
        state = {k: f.get_tensor(k) for k in f.keys()}
    out = tmp_path / 'edited.safetensors'
    save_file({**state, **(tensors or {})}, str(out), metadata=meta)
    return out


@pytest.mark.parametrize('edit,words', [
    (dict(bits='2', code_offset='-2'), 'codes packed at 2 bits for a 3-bit model record'),
    (dict(code_offset='5'), 'code_offset 5 is not the 3-bit offset'),
    (dict(format_version='-1'), 'declares version -1'),
    (dict(shapes=json.dumps({'final_conv': [True, 1, 1, 1]})), 'shape of final_conv'),
    (dict(tensors={'final_conv.weight_codes': torch.zeros(10)}), 'not packed bytes'),
    (dict(pretrained_cfg=json.dumps({'bits': 4})), 'pretrained_cfg.bits is 4 but model_args build 3'),
    (dict(pretrained_cfg=json.dumps({'num_classes': 7})), 'contradicts itself'),
    (dict(pretrained_cfg=json.dumps({'num_classes': 10, 'label_names': ['a']})), 'label_names has 1 names for 10'),
])
def test_a_packed_file_that_contradicts_itself_is_refused_in_one_line(edit, words, tmp_path):
    """Packed codes are read only as the file's own record describes them; anything else is corruption."""
    path = save_packed(small_net(3, seed=3), tmp_path / 'model.packed.safetensors')
    edited = _rewritten(path, tmp_path, **edit)
    with pytest.raises(InvalidFileError, match=re.escape(words)) as info:
        load_packed(edited)
    assert str(edited) in str(info.value) and '\n' not in str(info.value)


def test_a_packed_file_names_itself_not_the_folder_its_model_came_from(tmp_path):
    model = small_net(2, seed=2)
    folder = oqatnets.save_pretrained(model, tmp_path / 'net')
    loaded = oqatnets.create_model(f'local-dir:{folder}', pretrained=True)
    exported = save_packed(loaded, tmp_path / 'export.safetensors')
    with safe_open(str(exported), framework='pt') as f:
        embedded = json.loads(f.metadata()['pretrained_cfg'])
    assert 'file' not in embedded and 'source' not in embedded  # where it was loaded from is no fact of the file
    assert load_packed(exported).pretrained_cfg['file'] == str(exported)
