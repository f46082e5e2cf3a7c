"""ONNX export of a static OQATNet, and its check in onnxruntime; two forms.

``format='onnx'`` (the default) is the fast exact form: plain operators that onnxruntime folds at
session start or keeps in its blocked NCHWc layout, so it runs at about float speed. Every
quantized conv with its BN becomes::

    x ─ Conv1×1dw(w=1/|s_a|, b=M) ─ Conv1×1dw(w=1, b=−M) ─ Clip(0, 2^b−1) ───────┐   (M = 1.5·2^23)
    weight codes (int8, or int4 at opset 21) ─ Cast(float) ─ Mul(scale[c]) ─ Conv(+ bias[c])

Adding ``M`` to a float32 in [−2^22, 2^22] rounds it to an integer, half to even (as torch.round
does), and subtracting it is exact; since the clip bounds are integers, ``clamp(round(v)) =
round(clamp(v))``, so the input of the Conv is LSQ's codes ``round(clamp(x/|s_a|, 0, Qp))``. The
Clip fuses into the second depthwise conv. (A Div → Clip → Round chain computes the same codes,
but onnxruntime cannot keep Div, Clip or Round in NCHWc and wraps each in layout reorders: 1.5×
at batch 1, 2× at batch 32; see docs/BENCHMARKS.md.) The weight is ``codes · scale[c]`` with
``scale[c] = |s_w|·|s_a|·γ[c]/σ[c]`` and ``bias[c] = β[c] − μ[c]·γ[c]/σ[c]``: the activation step is
folded into the weight (convolution is linear: ``conv(codes·s_a, Q(w)) = conv(codes, Q(w)·s_a)``,
as :meth:`QuantConv2d._inference_weight` does) and BN into per-channel scales. The file stores
only the integer weight codes; Cast → Mul has constant inputs, so onnxruntime folds it into an
fp32 weight when the session starts. A ReLU whose only reader is a quantized conv is left out,
since the Clip at 0 does its work. A network with quantization off (``set_bits(32)``) exports as
the plain float graph (BN folded). The rounding relies on float32 arithmetic: the file must not
be converted to fp16 or run with TF32 convolutions.

``format='qcdq'`` keeps the QDQ form for toolchains that consume it (onnxruntime runs it 2.5–4.6×
slower than the float graph)::

    x ─ QuantizeLinear(|s_a|, uint8 0) ─ Clip(0, 2^b−1) ─ DequantizeLinear ─┐   (int8, Clip(−2^(b−1), 2^(b−1)−1) for a signed input)
    int8 weight codes ─ DequantizeLinear(|s_w|, int8 0) ──────────────────── Conv

so 2-, 3- and 4-bit ranges survive in standard 8-bit containers and BN stays a separate node.
Stem, SE and classifier stay float in both forms. The graph is written with ``onnx.helper`` from
the module tree (no tracing), opset 17 (21 with int4 codes).

Tolerance of :func:`check_onnx`: the fast form computes ``x · (1/s)`` and onnxruntime's
QuantizeLinear may too, where PyTorch computes ``x / s``; onnxruntime sums convolutions in
another order, and folding BN and the activation step into the weights changes the float
summation order again. An activation lying within an ulp of a rounding tie can then land one
step apart, and that step propagates. Outputs therefore agree to float precision almost
everywhere, with rare larger differences; the check bounds the mean absolute difference by
``atol`` relative to the logits' scale and requires the top-1 predictions to agree on
``min_top1_agreement`` of inputs. A trained network agrees on nearly every input; a random-weight
one, whose logit margins are as small as that noise, on fewer (PyTorch's own float32 and float64
forwards of a random 4-bit M net agree on under 90 %).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ._io import atomic_path
from .errors import ExportMismatchError, InvalidArgumentError, MissingDependencyError, QuantizationError
from .layers import InvertedResidual, SqueezeExcite
from .net import OQATNet
from .quant import QuantConv2d

__all__ = ['export_onnx', 'check_onnx', 'FORMATS', 'OPSET', 'INT4_OPSET']

FORMATS = ('onnx', 'qcdq')
OPSET = 17
INT4_OPSET = 21  # the first opset whose Cast takes INT4


def _optional(module: str) -> Any:
    """Import an optional ONNX dependency, or say how to install it (one line, no traceback)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f'{module} is not installed; ONNX export and its check need it: '
                                     'pip install "oqatnets[onnx]"') from None


class _GraphBuilder:
    """Accumulates ONNX nodes and initializers with unique names; ``fast`` selects the form."""

    def __init__(self, *, fast: bool, int4: bool) -> None:
        self.onnx = _optional('onnx')
        self.fast = fast
        self.int4 = int4
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f'{hint}_{self._count}'

    def const(self, hint: str, array: Any) -> str:
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def codes(self, hint: str, codes: np.ndarray) -> str:
        """Signed integer weight codes as an INT4 (when ``int4``) or INT8 initializer."""
        name = self.name(hint)
        if self.int4:
            tensor = self.onnx.helper.make_tensor(name, self.onnx.TensorProto.INT4, codes.shape,
                                                  codes.astype(np.int8).flatten().tolist())
        else:
            tensor = self.onnx.numpy_helper.from_array(codes.astype(np.int8), name)
        self.initializers.append(tensor)
        return name

    def tensor(self, hint: str, tensor: torch.Tensor) -> str:
        return self.const(hint, tensor.detach().cpu().numpy())

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.name(hint)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _act(g: _GraphBuilder, x: str, module: nn.Module, hint: str, *, read_by: QuantConv2d | None = None) -> str:
    """``module`` on ``x``; the fast form drops a ReLU read only by a conv whose Clip at 0 does the work."""
    if g.fast and read_by is not None and read_by.clamps_away(module):
        return x
    if isinstance(module, nn.ReLU):
        return g.op('Relu', [x], f'{hint}_relu')
    if isinstance(module, nn.Hardswish):
        return g.op('HardSwish', [x], f'{hint}_hswish')
    raise InvalidArgumentError(f'{hint}: cannot export activation {type(module).__name__}')


def _bn(g: _GraphBuilder, x: str, bn: nn.BatchNorm2d, hint: str) -> str:
    inputs = [x] + [g.tensor(f'{hint}_{n}', getattr(bn, n)) for n in ('weight', 'bias', 'running_mean', 'running_var')]
    return g.op('BatchNormalization', inputs, f'{hint}_bn', epsilon=float(bn.eps))


def _bn_affine(bn: nn.BatchNorm2d | None, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, bias) of an eval-mode BN, in float64 (identity without one)."""
    if bn is None:
        return np.ones(channels), np.zeros(channels)
    f = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return f.numpy(), (bn.bias.double() - bn.running_mean.double() * f).numpy()


def _check_quantizable(conv: QuantConv2d, hint: str) -> None:
    if not 2 <= conv.bits <= 8:
        raise InvalidArgumentError(f'{hint}: ONNX export supports 2- to 8-bit convs, this one is {conv.bits}-bit')
    if not bool(conv.step_initialized):
        raise QuantizationError(f'{hint} has no step sizes yet; run one forward pass (or load weights) before exporting')


def _conv_node(g: _GraphBuilder, inputs: list[str], conv: nn.Conv2d, hint: str) -> str:
    k = conv.kernel_size[0]
    return g.op('Conv', inputs, f'{hint}_conv', kernel_shape=[k, k], strides=list(conv.stride),
                pads=[k // 2] * 4, group=conv.groups)


def _qcdq_conv(g: _GraphBuilder, x: str, conv: QuantConv2d, hint: str) -> str:
    _check_quantizable(conv, hint)
    qn, qp = conv.act_range
    code_type = np.int8 if conv.signed_input else np.uint8
    a_scale = g.const(f'{hint}_act_scale', np.float32(conv.act_step.detach().abs().item()))
    a_zero = g.const(f'{hint}_act_zero', code_type(0))
    q = g.op('QuantizeLinear', [x, a_scale, a_zero], f'{hint}_q')
    q = g.op('Clip', [q, g.const(f'{hint}_act_qmin', code_type(qn)), g.const(f'{hint}_act_qmax', code_type(qp))],
             f'{hint}_clip')
    xq = g.op('DequantizeLinear', [q, a_scale, a_zero], f'{hint}_dq')
    codes = g.tensor(f'{hint}_weight_codes', conv.weight_codes())
    w_scale = g.const(f'{hint}_weight_scale', np.float32(conv.weight_step.detach().abs().item()))
    weight = g.op('DequantizeLinear', [codes, w_scale, g.const(f'{hint}_weight_zero', np.int8(0))], f'{hint}_w')
    return _conv_node(g, [xq, weight], conv, hint)


_ROUNDER = 1.5 * 2 ** 23  # adding it to a float32 in [-2^22, 2^22] rounds to an integer, half to even


def _round_clip_dw(g: _GraphBuilder, x: str, step: float, qn: int, qp: int, channels: int, hint: str) -> str:
    """``clamp(round(x / step), qn, qp)`` (= round(clamp(…)), the bounds being integers) as two 1×1 depthwise convs.

    The first computes ``x·(1/step) + 1.5·2^23`` (float32 rounds the sum to an integer, half to even);
    the second subtracts ``1.5·2^23`` exactly and clips with a fused Clip activation. onnxruntime keeps
    both in its blocked NCHWc layout, so no reorder passes surround them.
    """
    x = g.op('Conv', [x, g.const(f'{hint}_round_w', np.full((channels, 1, 1, 1), 1.0 / step, np.float32)),
                      g.const(f'{hint}_round_b', np.full((channels,), _ROUNDER, np.float32))],
             f'{hint}_round', kernel_shape=[1, 1], group=channels)
    x = g.op('Conv', [x, g.const(f'{hint}_unround_w', np.ones((channels, 1, 1, 1), np.float32)),
                      g.const(f'{hint}_unround_b', np.full((channels,), -_ROUNDER, np.float32))],
             f'{hint}_unround', kernel_shape=[1, 1], group=channels)
    return g.op('Clip', [x, g.const(f'{hint}_act_qmin', np.float32(qn)), g.const(f'{hint}_act_qmax', np.float32(qp))],
                f'{hint}_clip')


def _fast_conv(g: _GraphBuilder, x: str, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, hint: str) -> str:
    """Conv (+ BN folded into per-channel scale and bias) on the quantization codes of ``x``."""
    scale, bias = _bn_affine(bn, conv.out_channels)
    if isinstance(conv, QuantConv2d) and conv.quantized:
        _check_quantizable(conv, hint)
        qn, qp = conv.act_range
        s_a = conv.act_step.detach().abs().float()
        x = _round_clip_dw(g, x, float(s_a.item()), qn, qp, conv.in_channels, hint)
        # (|s_w|·|s_a|) in float32 as QuantConv2d._inference_weight forms it, then BN's factor.
        step = (conv.weight_step.detach().abs().float() * s_a).double().numpy()
        codes = g.codes(f'{hint}_weight_codes', conv.weight_codes().numpy())
        w_scale = g.const(f'{hint}_weight_scale', (scale * step).astype(np.float32).reshape(-1, 1, 1, 1))
        weight = g.op('Mul', [g.op('Cast', [codes], f'{hint}_cast', to=g.onnx.TensorProto.FLOAT), w_scale], f'{hint}_w')
    else:
        folded = conv.weight.detach().double() * torch.from_numpy(scale).reshape(-1, 1, 1, 1)
        weight = g.tensor(f'{hint}_weight', folded.float())
    return _conv_node(g, [x, weight, g.const(f'{hint}_bias', bias.astype(np.float32))], conv, hint)


def _conv_bn(g: _GraphBuilder, x: str, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, hint: str) -> str:
    """A conv and its BN (if any) in the builder's form."""
    if g.fast:
        return _fast_conv(g, x, conv, bn, hint)
    if isinstance(conv, QuantConv2d):
        x = _qcdq_conv(g, x, conv, hint)
    else:
        x = _conv_node(g, [x, g.tensor(f'{hint}_w', conv.weight)], conv, hint)
    return x if bn is None else _bn(g, x, bn, f'{hint}.bn')


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
    has_se = isinstance(getattr(block, 'se', None), SqueezeExcite)
    if hasattr(block, 'conv_pw'):
        x = _act(g, _conv_bn(g, x, block.conv_pw, block.bn_pw, f'{hint}.conv_pw'), block.act_pw, f'{hint}.act_pw',
                 read_by=block.conv_dw)
    x = _act(g, _conv_bn(g, x, block.conv_dw, block.bn_dw, f'{hint}.conv_dw'), block.act_dw, f'{hint}.act_dw',
             read_by=None if has_se else block.conv_pwl)
    if has_se:
        x = _se(g, x, block.se, f'{hint}.se')
    x = _conv_bn(g, x, block.conv_pwl, block.bn_pwl, f'{hint}.conv_pwl')
    return g.op('Add', [x, shortcut], f'{hint}_add') if block.has_skip else x


def _graph(model: OQATNet, *, fast: bool, int4: bool) -> tuple[_GraphBuilder, str]:
    g = _GraphBuilder(fast=fast, int4=int4)
    x = _act(g, _conv_bn(g, 'input', model.conv_stem, model.bn1, 'conv_stem'), model.act1, 'act1')
    for s, stage in enumerate(model.blocks):
        for i, block in enumerate(stage):
            x = _block(g, x, block, f'blocks.{s}.{i}')
    x = _act(g, _conv_bn(g, x, model.final_conv, model.final_bn, 'final_conv'), model.final_act, 'final_act')
    x = g.op('GlobalAveragePool', [x], 'global_pool')
    x = _act(g, _conv_bn(g, x, model.conv_head, None, 'conv_head'), model.act2, 'act2')
    x = g.op('Flatten', [x], 'flatten', axis=1)
    if isinstance(model.classifier, nn.Linear):
        fc = model.classifier
        x = g.op('Gemm', [x, g.tensor('classifier_w', fc.weight), g.tensor('classifier_b', fc.bias)], 'classifier',
                 transB=1)
    return g, x


@torch.no_grad()
def export_onnx(model: nn.Module, path: 'str | os.PathLike', *, format: str = 'onnx', int4: bool = False,
                check: bool = True) -> Path:
    """Write ``model`` (a static :class:`OQATNet` with step sizes) as ONNX; returns the path.

    ``format`` is ``'onnx'`` (fast exact plain-op form, the default) or ``'qcdq'`` (QDQ form);
    see the module doc. ``int4`` stores the fast form's weight codes as INT4 at opset 21 (bits
    ≤ 4; half the bytes of INT8). The input is ``input`` (``batch × C × r × r``, dynamic batch),
    the output ``logits``. With ``check`` the model is validated with ``onnx.checker``.
    """
    onnx = _optional('onnx')
    if format not in FORMATS:
        raise InvalidArgumentError(f'format={format!r} is not an ONNX export format; use one of {", ".join(FORMATS)}')
    if not isinstance(model, OQATNet):
        raise InvalidArgumentError(f'ONNX export takes a static OQATNet, not {type(model).__name__}; '
                         'extract a subnet with supernet.get_subnet(spec) first')
    if int4 and (format != 'onnx' or model.bits > 4):
        raise InvalidArgumentError(f'int4=True needs format onnx and at most 4 bits, not format {format} at {model.bits} bits')
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise InvalidArgumentError(f'ONNX export writes a float32 graph from float32 weights; the model holds '
                                   f'{", ".join(sorted(map(str, dtypes)))}: export model.float()')
    g, out = _graph(model, fast=format == 'onnx', int4=int4)
    g.nodes.append(onnx.helper.make_node('Identity', [out], ['logits'], name='logits'))
    r = model.spec.resolution
    graph = onnx.helper.make_graph(
        g.nodes, 'oqatnet',
        [onnx.helper.make_tensor_value_info('input', onnx.TensorProto.FLOAT, ['batch', model.in_chans, r, r])],
        [onnx.helper.make_tensor_value_info('logits', onnx.TensorProto.FLOAT,
                                            ['batch', model.num_classes or model.head_hidden_size])],
        g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', INT4_OPSET if int4 else OPSET)],
                                   producer_name='oqatnets')
    proto.metadata_props.add(key='spec', value=str(model.spec))
    proto.metadata_props.add(key='bits', value=str(model.bits))
    proto.metadata_props.add(key='format', value=format)
    if check:
        onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)


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
        details = (f'onnxruntime disagrees with the PyTorch model (relative mean |diff| '
                   f'{result["relative_mean_diff"]:.3g}, allowed {atol:g}; top-1 agreement '
                   f'{result["top1_agreement"]:.0%}, needed {min_top1_agreement:.0%}): the export does not compute '
                   'this model; please report it with the model name')
        raise ExportMismatchError(path, details)
    return result
