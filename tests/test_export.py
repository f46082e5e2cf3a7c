"""ONNX export (fast exact form and QCDQ form) checked in onnxruntime against the PyTorch fake-quant model."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from zoo_helpers import inputs, small_net

import oqatnets
from oqatnets.errors import ExportMismatchError
from oqatnets.quant import iter_quant_convs, quant_codes
from oqatnets.spec import get_space

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

from oqatnets.export import INT4_OPSET, _GraphBuilder, _round_clip_dw, check_onnx, export_onnx  # noqa: E402

# Agreement thresholds: a random-weight net has tiny logit margins, and PyTorch and onnxruntime sum
# convolutions in different orders, so an activation within an ulp of a rounding tie can land one
# step apart and the step propagates; a wrong scale, bias or rounding rule drops agreement far lower.


def lively(model: oqatnets.OQATNet, *, seed: int = 99) -> oqatnets.OQATNet:
    """``model`` with BN statistics measured on random inputs, so its logits depend on the input.

    (A random-init net whose BN keeps its initial statistics quantizes almost every activation to
    the same code and predicts one class for every input, which would make agreement vacuous.)
    """
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    r = model.spec.resolution
    model.train()
    with torch.no_grad():
        model(torch.randn(32, model.in_chans, r, r, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def initializers(proto) -> dict:
    return {i.name: i for i in proto.graph.initializer}


def session(path) -> 'ort.InferenceSession':
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_fast_onnx_matches_pytorch(bits, tmp_path):
    model = lively(small_net(bits, seed=10 + bits))
    x = inputs(256)
    with torch.no_grad():
        assert model(x).argmax(1).unique().numel() >= 3  # the comparison is not vacuous
    path = export_onnx(model, tmp_path / 'm.onnx')
    result = check_onnx(model, path, inputs=x, atol=0.05, min_top1_agreement=0.9)
    assert result['top1_agreement'] >= 0.9 and result['relative_mean_diff'] < 0.05
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert 'QuantizeLinear' not in ops and 'DequantizeLinear' not in ops and 'BatchNormalization' not in ops
    assert {'format': 'onnx', 'bits': str(bits)}.items() <= {p.key: p.value for p in proto.metadata_props}.items()


@pytest.mark.parametrize('int4', [False, True])
def test_fast_onnx_stores_only_integer_weight_codes(int4, tmp_path):
    model = lively(small_net(2, seed=3))
    path = export_onnx(model, tmp_path / 'm.onnx', int4=int4)
    proto = onnx.load(str(path))
    inits = initializers(proto)
    code_type = onnx.TensorProto.INT4 if int4 else onnx.TensorProto.INT8
    assert proto.opset_import[0].version == (INT4_OPSET if int4 else 17)
    for name, conv in iter_quant_convs(model):
        codes = [i for n, i in inits.items() if n.startswith(f'{name}_weight_codes')]
        assert len(codes) == 1 and codes[0].data_type == code_type
        stored = onnx.numpy_helper.to_array(codes[0]).astype(np.int8)
        assert np.array_equal(stored, conv.weight_codes().numpy())
    # No float initializer holds a quantized conv's weight (no fp32 copy): a conv's float constants
    # are its per-channel scale and bias and the rounding convs' per-channel constants.
    for name, conv in iter_quant_convs(model):
        floats = [i for n, i in inits.items() if n.startswith(f'{name}_') and i.data_type == onnx.TensorProto.FLOAT]
        assert floats and all(np.prod(i.dims) <= max(conv.in_channels, conv.out_channels) for i in floats)
    int8_path = export_onnx(model, tmp_path / 'int8.onnx')
    x = inputs(16).numpy()
    assert np.array_equal(session(path).run(None, {'input': x})[0], session(int8_path).run(None, {'input': x})[0])


def test_fast_onnx_feeds_every_quantized_conv_integer_codes_in_range(tmp_path):
    model = lively(small_net(3, seed=5))
    path = export_onnx(model, tmp_path / 'm.onnx')
    proto = onnx.load(str(path))
    clips = [n.output[0] for n in proto.graph.node if n.op_type == 'Clip']
    assert len(clips) == sum(1 for _ in iter_quant_convs(model))
    for name in clips:
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    onnx.save(proto, str(tmp_path / 'probe.onnx'))
    outs = session(tmp_path / 'probe.onnx').run(clips, {'input': inputs(8).numpy()})
    for codes in outs:
        assert np.array_equal(codes, np.round(codes)) and codes.min() >= 0 and codes.max() <= 7
    assert max(len(np.unique(c)) for c in outs) == 8  # the whole 3-bit grid is used somewhere


def test_onnx_rounding_is_lsq_rounding_half_to_even(tmp_path):
    step, qp = 0.25, 3  # a power of two, so x / step is exact and the ties below are exact ties
    x = torch.tensor([-1.0, -0.1, 0.0, 0.1, 0.125, 0.375, 0.5, 0.625, 0.6249, 0.6251, 0.75, 0.874, 0.876, 9.0,
                      1e30]).reshape(1, 15, 1, 1)
    g = _GraphBuilder(fast=True, int4=False)
    out = _round_clip_dw(g, 'x', step, 0, qp, 15, 'q')
    graph = onnx.helper.make_graph(g.nodes, 'q', [onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [1, 15, 1, 1])],
                                   [onnx.helper.make_empty_tensor_value_info(out)], g.initializers)
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', 17)]), str(tmp_path / 'q.onnx'))
    got = session(tmp_path / 'q.onnx').run(None, {'x': x.numpy()})[0]
    expected = quant_codes(x, torch.tensor([step]), 2, signed=False).numpy()
    assert np.array_equal(got, expected)
    assert got.ravel()[[4, 5, 7]].tolist() == [0.0, 2.0, 2.0]  # 0.5 → 0, 1.5 → 2, 2.5 → 2


def test_fast_onnx_of_an_imagenet_architecture(tmp_path):
    spec = get_space('imagenet').sample(2, __import__('random').Random(4)).replace(resolution=128)
    torch.manual_seed(0)
    model = oqatnets.OQATNet(spec)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 128, 128))
    model = lively(model)
    x = torch.randn(64, 3, 128, 128, generator=torch.Generator().manual_seed(7))
    x = x * torch.rand(64, 1, 1, 1, generator=torch.Generator().manual_seed(8)) * 2
    result = check_onnx(model, export_onnx(model, tmp_path / 'm.onnx'), inputs=x, atol=0.05, min_top1_agreement=0.9)
    assert result['top1_agreement'] >= 0.9


def test_float_network_exports_as_the_plain_float_graph(tmp_path):
    model = copy.deepcopy(lively(small_net(2, seed=6)))
    model.set_bits(32)
    path = export_onnx(model, tmp_path / 'f.onnx')
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops.isdisjoint({'Clip', 'Cast', 'QuantizeLinear', 'BatchNormalization'})
    result = check_onnx(model, path, inputs=inputs(16))
    assert result['top1_agreement'] == 1.0 and result['relative_mean_diff'] < 1e-3


def test_check_refuses_a_file_of_another_model(tmp_path):
    path = export_onnx(lively(small_net(2, seed=1)), tmp_path / 'a.onnx')
    with pytest.raises(ExportMismatchError, match=r'a\.onnx: onnxruntime disagrees') as info:
        check_onnx(lively(small_net(2, seed=2)), path, inputs=inputs(16))
    assert info.value.path == path and '\n' not in str(info.value)


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_qcdq_onnx_matches_pytorch_in_onnxruntime(bits, tmp_path):
    model = lively(small_net(bits, seed=10 + bits))
    path = export_onnx(model, tmp_path / 'm.onnx', format='qcdq')
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count('QuantizeLinear') == sum(1 for _ in iter_quant_convs(model))
    clips = [n for n in proto.graph.node if n.op_type == 'Clip']
    qmax = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}[clips[0].input[2]]
    assert int(qmax) == 2 ** bits - 1 and str(qmax.dtype) == 'uint8'
    codes = next(i for i in proto.graph.initializer if i.name.startswith('final_conv_weight_codes'))
    assert codes.data_type == onnx.TensorProto.INT8
    result = check_onnx(model, path, inputs=inputs(256), atol=0.05, min_top1_agreement=0.9)
    assert result['top1_agreement'] >= 0.9


@pytest.mark.parametrize('fmt', ['onnx', 'qcdq'])
@pytest.mark.parametrize('bits', [2, 4])
def test_signed_inputs_export_with_their_signed_grid(fmt, bits, tmp_path):
    model = lively(small_net(bits, seed=20 + bits, space='small_signed'))
    signed = {name for name, conv in iter_quant_convs(model) if conv.signed_input}
    assert signed and 'final_conv' in signed and 'conv_head' not in signed
    x = inputs(256)
    path = export_onnx(model, tmp_path / 'm.onnx', format=fmt)
    proto = onnx.load(str(path))
    values = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    lows = {n.name.rsplit('_clip', 1)[0]: float(values[n.input[1]]) for n in proto.graph.node if n.op_type == 'Clip'}
    assert lows == {name: (-(2 ** (bits - 1)) if name in signed else 0.0) for name, _ in iter_quant_convs(model)}
    result = check_onnx(model, path, inputs=x, atol=0.05, min_top1_agreement=0.9)
    assert result['top1_agreement'] >= 0.9


@pytest.mark.parametrize('fmt', ['onnx', 'qcdq'])
def test_check_onnx_detects_a_different_model(fmt, tmp_path):
    path = export_onnx(lively(small_net(2, seed=1)), tmp_path / 'a.onnx', format=fmt)
    with pytest.raises(RuntimeError, match='disagrees'):
        check_onnx(lively(small_net(2, seed=2)), path)


def test_export_rejects_a_supernet(tmp_path):
    with pytest.raises(ValueError, match='static OQATNet'):
        export_onnx(oqatnets.create_supernet(2, space='small'), tmp_path / 'x.onnx')


@pytest.mark.parametrize('kwargs, message', [({'format': 'tflite'}, 'format='), ({'format': 'qcdq', 'int4': True}, 'int4')])
def test_export_rejects_bad_options(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_onnx(small_net(2), tmp_path / 'x.onnx', **kwargs)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float64])
def test_export_refuses_weights_that_are_not_float32_in_one_line(dtype, tmp_path):
    with pytest.raises(ValueError, match=f'holds {dtype}: export model.float'):  # was a TypeError deep in numpy
        export_onnx(small_net(2).to(dtype), tmp_path / 'x.onnx')
    assert not (tmp_path / 'x.onnx').exists()
