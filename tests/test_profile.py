"""profile() reproduces the authors' counters: README FLOPs/Params and profile_quant figures."""
from __future__ import annotations

import json

import pytest

import oqatnets
from oqatnets import SubnetSpec

# The 19 Pareto subnets of the authors' README (research/paper.md §5.2):
# bits, resolution, ks, e, d, README FLOPs (M MACs), README Params (M, counted without step sizes).
README_PARETO = [
    (4, 128, '33533557355355353575', '33443433333443666433', '22323', 55.385, 4.230),
    (4, 152, '55555337577557575335', '33463333334433664336', '22222', 68.360, 3.523),
    (4, 156, '35535353337735777337', '34663443334343344463', '22223', 82.601, 4.482),
    (4, 188, '73755355755555777733', '43343336433644644433', '22223', 120.970, 4.084),
    (4, 184, '53737357737333555537', '43634436634344436666', '23333', 168.057, 5.440),
    (4, 224, '53353753353553777773', '43433463444344644463', '22234', 222.192, 5.331),
    (4, 216, '53535573377577335537', '44343364344466436466', '24244', 286.910, 6.338),
    (3, 128, '73535333553355553777', '34343366446664443436', '22322', 59.499, 3.911),
    (3, 152, '33533355735337753373', '34344436336663364343', '22222', 73.368, 3.650),
    (3, 172, '53353773575555537735', '33333433446663446434', '22232', 119.535, 4.281),
    (3, 192, '33757533333335557775', '33364636443464433643', '24333', 174.790, 5.015),
    (3, 208, '55555355537355373753', '33336444644463346663', '22434', 219.644, 5.762),
    (3, 212, '75533553357775757333', '34436443643434466664', '24344', 292.019, 6.280),
    (2, 128, '73535333553355553777', '34343366446664443436', '22322', 59.499, 3.911),
    (2, 160, '35375333535535353377', '43446633444664643344', '22222', 87.848, 3.694),
    (2, 188, '75557355333337357753', '43344644633463666446', '22222', 135.267, 4.078),
    (2, 208, '55535555337333755537', '33646633433363446644', '23233', 199.504, 5.066),
    (2, 220, '55533735533557577533', '33346646634644336464', '33443', 289.256, 5.321),
    (2, 224, '55757553553537557737', '66446464646666666666', '44444', 455.741, 7.406),
]


def _spec(bits, r, ks, e, d):
    return SubnetSpec(r, [int(c) for c in ks], [int(c) for c in e], [int(c) for c in d], bits)


@pytest.mark.parametrize('bits,r,ks,e,d,flops,params', README_PARETO)
def test_readme_pareto_flops_and_params(bits, r, ks, e, d, flops, params):
    p = oqatnets.profile(_spec(bits, r, ks, e, d))
    assert round(p.macs, 3) == flops
    assert round(p.arch_params, 3) == params
    quantized_convs = 2 + 3 * sum(int(c) for c in d) + 2  # first block, active MBConvs, final, head
    assert round((p.params - p.arch_params) * 1e6) == 2 * quantized_convs


def test_reference_cases_match_authors_counters(reference_dir):
    """fp MACs/params and profile_quant's figures (8-bit-equivalent MACs, Mbit) of each case."""
    for case in json.loads((reference_dir / 'cases_b2.json').read_text()):
        p = oqatnets.profile(SubnetSpec(case['image_size'], case['ks'], case['e'], case['d'], case['bits']))
        assert round(p.macs, 3) == round(case['fp_macs_m'], 3)
        assert round(p.params, 3) == round(case['fp_params_m'], 3)
        assert round(p.macs_8bit_equiv, 3) == round(case['official_bitops_m'], 3)
        assert round(p.size_mbit, 3) == round(case['official_size_mbit'], 3)


def test_bitops_is_quantized_macs_times_bits_squared():
    spec = _spec(*README_PARETO[-2][:5])
    p2, p4 = oqatnets.profile(spec), oqatnets.profile(spec.replace(bits=4))
    quant_macs = (p2.macs - p2.float_macs) * 1e6
    assert p2.bitops == pytest.approx(quant_macs * 4 / 1e9)
    assert p4.bitops == pytest.approx(4 * p2.bitops)
    assert p2.macs == p4.macs and p2.params == p4.params and p4.size_mbit > p2.size_mbit


def test_profile_of_model_equals_profile_of_spec():
    spec = oqatnets.get_space('small').smallest(3)
    net = oqatnets.OQATNet(spec, space='small', num_classes=10)
    assert oqatnets.profile(net) == oqatnets.profile(spec, space='small', num_classes=10)
    n_params = sum(p.numel() for p in net.parameters())
    assert oqatnets.profile(net).params == pytest.approx(n_params / 1e6)


def test_profile_of_supernet_uses_active_subnet():
    sup = oqatnets.OQATSupernet(space='small', bits=2, num_classes=10)
    spec = sup.set_min_subnet()
    assert oqatnets.profile(sup) == oqatnets.profile(spec, space='small', num_classes=10)


def test_profile_rejects_other_objects():
    import torch.nn as nn
    with pytest.raises(TypeError, match='OQATNet'):
        oqatnets.profile(nn.Linear(2, 2))
