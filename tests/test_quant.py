"""LSQ semantics: ranges, rounding, straight-through gradients, step gradient scale, init, caching."""
from __future__ import annotations

import math

import pytest
import torch

from oqatnets.quant import QuantConv2d, get_bits, lsq_quantize, quant_range, set_bits, validate_bits


def _reference_lsq(x, s, bits, signed):
    """LSQ written the textbook way (grad_scale + round_pass with autograd), for comparison."""
    qn, qp = quant_range(bits, signed=signed)
    g = 1.0 / math.sqrt(x.numel() * qp)
    s = ((s - s * g).detach() + s * g).abs()
    v = (x / s).clamp(qn, qp)
    return ((v.round() - v).detach() + v) * s


@pytest.mark.parametrize('bits,signed,expected', [(2, True, (-2, 1)), (3, True, (-4, 3)), (4, True, (-8, 7)),
                                                  (2, False, (0, 3)), (4, False, (0, 15)), (1, True, (-1, 1))])
def test_quant_range(bits, signed, expected):
    assert quant_range(bits, signed=signed) == expected


def test_unsigned_activations_clip_negatives_and_round_half_even():
    step = torch.tensor([0.5])
    x = torch.tensor([-3.0, 0.25, 0.75, 1.25, 100.0])
    # v = [-6, 0.5, 1.5, 2.5, 200] → clamp [0, 3] → half-even round [0, 0, 2, 2, 3]
    assert lsq_quantize(x, step, 2, signed=False).tolist() == [0.0, 0.0, 1.0, 1.0, 1.5]


def test_negative_step_uses_its_magnitude():
    x = torch.randn(100)
    assert torch.equal(lsq_quantize(x, torch.tensor([-0.3]), 3, signed=True),
                       lsq_quantize(x, torch.tensor([0.3]), 3, signed=True))


@pytest.mark.parametrize('bits', [2, 3, 4, 8])
@pytest.mark.parametrize('signed', [True, False])
def test_fused_function_matches_autograd_reference(bits, signed):
    torch.manual_seed(bits)
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2).requires_grad_()
    s = torch.tensor([0.37], dtype=torch.float64, requires_grad=True)
    out = lsq_quantize(x, s, bits, signed=signed)
    g = torch.randn_like(out)
    gx, gs = torch.autograd.grad(out, (x, s), g)
    x2, s2 = x.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    ref = _reference_lsq(x2, s2, bits, signed)
    rx, rs = torch.autograd.grad(ref, (x2, s2), g)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    assert torch.allclose(gx, rx, rtol=1e-12, atol=0)
    assert torch.allclose(gs, rs, rtol=1e-10)


def test_step_gradient_scale_counts_the_whole_tensor():
    """Doubling the batch doubles numel, so the same per-element signal gets 1/sqrt(2) the scale."""
    torch.manual_seed(0)
    x = torch.rand(2, 4, 3, 3, dtype=torch.float64)
    s1 = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
    s2 = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
    lsq_quantize(x, s1, 4, signed=False).sum().backward()
    lsq_quantize(torch.cat([x, x]), s2, 4, signed=False).sum().backward()
    assert s2.grad.item() == pytest.approx(s1.grad.item() * 2 / math.sqrt(2), rel=1e-12)


def test_32_bits_is_identity():
    x = torch.randn(10)
    assert lsq_quantize(x, torch.tensor([0.1]), 32, signed=True) is x


@pytest.mark.parametrize('bad', [0, 5, 16, 2.0, '4', True])
def test_bad_bits_are_rejected(bad):
    with pytest.raises(ValueError, match='not supported'):
        validate_bits(bad)


def test_quant_conv_initialises_steps_lsq_style_once():
    torch.manual_seed(0)
    conv = QuantConv2d(4, 8, 3, bits=2)
    x = torch.rand(2, 4, 6, 6)
    conv(x)
    assert conv.act_step.item() == pytest.approx(2 * x.abs().mean().item() / math.sqrt(3))
    assert conv.weight_step.item() == pytest.approx(2 * conv.weight.abs().mean().item() / math.sqrt(1))
    before = conv.act_step.clone()
    conv(x * 10)
    assert torch.equal(conv.act_step, before)


def test_signed_input_conv_keeps_negative_inputs_on_the_signed_grid():
    torch.manual_seed(0)
    conv = QuantConv2d(4, 8, 1, bits=2, signed_input=True)
    x = torch.randn(2, 4, 6, 6)
    conv.train()
    conv(x)
    assert conv.act_step.item() == pytest.approx(2 * x.abs().mean().item() / math.sqrt(1))  # signed Qp = 1
    q = conv.quantize_input(x)
    codes = torch.round(q / conv.act_step.abs())
    assert set(codes.unique().tolist()) == {-2.0, -1.0, 0.0, 1.0}
    conv.eval()
    with torch.no_grad():
        cached = conv(x)  # the inference path: integer codes convolved with the folded weight
    with torch.enable_grad():
        reference = torch.nn.functional.conv2d(conv.quantize_input(x), conv.quantize_weight(conv.weight))
    assert torch.allclose(cached, reference, atol=1e-6)
    unsigned = QuantConv2d(4, 8, 1, bits=2)
    unsigned.load_state_dict(conv.state_dict())
    assert unsigned.quantize_input(x).min() == 0  # the authors' quantizer clips the same input at 0


def test_quant_conv_gradients_reach_weight_and_both_steps():
    conv = QuantConv2d(4, 8, 3, bits=3)
    conv(torch.rand(2, 4, 6, 6)).square().sum().backward()
    for p in (conv.weight, conv.act_step, conv.weight_step):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_eval_weight_cache_tracks_weight_and_step_changes():
    conv = QuantConv2d(4, 8, 1, bits=4).eval()
    x = torch.rand(1, 4, 3, 3)
    with torch.no_grad():
        y1 = conv(x)
        conv.weight.mul_(2)
        y2 = conv(x)
        conv.weight_step.mul_(2)
        y3 = conv(x)
    conv.train()
    assert not torch.equal(y1, y2) and not torch.equal(y2, y3)
    assert torch.allclose(y3, conv(x).detach(), rtol=1e-5, atol=1e-6)


def test_weight_codes_are_the_integers_of_the_fake_quant_weight():
    conv = QuantConv2d(4, 8, 3, bits=3)
    conv(torch.rand(1, 4, 5, 5))
    codes = conv.weight_codes()
    assert codes.dtype == torch.int8 and codes.min() >= -4 and codes.max() <= 3
    assert torch.equal(codes.float() * conv.weight_step.abs(), conv.quantize_weight(conv.weight).detach())


def test_set_bits_and_get_bits():
    model = torch.nn.Sequential(QuantConv2d(2, 2, 1, bits=4), QuantConv2d(2, 2, 1, bits=4))
    assert get_bits(model) == 4
    set_bits(model, 2)
    assert get_bits(model) == 2
    model[0].bits = 3
    with pytest.raises(ValueError, match='mixes'):
        get_bits(model)


def test_one_bit_weights_are_signs_times_step_with_straight_through_gradients():
    x = torch.tensor([-0.7, -0.1, 0.2, 3.0], requires_grad=True)
    step = torch.tensor([0.5], requires_grad=True)
    out = lsq_quantize(x, step, 1, signed=True)
    assert out.tolist() == [-0.5, -0.5, 0.5, 0.5]
    out.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]  # straight through inside (-|s|, |s|) only
    assert step.grad is not None and step.grad.item() != 0
