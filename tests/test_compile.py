"""The compiled (fused) LSQ quantizer computes what the eager one does, forward and backward."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from test_quant import _reference_lsq
from zoo_helpers import image_folder, inputs, small_net

import oqatnets
from oqatnets.quant import fused_quantizer_enabled, iter_quant_convs, lsq_quantize, set_fused_quantizer


def _grads(x, s, bits, signed, g, *, fused):
    x, s = x.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    out = lsq_quantize(x, s, bits, signed=signed, fused=fused)
    return (out, *torch.autograd.grad(out, (x, s), g))


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('bits,signed', [(2, False), (4, False), (3, True)])
def test_fused_quantizer_matches_eager_in_float32(bits, signed, channels_last):
    torch.manual_seed(bits)
    x = torch.randn(4, 6, 5, 7) * 2
    x[0, 0, 0, :4] = torch.tensor([0.5, 1.5, -0.5, 2.5]) * 0.25  # exact ties: round half to even
    s = torch.tensor([-0.25])  # negative: its magnitude is used and sign() enters the gradient
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(x.shape).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    out, gx, gs = _grads(x, s, bits, signed, g, fused=True)
    e_out, e_gx, e_gs = _grads(x, s, bits, signed, g, fused=False)
    assert torch.equal(out, e_out) and torch.equal(gx, e_gx)
    assert torch.allclose(gs, e_gs, rtol=1e-5, atol=1e-7)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize('bits,signed', [(2, True), (4, False), (8, True)])
def test_fused_quantizer_matches_autograd_reference_in_float64(bits, signed):
    torch.manual_seed(bits)
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2)
    s = torch.tensor([0.37], dtype=torch.float64)
    g = torch.randn_like(x)
    out, gx, gs = _grads(x, s, bits, signed, g, fused=True)
    x2, s2 = x.clone().requires_grad_(), s.clone().requires_grad_()
    ref = _reference_lsq(x2, s2, bits, signed)
    rx, rs = torch.autograd.grad(ref, (x2, s2), g)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    assert torch.allclose(gx, rx, rtol=1e-12, atol=0)
    assert torch.allclose(gs, rs, rtol=1e-10)


def test_fused_training_step_matches_eager():
    x, y = inputs(8).contiguous(memory_format=torch.channels_last), torch.arange(8) % 10
    grads = []
    for enabled in (True, False):
        model = set_fused_quantizer(small_net(2, seed=4).train().to(memory_format=torch.channels_last), enabled)
        assert fused_quantizer_enabled(model) == enabled
        F.cross_entropy(model(x), y).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-4, atol=1e-6), name


class _Captured(Exception):
    """Stops the command at its training call, with the model it was handed."""


@pytest.mark.parametrize('compile_flag', [True, False])
@pytest.mark.parametrize('command', ['train', 'finetune'])
def test_compile_option_fuses_the_trained_models_quantizers(command, compile_flag, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from oqatnets.cli.main import cli

    def capture(**kwargs):
        raise _Captured(kwargs.get('supernet', kwargs.get('model')))
    # the modules themselves: the package re-exports functions of the same names
    monkeypatch.setattr(importlib.import_module('oqatnets.training.joint'), 'train_supernet', capture)
    monkeypatch.setattr(importlib.import_module('oqatnets.training.finetune'), 'finetune', capture)
    data = str(image_folder(tmp_path / 'data', size=32))
    if command == 'train':
        args = ['train', 'supernet', '--space', 'small', '--holdout', '2', '--eval-images', '0']
    else:
        args = ['finetune', f"local-dir:{oqatnets.save_pretrained(small_net(2, num_classes=3), tmp_path / 'net')}"]
    result = CliRunner().invoke(cli, [*args, '--data', data, '--out', str(tmp_path / 'o'), '--device', 'cpu',
                                      *(['--compile'] if compile_flag else [])])
    assert isinstance(result.exception, _Captured), result.output
    model = result.exception.args[0]
    assert fused_quantizer_enabled(model) == compile_flag
    assert all(m.fused == compile_flag for _, m in iter_quant_convs(model))
