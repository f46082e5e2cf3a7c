"""The fused LSQ quantizer (the C kernel on the CPU, torch.compile elsewhere) computes what the eager one does,
forward and backward, and training turns it on by default where it can be built."""
from __future__ import annotations

import importlib
import logging

import pytest
import torch
import torch.nn.functional as F
from test_quant import _reference_lsq
from zoo_helpers import image_folder, inputs, small_net

import oqatnets
import oqatnets.quant as quant
from oqatnets._lsq_kernel import load_kernel
from oqatnets.errors import KernelUnavailableError
from oqatnets.quant import fused_quantizer_enabled, lsq_quantize, set_bits, set_fused_quantizer
from oqatnets.training.loop import resolve_fused_quantizer

CPU = torch.device('cpu')


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


def _graph_ops(t: torch.Tensor) -> list[str]:
    """The names of the autograd nodes behind ``t``."""
    seen, stack, names = set(), [t.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def _act_grads(x, s, bits, signed, g, *, fused, act, absorbed):
    """Output and gradients of ``act`` then LSQ, the activation handed to the quantizer or applied first."""
    x, s = x.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    if absorbed:
        out = lsq_quantize(x, s, bits, signed=signed, fused=fused, act=act)
        applied = not ((act == 'hardswish' and fused) or (act == 'relu' and not signed))
        assert any(name.startswith(('Hardswish', 'Relu')) for name in _graph_ops(out)) == applied
    else:
        out = lsq_quantize(getattr(F, act)(x), s, bits, signed=signed, fused=fused)
    return (out, *torch.autograd.grad(out, (x, s), g))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('act,bits,signed', [('hardswish', 2, False), ('hardswish', 4, True), ('relu', 3, False),
                                             ('relu', 4, True)])
def test_an_absorbed_activation_changes_no_value(act, bits, signed, fused, dtype):
    """Hard-swish inside the fused kernel and a ReLU left to an unsigned grid's clamp give bit for bit the output
    and the input and step gradients of the activation applied first, on one thread and split over threads."""
    torch.manual_seed(bits)
    x = (torch.randn(2, 40, 31, 29, dtype=dtype) * 3).contiguous(memory_format=torch.channels_last)
    x[0, :, 0, 0] = torch.linspace(-3.5, 3.5, 40, dtype=dtype)  # hard-swish's kinks at ±3, zero
    s, g = torch.tensor([0.21], dtype=dtype), torch.randn(x.shape, dtype=dtype)
    for threads in (1, 2):
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(threads)
            out, gx, gs = _act_grads(x, s, bits, signed, g, fused=fused, act=act, absorbed=True)
            e_out, e_gx, e_gs = _act_grads(x, s, bits, signed, g, fused=fused, act=act, absorbed=False)
        finally:
            torch.set_num_threads(before)
        assert torch.equal(out, e_out) and torch.equal(gx, e_gx) and torch.equal(gs, e_gs)
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.fixture()
def kernel_calls(monkeypatch) -> list:
    """The shapes each call of the fused backend was given (a spy on ``quant._fused_backend``)."""
    calls = []
    backend = quant._fused_backend
    monkeypatch.setattr(quant, '_fused_backend', lambda t: calls.append(t.shape) or backend(t))
    return calls


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('act,bits,signed', [(None, 2, False), ('hardswish', 3, True), ('relu', 4, False)])
def test_without_gradients_a_fused_quantizer_still_runs_one_pass_and_changes_no_value(act, bits, signed, dtype,
                                                                                     kernel_calls):
    """Evaluation and BN calibration (no gradients) of a fused model go through the kernel too, bit for bit eager."""
    torch.manual_seed(bits)
    x = (torch.randn(3, 16, 9, 11, dtype=dtype) * 2).contiguous(memory_format=torch.channels_last)
    s = torch.tensor([0.3], dtype=dtype)
    with torch.inference_mode():
        eager = lsq_quantize(x, s, bits, signed=signed, act=act)
        fused = lsq_quantize(x, s, bits, signed=signed, act=act, fused=True)
    assert len(kernel_calls) == 1 and torch.equal(fused, eager) and fused.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('channels_last', [False, True])
def test_a_fused_supernet_evaluates_a_subnet_to_the_same_logits(channels_last, kernel_calls):
    """The search's fitness: a subnet inside its supernet (sliced weights, so not the static nets' cached path)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    supernet = oqatnets.OQATSupernet(space='small_signed', bits=2, num_classes=10).to(memory_format=fmt)
    supernet.set_active_subnet(small_net(2).spec)
    x = inputs(6).contiguous(memory_format=fmt)
    with torch.no_grad():
        supernet.train()(x)  # LSQ's init
        eager = supernet.eval()(x)
        assert not kernel_calls
        fused = set_fused_quantizer(supernet)(x)
    assert kernel_calls and torch.equal(fused, eager)


def test_only_a_relu_before_an_unsigned_grid_is_clamped_away():
    conv = quant.QuantConv2d(4, 4, 1, bits=4)
    assert conv.clamps_away(torch.nn.ReLU()) and not conv.clamps_away(torch.nn.Hardswish())
    assert not quant.QuantConv2d(4, 4, 1, bits=4, signed_input=True).clamps_away(torch.nn.ReLU())
    assert not set_bits(conv, 32).clamps_away(torch.nn.ReLU())


def test_lsq_quantize_refuses_an_activation_it_cannot_absorb():
    with pytest.raises(oqatnets.errors.InvalidArgumentError, match="act='gelu'"):
        lsq_quantize(torch.randn(3), torch.tensor([0.1]), 4, signed=False, act='gelu')


@pytest.mark.parametrize('training', [True, False])
@pytest.mark.parametrize('fused', [True, False])
def test_quantized_convs_that_absorb_their_activation_compute_the_same_network(fused, training, monkeypatch):
    """A net whose convs take the activation before them (the blocks' ``act=``) equals one whose activations run
    first (nothing absorbed): output and every gradient in training, the output in eval, and the step sizes LSQ
    initialises on the first forward."""
    x, y = inputs(8).contiguous(memory_format=torch.channels_last), torch.arange(8) % 10
    results = []
    for names in (dict(quant._ACTIVATION_NAMES), {}):
        monkeypatch.setattr(quant, '_ACTIVATION_NAMES', names)
        torch.manual_seed(3)
        model = oqatnets.OQATNet(small_net(4).spec, space='small', num_classes=10).to(memory_format=torch.channels_last)
        set_fused_quantizer(model.train(), fused)
        with torch.no_grad():
            model(x[:4])  # LSQ's init, which reads the activations themselves
        if training:
            loss = F.cross_entropy(model(x), y)
            activations = sum(name.startswith(('Hardswish', 'Relu')) for name in _graph_ops(loss))
            loss.backward()
            results.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            results[-1]['activation nodes'] = torch.tensor(activations)
        else:
            with torch.inference_mode():
                results.append({'logits': model.eval()(x)})
        results[-1]['act_steps'] = torch.cat([m.act_step for _, m in quant.iter_quant_convs(model)]).detach()
    if training:  # fewer activations left in the graph: the absorbed ones
        assert results[0].pop('activation nodes') < results[1].pop('activation nodes')
    assert results[0].keys() == results[1].keys()
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name


class _Captured(Exception):
    """Stops the command at its training call, with the model it was handed."""


def test_the_compiled_backend_used_off_the_cpu_matches_eager(monkeypatch):
    monkeypatch.setattr(quant, '_fused_backend', lambda t: quant._CompiledLSQ)
    torch.manual_seed(0)
    x = (torch.randn(4, 6, 5, 7) * 2).contiguous(memory_format=torch.channels_last)
    s, g = torch.tensor([0.25]), torch.randn(x.shape).contiguous(memory_format=torch.channels_last)
    out, gx, gs = _grads(x, s, 3, True, g, fused=True)
    e_out, e_gx, e_gs = _grads(x, s, 3, True, g, fused=False)
    assert torch.equal(out, e_out) and torch.equal(gx, e_gx)
    assert torch.allclose(gs, e_gs, rtol=1e-5, atol=1e-7)


def test_the_compiled_backend_makes_its_range_tensors_once_and_trains_after_inference(monkeypatch):
    """A new CUDA tensor per call is a host-to-device copy that waits for the stream (four per quantized conv
    and step); Qn and Qp are made once per range, dtype and device, as ordinary tensors under inference mode too."""
    monkeypatch.setattr(quant, '_fused_backend', lambda t: quant._CompiledLSQ)
    quant._bounds.cache_clear()
    torch.manual_seed(0)
    x, s = torch.randn(2, 3, 4, 4) * 2, torch.tensor([0.25])
    with torch.inference_mode():
        quant.lsq_quantize(x, s, 3, signed=True, fused=True)
    made = quant._bounds(-4, 3, torch.float32, torch.device('cpu'))
    assert not any(t.is_inference() for t in made)
    g = torch.randn(x.shape)
    out, gx, _ = _grads(x, s, 3, True, g, fused=True)
    assert quant._bounds.cache_info().currsize == 1 and quant._bounds(-4, 3, torch.float32, torch.device('cpu')) is made
    e_out, e_gx, _ = _grads(x, s, 3, True, g, fused=False)
    assert torch.equal(out, e_out) and torch.equal(gx, e_gx)


def test_the_cpu_kernel_gives_the_same_values_on_any_number_of_threads():
    """Above 65 536 elements the kernel splits over torch's threads: outputs and input gradients equal eager's,
    and the step gradient is the same on 1, 2 and 3 threads."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 33, 31).contiguous(memory_format=torch.channels_last) * 3
    s, g = torch.tensor([0.3]), torch.randn(x.shape)
    e_out, e_gx, e_gs = _grads(x, s, 4, False, g, fused=False)
    before = torch.get_num_threads()
    step_grads = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out, gx, gs = _grads(x, s, 4, False, g, fused=True)
            assert torch.equal(out, e_out) and torch.equal(gx, e_gx)
            step_grads.append(gs)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(step_grads[0], step_grads[1]) and torch.equal(step_grads[0], step_grads[2])
    assert torch.allclose(step_grads[0], e_gs, rtol=1e-5)


def test_the_cpu_kernel_passes_non_finite_inputs_as_eager_does():
    """NaN stays NaN forward and gets no gradient (eager's vectorised kernel); ±inf clip to the range's ends."""
    torch.manual_seed(0)
    x = torch.randn(4, 32, 32, 32)
    x[0, 0, 0, :3] = torch.tensor([float('nan'), float('inf'), -float('inf')])
    s, g = torch.tensor([0.3]), torch.randn(x.shape)
    out, gx, gs = _grads(x, s, 3, True, g, fused=True)
    e_out, e_gx, e_gs = _grads(x, s, 3, True, g, fused=False)
    assert torch.allclose(out, e_out, rtol=0, atol=0, equal_nan=True) and torch.isnan(out[0, 0, 0, 0])
    assert torch.equal(gx, e_gx) and gx[0, 0, 0, 0] == 0
    assert torch.isnan(gs).all() and torch.isnan(e_gs).all()


@pytest.fixture
def fresh_kernel():
    """Forget the loaded kernel so that the next use builds it again (with the test's CC); again afterwards."""
    load_kernel.cache_clear()
    yield
    load_kernel.cache_clear()


@pytest.mark.parametrize('compiler,message', [('no-such-cc', 'no C compiler'), ('false', 'could not build')])
def test_without_a_compiler_the_default_trains_eager_and_an_explicit_request_is_refused(
        compiler, message, fresh_kernel, monkeypatch, caplog):
    monkeypatch.setenv('CC', compiler)
    with caplog.at_level(logging.WARNING, logger='oqatnets.training'):
        assert resolve_fused_quantizer(None, CPU) is False
    assert message in caplog.text and 'eager quantizer' in caplog.text
    with pytest.raises(KernelUnavailableError, match=message):
        resolve_fused_quantizer(True, CPU)
    with pytest.raises(KernelUnavailableError, match=message):
        set_fused_quantizer(small_net(2), True)
    assert resolve_fused_quantizer(False, CPU) is False


def test_the_default_is_fused_on_the_cpu_and_eager_elsewhere():
    assert resolve_fused_quantizer(None, CPU) is True
    assert resolve_fused_quantizer(None, torch.device('cuda')) is False
    assert resolve_fused_quantizer(True, torch.device('cuda')) is True  # torch.compile's kernels there


@pytest.mark.parametrize('requested,fused', [(None, True), (False, False)])
def test_training_applies_the_default_or_the_request(requested, fused, tmp_path):
    from training_helpers import TINY_SPACE, synthetic_dataset

    from oqatnets.supernet import OQATSupernet
    from oqatnets.training import get_recipe, init_distributed, train_supernet
    torch.manual_seed(0)
    net = OQATSupernet(space=TINY_SPACE, bits=4, num_classes=4)
    train_supernet(supernet=net, train_set=synthetic_dataset(16), recipe=get_recipe('small').override(batch_size=16),
                   bits=4, epochs=1, out_dir=tmp_path, ctx=init_distributed(device='cpu'), log_every=1000,
                   fused_quantizer=requested)
    assert fused_quantizer_enabled(net) is fused


def test_an_explicit_compile_without_a_compiler_is_refused_before_anything_is_written(fresh_kernel, tmp_path,
                                                                                        monkeypatch):
    from click.testing import CliRunner

    from oqatnets.cli.main import cli
    monkeypatch.setenv('CC', 'no-such-cc')
    data = str(image_folder(tmp_path / 'data', size=32))
    result = CliRunner().invoke(cli, ['train', 'supernet', '--space', 'small', '--holdout', '2', '--eval-images', '0',
                                      '--data', data, '--out', str(tmp_path / 'o'), '--device', 'cpu', '--compile'])
    assert result.exit_code == 1 and 'no C compiler' in result.output and 'Traceback' not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('compile_flag,fused', [('--compile', True), ('--no-compile', False), (None, True)])
@pytest.mark.parametrize('command', ['train', 'finetune', 'search'])
def test_compile_option_fuses_the_trained_models_quantizers(command, compile_flag, fused, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from oqatnets.cli.main import cli

    def capture(**kwargs):
        raise _Captured(kwargs['fused_quantizer'])
    # the modules themselves: the package re-exports functions of the same names
    monkeypatch.setattr(importlib.import_module('oqatnets.training.joint'), 'train_supernet', capture)
    monkeypatch.setattr(importlib.import_module('oqatnets.training.finetune'), 'finetune', capture)
    monkeypatch.setattr(importlib.import_module('oqatnets.training.search'), 'run_search',
                        lambda **kwargs: capture(fused_quantizer=all(map(fused_quantizer_enabled, kwargs['supernets']))))
    data = str(image_folder(tmp_path / 'data', size=32))
    if command == 'train':
        args = ['train', 'supernet', '--space', 'small', '--holdout', '2', '--eval-images', '0', '--batch-size', '4']
    elif command == 'finetune':
        args = ['finetune', f"local-dir:{oqatnets.save_pretrained(small_net(2, num_classes=3), tmp_path / 'net')}"]
    else:
        supernet = oqatnets.create_supernet(2, space='small', num_classes=3)
        args = ['search', f"local-dir:{oqatnets.save_pretrained(supernet, tmp_path / 'supernet')}", '--holdout', '2']
    result = CliRunner().invoke(cli, [*args, '--data', data, '--out', str(tmp_path / 'o'), '--device', 'cpu',
                                      *([compile_flag] if compile_flag else [])])
    assert isinstance(result.exception, _Captured), result.output
    assert result.exception.args[0] is fused


def _depthwise_grads(x, w, g, stride, *, fused):
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    out = quant._conv2d(x, w, stride, w.shape[-1] // 2, x.shape[1], fused=fused)
    return (out, *torch.autograd.grad(out, (x, w), g))


@pytest.mark.parametrize('k,stride,size', [(5, 1, (9, 9)), (7, 1, (4, 4)), (7, 2, (13, 10)), (5, 2, (6, 11))])
def test_the_depthwise_weight_gradient_kernel_matches_autograd(k, stride, size):
    """Output and input gradient are oneDNN's, bit for bit; the weight gradient equals autograd's in float64 and
    is as close to the exact one as oneDNN's in float32, the same on 1, 2 and 3 threads."""
    torch.manual_seed(0)
    x = torch.randn(6, 24, *size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 1, k, k, dtype=torch.float64)
    g = torch.randn(F.conv2d(x, w, None, stride, k // 2, 1, 24).shape, dtype=torch.float64)
    exact = _depthwise_grads(x, w, g, stride, fused=False)
    fused64 = _depthwise_grads(x, w, g, stride, fused=True)
    assert torch.equal(fused64[0], exact[0]) and torch.equal(fused64[1], exact[1])
    assert torch.allclose(fused64[2], exact[2], rtol=1e-12, atol=1e-12)
    x32, w32, g32 = x.float(), w.float(), g.float().contiguous(memory_format=torch.channels_last)
    eager = _depthwise_grads(x32, w32, g32, stride, fused=False)
    before, weight_grads = torch.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out, gx, gw = _depthwise_grads(x32, w32, g32, stride, fused=True)
            assert torch.equal(out, eager[0]) and torch.equal(gx, eager[1])
            weight_grads.append(gw)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(gw, weight_grads[0]) for gw in weight_grads)
    error, onednn_error = ((gw.double() - exact[2]).abs().max() for gw in (weight_grads[0], eager[2]))
    assert error <= 2 * onednn_error + 1e-6


def test_a_fused_training_step_takes_the_weight_gradient_of_large_depthwise_kernels_from_the_c_kernel(monkeypatch):
    """5×5 and 7×7 depthwise convs of a fused net that trains; not 3×3 ones, not an eager net, not without gradients."""
    kernel_sizes = []
    original = type(load_kernel()).depthwise_weight_grad
    monkeypatch.setattr(type(load_kernel()), 'depthwise_weight_grad',
                        lambda self, x, g, k, **kw: kernel_sizes.append(k) or original(self, x, g, k, **kw))
    x, y = inputs(4).contiguous(memory_format=torch.channels_last), torch.arange(4)
    for fused in (False, True):
        model = set_fused_quantizer(small_net(4, seed=1).train().to(memory_format=torch.channels_last), fused)
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            model(x)
        assert bool(kernel_sizes) == fused
    depthwise = [m.weight.shape[-1] for _, m in quant.iter_quant_convs(model) if m.groups > 1]
    assert 3 in depthwise and sorted(kernel_sizes) == sorted(k for k in depthwise if k >= 5)
