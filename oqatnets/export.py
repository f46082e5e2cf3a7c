"""ONNX export of a static OQATNet in QCDQ form, and its check in onnxruntime.

Every quantized conv becomes::

    x ─ QuantizeLinear(|s_a|, uint8 0) ─ Clip(0, 2^b−1) ─ DequantizeLinear ─┐
    int8 weight codes ─ DequantizeLinear(|s_w|, int8 0) ──────────────────── Conv

so 2-, 3- and 4-bit ranges survive in standard 8-bit containers (ONNX has no 3-bit type) and
the weights are stored as their integer codes. Stem, BN, SE and classifier stay float. The graph
is written with ``onnx.helper`` from the module tree (no tracing), opset 17.

Tolerance of :func:`check_onnx`: onnxruntime's QuantizeLinear may compute ``x · (1/s)`` where
PyTorch computes ``x / s``, and its BatchNormalization/HardSigmoid evaluate in a different
order; an activation lying within an ulp of a rounding tie can then land one step apart, and
that step propagates. Outputs therefore agree to float precision almost everywhere, with rare
larger differences; the check bounds the mean absolute difference by ``atol`` relative to the
logits' scale and requires the top-1 predictions to agree on ``min_top1_agreement`` of inputs.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ._io import atomic_path, resolve_output
from .errors import InvalidArgumentError, MissingDependencyError, QuantizationError
from .layers import InvertedResidual, SqueezeExcite
from .net import OQATNet
from .quant import QuantConv2d, quant_range

__all__ = ['export_onnx', 'check_onnx', 'OPSET']

OPSET = 17


def _optional(module: str) -> Any:
    """Import an optional ONNX dependency, or say how to install it (one line, no traceback)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f'{module} is not installed; ONNX export and its check need it: '
                                     'pip install "oqatnets[onnx]"') from None


class _GraphBuilder:
    """Accumulates ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.onnx = _optional('onnx')
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f'{hint}_{self._count}'

    def const(self, hint: str, array: Any) -> str:
        import numpy as np
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def tensor(self, hint: str, tensor: torch.Tensor) -> str:
        return self.const(hint, tensor.detach().cpu().numpy())

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _act(g: _GraphBuilder, x: str, module: nn.Module, hint: str) -> str:
    if isinstance(module, nn.ReLU):
        return g.op('Relu', [x], f'{hint}_relu')
    if isinstance(module, nn.Hardswish):
        return g.op('HardSwish', [x], f'{hint}_hswish')
    raise InvalidArgumentError(f'{hint}: cannot export activation {type(module).__name__}')


def _bn(g: _GraphBuilder, x: str, bn: nn.BatchNorm2d, hint: str) -> str:
    inputs = [x] + [g.tensor(f'{hint}_{n}', getattr(bn, n)) for n in ('weight', 'bias', 'running_mean', 'running_var')]
    return g.op('BatchNormalization', inputs, f'{hint}_bn', epsilon=float(bn.eps))


def _quant_conv(g: _GraphBuilder, x: str, conv: QuantConv2d, hint: str) -> str:
    import numpy as np
    if not 2 <= conv.bits <= 8:
        raise InvalidArgumentError(f'{hint}: ONNX export supports 2- to 8-bit convs, this one is {conv.bits}-bit')
    if not bool(conv.step_initialized):
        raise QuantizationError(f'{hint} has no step sizes yet; run one forward pass (or load weights) before exporting')
    _, qp = quant_range(conv.bits, signed=False)
    a_scale = g.const(f'{hint}_act_scale', np.float32(conv.act_step.detach().abs().item()))
    a_zero = g.const(f'{hint}_act_zero', np.uint8(0))
    q = g.op('QuantizeLinear', [x, a_scale, a_zero], f'{hint}_q')
    q = g.op('Clip', [q, a_zero, g.const(f'{hint}_act_qmax', np.uint8(qp))], f'{hint}_clip')
    xq = g.op('DequantizeLinear', [q, a_scale, a_zero], f'{hint}_dq')
    codes = g.tensor(f'{hint}_weight_codes', conv.weight_codes())
    w_scale = g.const(f'{hint}_weight_scale', np.float32(conv.weight_step.detach().abs().item()))
    weight = g.op('DequantizeLinear', [codes, w_scale, g.const(f'{hint}_weight_zero', np.int8(0))], f'{hint}_w')
    k = conv.kernel_size[0]
    return g.op('Conv', [xq, weight], f'{hint}_conv', kernel_shape=[k, k], strides=list(conv.stride),
                pads=[k // 2] * 4, group=conv.groups)


def _se(g: _GraphBuilder, x: str, se: SqueezeExcite, hint: str) -> str:
    s = g.op('GlobalAveragePool', [x], f'{hint}_pool')
    s = g.op('Conv', [s, g.tensor(f'{hint}_rw', se.conv_reduce.weight), g.tensor(f'{hint}_rb', se.conv_reduce.bias)],
             f'{hint}_reduce', kernel_shape=[1, 1])
    s = g.op('Relu', [s], f'{hint}_relu')
    s = g.op('Conv', [s, g.tensor(f'{hint}_ew', se.conv_expand.weight), g.tensor(f'{hint}_eb', se.conv_expand.bias)],
             f'{hint}_expand', kernel_shape=[1, 1])
    s = g.op('HardSigmoid', [s], f'{hint}_gate', alpha=1.0 / 6.0, beta=0.5)
    return g.op('Mul', [x, s], f'{hint}_scale')


def _block(g: _GraphBuilder, x: str, block: InvertedResidual, hint: str) -> str:
    shortcut = x
    if hasattr(block, 'conv_pw'):
        x = _act(g, _bn(g, _quant_conv(g, x, block.conv_pw, f'{hint}.conv_pw'), block.bn_pw, f'{hint}.bn_pw'),
                 block.act_pw, f'{hint}.act_pw')
    x = _act(g, _bn(g, _quant_conv(g, x, block.conv_dw, f'{hint}.conv_dw'), block.bn_dw, f'{hint}.bn_dw'),
             block.act_dw, f'{hint}.act_dw')
    if isinstance(getattr(block, 'se', None), SqueezeExcite):
        x = _se(g, x, block.se, f'{hint}.se')
    x = _bn(g, _quant_conv(g, x, block.conv_pwl, f'{hint}.conv_pwl'), block.bn_pwl, f'{hint}.bn_pwl')
    return g.op('Add', [x, shortcut], f'{hint}_add') if block.has_skip else x


def _graph(model: OQATNet) -> tuple[_GraphBuilder, str]:
    g = _GraphBuilder()
    stem = model.conv_stem
    x = g.op('Conv', ['input', g.tensor('conv_stem_w', stem.weight)], 'conv_stem', kernel_shape=[3, 3],
             strides=list(stem.stride), pads=[1, 1, 1, 1])
    x = _act(g, _bn(g, x, model.bn1, 'bn1'), model.act1, 'act1')
    for s, stage in enumerate(model.blocks):
        for i, block in enumerate(stage):
            x = _block(g, x, block, f'blocks.{s}.{i}')
    x = _act(g, _bn(g, _quant_conv(g, x, model.final_conv, 'final_conv'), model.final_bn, 'final_bn'),
             model.final_act, 'final_act')
    x = g.op('GlobalAveragePool', [x], 'global_pool')
    x = _act(g, _quant_conv(g, x, model.conv_head, 'conv_head'), model.act2, 'act2')
    x = g.op('Flatten', [x], 'flatten', axis=1)
    if isinstance(model.classifier, nn.Linear):
        fc = model.classifier
        x = g.op('Gemm', [x, g.tensor('classifier_w', fc.weight), g.tensor('classifier_b', fc.bias)], 'classifier',
                 transB=1)
    return g, x


@torch.no_grad()
def export_onnx(model: nn.Module, path: 'str | os.PathLike', *, check: bool = True) -> Path:
    """Write ``model`` (a static :class:`OQATNet` with step sizes) as ONNX QCDQ; returns the path.

    The input is ``input`` (``batch × C × r × r``, dynamic batch), the output ``logits``. With
    ``check`` the model is validated with ``onnx.checker``.
    """
    onnx = _optional('onnx')
    if not isinstance(model, OQATNet):
        raise InvalidArgumentError(f'ONNX export takes a static OQATNet, not {type(model).__name__}; '
                         'extract a subnet with supernet.get_subnet(spec) first')
    g, out = _graph(model)
    g.nodes.append(onnx.helper.make_node('Identity', [out], ['logits'], name='logits'))
    r = model.spec.resolution
    graph = onnx.helper.make_graph(
        g.nodes, 'oqatnet',
        [onnx.helper.make_tensor_value_info('input', onnx.TensorProto.FLOAT, ['batch', model.in_chans, r, r])],
        [onnx.helper.make_tensor_value_info('logits', onnx.TensorProto.FLOAT,
                                            ['batch', model.num_classes or model.head_hidden_size])],
        g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', OPSET)],
                                   producer_name='oqatnets')
    proto.metadata_props.add(key='spec', value=str(model.spec))
    proto.metadata_props.add(key='bits', value=str(model.bits))
    if check:
        onnx.checker.check_model(proto)
    path = resolve_output(path)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


@torch.no_grad()
def check_onnx(model: nn.Module, path: 'str | os.PathLike', *, inputs: torch.Tensor | None = None,
               batch_size: int = 4, seed: int = 0, atol: float = 1e-3,
               min_top1_agreement: float = 0.75) -> dict[str, float]:
    """Run the ONNX file in onnxruntime and compare with ``model``'s eval outputs (see the module doc)."""
    ort = _optional('onnxruntime')
    model = model.eval()
    if inputs is None:
        r = model.spec.resolution
        inputs = torch.randn(batch_size, model.in_chans, r, r, generator=torch.Generator().manual_seed(seed))
    expected = model(inputs).numpy()
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = session.run(['logits'], {'input': inputs.numpy()})[0]
    diff = abs(got - expected)
    scale = max(float(abs(expected).max()), 1e-12)
    result = {'max_abs_diff': float(diff.max()), 'mean_abs_diff': float(diff.mean()),
              'relative_mean_diff': float(diff.mean()) / scale,
              'top1_agreement': float((got.argmax(1) == expected.argmax(1)).mean())}
    if result['relative_mean_diff'] > atol or result['top1_agreement'] < min_top1_agreement:
        raise RuntimeError(f'onnxruntime disagrees with PyTorch beyond the tolerance: {result}')
    return result
