"""The authors' checkpoint: conversion, logits in float64, LSQ gradients, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import oqatnets
from oqatnets import SubnetSpec
from oqatnets.errors import InvalidArgumentError
from oqatnets.official import OfficialCheckpointError, bits_from_official_name, official_to_oqat_key


def _cases(reference_dir):
    return json.loads((reference_dir / 'cases_b2.json').read_text())


def test_every_official_key_maps(reference_dir):
    keys = [line.split()[0] for line in (reference_dir / 'supernet_keys.txt').read_text().splitlines() if line]
    mapped = {official_to_oqat_key(k) for k in keys}
    assert len(mapped) == len(keys) == 603
    own = set(oqatnets.OQATSupernet().state_dict())
    assert mapped == {k for k in own if not k.endswith('step_initialized')}


def test_extracted_subnets_reproduce_official_logits_in_float64(official_b2, reference_dir):
    arrays = np.load(reference_dir / 'cases_b2.npz')
    for case in _cases(reference_dir):
        spec = SubnetSpec(case['image_size'], case['ks'], case['e'], case['d'], case['bits'])
        net = official_b2.get_subnet(spec).eval().double()  # extracted in fp32, then cast, as they did
        with torch.no_grad():
            logits = net(torch.from_numpy(arrays[f"input_{case['index']}"]).double()).numpy()
        expected = arrays[f"logits_{case['index']}"]
        assert np.abs(logits - expected).max() <= 1e-6 * max(1.0, np.abs(expected).max()), case['name']


def test_lsq_backward_matches_official_step_gradients(official_b2, reference_dir):
    ref = json.loads((reference_dir / 'grads_b2.json').read_text())
    spec = SubnetSpec(ref['image_size'], ref['ks'], ref['e'], ref['d'], ref['bits'])
    net = official_b2.get_subnet(spec).double().eval()
    x = torch.from_numpy(np.load(reference_dir / 'cases_b2.npz')[ref['input']]).double()
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor(ref['labels']))
    loss.backward()
    assert loss.item() == pytest.approx(ref['loss'], rel=1e-6)
    params = dict(net.named_parameters())
    assert len(ref['step_size_grads']) == 2 * sum(1 for _ in oqatnets.quant.iter_quant_convs(net))
    for key, expected in ref['step_size_grads'].items():
        assert params[official_to_oqat_key(key)].grad.item() == pytest.approx(expected, rel=1e-6), key


def test_bits_come_from_the_file_name(tmp_path):
    assert bits_from_official_name('oqa_mbv3_d234_e346_k357_w1.0_b3') == 3
    with pytest.raises(InvalidArgumentError, match='bits='):
        bits_from_official_name(tmp_path / 'weights.pth')
    assert bits_from_official_name(tmp_path / 'weights.pth', 3) == 3  # a renamed file: the caller says
    with pytest.raises(InvalidArgumentError, match='holds a 3-bit supernet'):
        bits_from_official_name('oqa_mbv3_d234_e346_k357_w1.0_b3', 4)


def test_not_a_checkpoint_gets_a_clear_error(tmp_path):
    junk = tmp_path / 'oqa_mbv3_d234_e346_k357_w1.0_b4'
    junk.write_bytes(b'not a pickle at all')
    with pytest.raises(OfficialCheckpointError, match='not a loadable OQA checkpoint'):
        oqatnets.load_official_supernet(junk)
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
        oqatnets.load_official_supernet(tmp_path / 'missing_b2')


def test_mismatched_checkpoint_gets_a_clear_error(tmp_path):
    state = {'first_conv.conv.weight': torch.zeros(16, 3, 3, 3), 'classifier.linear.weight': torch.zeros(10, 1280),
             'classifier.linear.bias': torch.zeros(10)}
    path = tmp_path / 'partial_b2'
    torch.save({'state_dict': state}, path)
    with pytest.raises(OfficialCheckpointError, match='missing keys'):
        oqatnets.load_official_supernet(path)


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))
    path = tmp_path / 'evil_b2'
    torch.save({'state_dict': Evil()}, path)
    with pytest.raises(OfficialCheckpointError, match='not a loadable'):
        oqatnets.load_official_supernet(path)
