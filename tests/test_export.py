"""ONNX QCDQ export checked in onnxruntime against the PyTorch fake-quant model."""
from __future__ import annotations

import pytest
import torch

import oqatnets

from zoo_helpers import small_net

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from oqatnets.export import check_onnx, export_onnx  # noqa: E402


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_onnx_matches_pytorch_in_onnxruntime(bits, tmp_path):
    model = small_net(bits, seed=10 + bits)
    path = export_onnx(model, tmp_path / 'm.onnx')
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count('QuantizeLinear') == sum(1 for _ in oqatnets.quant.iter_quant_convs(model))
    clips = [n for n in proto.graph.node if n.op_type == 'Clip']
    qmax = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}[clips[0].input[2]]
    assert int(qmax) == 2 ** bits - 1 and str(qmax.dtype) == 'uint8'
    codes = [i for i in proto.graph.initializer if i.name.startswith('final_conv_weight_codes')][0]
    assert codes.data_type == onnx.TensorProto.INT8
    result = check_onnx(model, path, batch_size=8)
    assert result['top1_agreement'] == 1.0 and result['max_abs_diff'] < 1e-4


def test_check_onnx_detects_a_different_model(tmp_path):
    path = export_onnx(small_net(2, seed=1), tmp_path / 'a.onnx')
    with pytest.raises(RuntimeError, match='disagrees'):
        check_onnx(small_net(2, seed=2), path)


def test_export_rejects_a_supernet(tmp_path):
    with pytest.raises(ValueError, match='static OQATNet'):
        export_onnx(oqatnets.create_supernet(2, space='small'), tmp_path / 'x.onnx')
