"""LSQ fake quantization with the exact semantics of the authors' OQA code.

One scalar step per tensor; weights signed, activations unsigned (negative inputs clip to 0) unless
a conv is built with ``signed_input=True`` (a search space's ``signed_inputs``, not the authors');
``v̂ = round(clamp(v / |s|, Qn, Qp)) · |s|`` with round-half-even, a straight-through round, and
the step receiving LSQ's gradient scaled by ``1 / sqrt(numel · Qp)`` where ``numel`` counts the
whole tensor used (the batch included for activations).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._lsq_kernel import LSQKernel, load_kernel
from .errors import IncompatibleWeightsError, InvalidArgumentError, InvalidTypeError, QuantizationError

__all__ = [
    'SUPPORTED_BITS', 'FLOAT_BITS', 'quant_range', 'validate_bits', 'lsq_quantize', 'quant_codes', 'QuantConv2d',
    'iter_quant_convs', 'set_bits', 'get_bits', 'init_step', 'set_fused_quantizer', 'fused_quantizer_enabled',
    'check_step_bits', 'STEP_BITS_DTYPE',
]

FLOAT_BITS = 32
SUPPORTED_BITS = (1, 2, 3, 4, 8, FLOAT_BITS)
# The activations a quantized conv's input quantizer can take over (QuantConv2d.conv's ``act``).
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {'relu': F.relu, 'hardswish': F.hardswish}
_ACTIVATION_NAMES: dict[type[nn.Module], str] = {nn.ReLU: 'relu', nn.Hardswish: 'hardswish'}
# ``step_initialized`` holds the bit-width the steps were set for (0: not yet), so that a state dict says it.
STEP_BITS_DTYPE = torch.int8


def validate_bits(bits: int) -> int:
    """Return ``bits`` if it is a supported bit-width, else raise a one-line ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise InvalidArgumentError(
            f'bits={bits!r} is not supported; use one of {", ".join(map(str, SUPPORTED_BITS))} '
            f'({FLOAT_BITS} turns quantization off)')
    return bits


def quant_range(bits: int, *, signed: bool) -> tuple[int, int]:
    """(Qn, Qp) of an LSQ quantizer: signed ``[-2^(b-1), 2^(b-1)-1]``, unsigned ``[0, 2^b-1]``.

    One bit signed is the binary case ``{-1, +1}`` (Qp = 1), as in the authors' code.
    """
    if signed:
        if bits == 1:
            return -1, 1
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _flat_channels_last(t: torch.Tensor) -> torch.Tensor:
    """The elements of a channels-last tensor in memory order, as a view (dot products need no copy)."""
    return t.permute(0, 2, 3, 1).reshape(-1)


class _LSQ(torch.autograd.Function):
    """round(clamp(x/|s|)) · |s| with LSQ's straight-through gradients, in one autograd node.

    Backward, with ``inside`` the strict interior of the range (torch's clamp convention):
    ``dx = g·inside`` and ``ds = Σ g·(q − v·inside) = g·out/|s| − dx·v`` (as dot products), times
    the LSQ gradient scale and sign(s). Two allocations forward and one backward, against
    autograd's dozen elementwise ops: on a CPU these passes cost as much as the convolutions.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: torch.Tensor, qn: int, qp: int, grad_scale: float):
        s = step.abs()
        v = x / s
        out = v.clamp(qn, qp).round_().mul_(s)
        ctx.save_for_backward(v, out, step)
        ctx.grad_scale = grad_scale
        ctx.bounds = (qn, qp)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        v, out, step = ctx.saved_tensors
        qn, qp = ctx.bounds
        channels_last = _is_channels_last(v)
        grad_out = grad_out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        grad_x = torch.ops.aten.hardtanh_backward(grad_out, v, qn, qp)
        grad_step = None
        if ctx.needs_input_grad[1]:
            flat = _flat_channels_last if channels_last else _flat
            d_step = torch.dot(flat(grad_out), flat(out)) / step.abs() - torch.dot(flat(grad_x), flat(v))
            grad_step = (d_step * (ctx.grad_scale * torch.sign(step))).reshape(step.shape)
        return (grad_x if ctx.needs_input_grad[0] else None), grad_step, None, None, None


def _fused_forward(x: torch.Tensor, s: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(x / s, hi), lo).round() * s


def _fused_backward(grad_out: torch.Tensor, x: torch.Tensor, s: torch.Tensor, lo: torch.Tensor,
                    hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, Σ g·(q − v·inside)): ``v`` and ``q`` recomputed from ``x`` as the forward made them."""
    v = x / s
    inside = (v > lo) & (v < hi)
    grad_x = torch.where(inside, grad_out, 0.0)
    return grad_x, (grad_out * (torch.maximum(torch.minimum(v, hi), lo).round() - torch.where(inside, v, 0.0))).sum()


def _flat_view(t: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """``t``'s elements as a 1-D view in memory order (copying only a tensor in neither layout),
    and the function that gives a flat result ``t``'s shape and layout back.

    Flat 1-D inputs let one compiled kernel serve every shape and layout (no recompiles).
    """
    if _is_channels_last(t):
        n, c, h, w = t.shape
        return _flat_channels_last(t), lambda f: f.view(n, h, w, c).permute(0, 3, 1, 2)
    shape = t.shape
    return t.contiguous().view(-1), lambda f: f.view(shape)


def _unbacked(*flats: torch.Tensor) -> None:
    """Tell the compiler the length of these 1-D tensors is unknown, so no kernel guards on it."""
    for f in flats:
        torch._dynamo.decorators.mark_unbacked(f, 0)


@functools.cache
def _bounds(qn: int, qp: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Qn and Qp as 0-dim tensors, so the compiled kernels do not specialise on them; made once per range,
    dtype and device, since a new CUDA tensor is a host-to-device copy that waits for the whole stream."""
    with torch.inference_mode(False):  # ordinary tensors, also when first asked for under inference mode
        return torch.tensor(qn, dtype=dtype, device=device), torch.tensor(qp, dtype=dtype, device=device)


@functools.cache
def _fused_kernels() -> tuple[Callable, Callable]:
    """The compiled (inductor) forward and backward LSQ kernels, made once on first use."""
    return (torch.compile(_fused_forward, dynamic=True, fullgraph=True),
            torch.compile(_fused_backward, dynamic=True, fullgraph=True, options={'split_reductions': False}))


class _CompiledLSQ:
    """The fused kernels off the CPU (CUDA) and for dtypes ``csrc/lsq.c`` lacks: ``torch.compile`` of
    :func:`_fused_forward` / :func:`_fused_backward`, with :class:`~oqatnets._lsq_kernel.LSQKernel`'s interface
    but no activations (``act`` is always None: :func:`lsq_quantize` applies them before)."""

    @staticmethod
    def forward(x: torch.Tensor, step: torch.Tensor, qn: int, qp: int, *, act: None = None) -> torch.Tensor:
        _unbacked(x)
        s = step.detach().abs()
        return _fused_kernels()[0](x, s, *_bounds(qn, qp, s.dtype, s.device))

    @staticmethod
    def backward(grad: torch.Tensor, x: torch.Tensor, step: torch.Tensor, qn: int, qp: int, grad_scale: float, *,
                 act: None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _unbacked(grad, x)
        step = step.detach()
        s = step.abs()
        grad_x, d_step = _fused_kernels()[1](grad, x, s, *_bounds(qn, qp, s.dtype, s.device))
        return grad_x, (d_step * (grad_scale * torch.sign(step))).reshape(step.shape)


def _fused_backend(t: torch.Tensor) -> LSQKernel | type[_CompiledLSQ]:
    """The C kernels for CPU float32/float64 tensors (built on first use), the compiled ones otherwise."""
    return load_kernel() if LSQKernel.supports(t) else _CompiledLSQ


class _FusedLSQ(torch.autograd.Function):
    """:class:`_LSQ` in one pass forward and one backward; saves only ``x``, flat in memory order (a view
    unless ``x`` was in neither layout), and the backward recomputes ``v``. With ``act`` (one of
    :attr:`LSQKernel.ACTS`, C kernels only) it quantizes ``act(x)`` without materialising it and
    returns the gradient with respect to ``x``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: torch.Tensor, qn: int, qp: int, grad_scale: float,
                act: str | None = None):
        flat, restore = _flat_view(x.detach())
        ctx.save_for_backward(flat, step)
        ctx.restore = restore
        ctx.layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        ctx.grad_scale = grad_scale
        ctx.bounds = (qn, qp)
        ctx.act = act
        return restore(_fused_backend(flat).forward(flat, step, qn, qp, act=act))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        flat, step = ctx.saved_tensors
        grad_flat, _ = _flat_view(grad_out.contiguous(memory_format=ctx.layout))
        grad_x, grad_step = _fused_backend(flat).backward(grad_flat, flat, step, *ctx.bounds, ctx.grad_scale, act=ctx.act)
        return (ctx.restore(grad_x) if ctx.needs_input_grad[0] else None,
                grad_step if ctx.needs_input_grad[1] else None, None, None, None, None)


# oneDNN's own weight gradient of a 3×3 depthwise conv is as fast as the C kernel's (docs/BENCHMARKS.md §1)
_DEPTHWISE_MIN_KERNEL = 5


class _DepthwiseConv2d(torch.autograd.Function):
    """A depthwise ``F.conv2d`` whose weight gradient is :meth:`~oqatnets._lsq_kernel.LSQKernel.depthwise_weight_grad`;
    the output and the input gradient are oneDNN's, as without it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding)
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.geometry
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad_out, x, weight, None, [stride, stride], [padding, padding],
                                                         [1, 1], False, [0, 0], x.shape[1], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = load_kernel().depthwise_weight_grad(x, grad_out, weight.shape[-1], stride=stride, padding=padding)
        return grad_x, grad_w, None, None


def _conv2d(x: torch.Tensor, weight: torch.Tensor, stride: 'int | tuple[int, int]', padding: int, groups: int, *,
            fused: bool) -> torch.Tensor:
    """``F.conv2d`` without bias or dilation; with ``fused``, a CPU depthwise conv whose k×k weight (k ≥ 5) needs a
    gradient gets the C kernel's, 3–16× faster than oneDNN's (the same output and input gradient)."""
    s = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if (fused and groups == x.shape[1] == weight.shape[0] and weight.shape[1] == 1 and s[0] == s[1]
            and weight.shape[-1] == weight.shape[-2] >= _DEPTHWISE_MIN_KERNEL and weight.requires_grad
            and torch.is_grad_enabled() and LSQKernel.supports(x) and x.dtype == weight.dtype):
        return _DepthwiseConv2d.apply(x, weight, s[0], padding)
    return F.conv2d(x, weight, None, stride, padding, 1, groups)


def _binary_quantize(x: torch.Tensor, step: torch.Tensor, grad_scale: float) -> torch.Tensor:
    """The authors' 1-bit signed quantizer: sign() instead of round, straight-through."""
    scaled = step * grad_scale
    s = ((step - scaled).detach() + scaled).abs()
    v = (x / s).clamp(-1, 1)
    return ((torch.sign(v) - v).detach() + v) * s


def _clamp_is(act: str | None, qn: int) -> bool:
    """Whether the grid's clamp at ``qn`` already is ``act`` (a ReLU before an unsigned grid)."""
    return act == 'relu' and qn == 0


def lsq_quantize(x: torch.Tensor, step: torch.Tensor, bits: int, *, signed: bool, fused: bool = False,
                 act: str | None = None) -> torch.Tensor:
    """LSQ fake quantization of ``act(x)`` with scalar ``step`` at ``bits`` (identity at 32 bits).

    ``fused`` trains through the one-pass kernels (see :func:`set_fused_quantizer`). ``act``
    (``'relu'`` or ``'hardswish'``, default none) is the activation that produces the quantized
    tensor; the quantizer absorbs it where that changes no value: a ReLU before an unsigned grid is
    the grid's own clamp at 0, and the fused CPU kernel computes hard-swish inside its pass.
    Otherwise it is applied first.
    """
    if act is not None and act not in _ACTIVATIONS:
        raise InvalidArgumentError(f'act={act!r} is not an activation LSQ can absorb; use one of {sorted(_ACTIVATIONS)}')
    if bits >= FLOAT_BITS:
        return _ACTIVATIONS[act](x) if act else x
    qn, qp = quant_range(bits, signed=signed)
    if act is not None and _clamp_is(act, qn):
        act = None
    grad_scale = 1.0 / math.sqrt(x.numel() * qp)
    grad = torch.is_grad_enabled() and (x.requires_grad or step.requires_grad)
    binary = bits == 1 and signed
    one_pass = fused and not binary and (grad or LSQKernel.supports(x))  # no compiling for inference off the CPU
    if act and not (one_pass and LSQKernel.supports(x) and act in LSQKernel.ACTS):
        x, act = _ACTIVATIONS[act](x), None
    if binary:
        return _binary_quantize(x, step, grad_scale)
    if one_pass:
        return _FusedLSQ.apply(x, step, qn, qp, grad_scale, act)
    if grad:
        return _LSQ.apply(x, step, qn, qp, grad_scale)
    return quant_codes(x, step, bits, signed=signed).mul_(step.abs())


def quant_codes(x: torch.Tensor, step: torch.Tensor, bits: int, *, signed: bool,
                inplace: bool = False) -> torch.Tensor:
    """The integer levels ``round(clamp(x / |s|, Qn, Qp))`` (as floats, no autograd); ``inplace``
    overwrites ``x``."""
    qn, qp = quant_range(bits, signed=signed)
    with torch.no_grad():
        v = x.div_(step.abs()) if inplace else x / step.abs()
        return v.clamp_(qn, qp).round_()


def init_step(t: torch.Tensor, bits: int, *, signed: bool) -> torch.Tensor:
    """LSQ initial step ``2·mean|t| / sqrt(Qp)``, averaged over ranks when distributed."""
    _, qp = quant_range(bits, signed=signed)
    value = 2 * t.detach().abs().mean() / math.sqrt(qp)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(value)
        value /= torch.distributed.get_world_size()
    return value.clamp_min(torch.finfo(value.dtype).tiny).reshape(1)


class QuantConv2d(nn.Conv2d):
    """Conv2d (no bias) whose input and weight are LSQ fake-quantized with one step each.

    ``act_step`` quantizes the input (unsigned, as in the authors' code, or signed with
    ``signed_input=True`` for inputs that can be negative), ``weight_step`` the (signed) weight. A step is
    initialised from the first batch it sees unless it was loaded from a state dict. In eval mode
    without autograd the quantized weight, with the activation step folded in, is cached until
    the weight, a step or the bits change. ``inplace=True`` (as in ``nn.ReLU``) lets inference
    overwrite the input with its quantization codes, for inputs nothing else reads.

    The buffer ``step_initialized`` is 0 until the steps are set, then the bit-width they were set for
    (:attr:`step_bits`), so a state dict says what its steps are: loading one of other bits is refused
    (:func:`check_step_bits`), through ``load_state_dict`` and timm's ``checkpoint_path=`` alike. The key
    keeps its name so older files load; their ``True`` is taken as this conv's bits, unchecked.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, *, bits: int = 4, inplace: bool = False, signed_input: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=kernel_size // 2, groups=groups, bias=False)
        self.bits = validate_bits(bits)
        self.inplace = inplace
        self.signed_input = signed_input
        self.fused = False  # training through the fused kernels: set_fused_quantizer()
        self.act_step = nn.Parameter(torch.zeros(1))
        self.weight_step = nn.Parameter(torch.zeros(1))
        self.register_buffer('step_initialized', torch.zeros((), dtype=STEP_BITS_DTYPE))
        self._weight_cache: tuple[tuple, torch.Tensor] | None = None

    @property
    def step_bits(self) -> int | None:
        """The bit-width the step sizes were set for (initialised, loaded or inherited); None before."""
        if self.step_initialized.is_meta:
            return None
        return int(self.step_initialized) or None

    @property
    def quantized(self) -> bool:
        return self.bits < FLOAT_BITS

    @property
    def act_range(self) -> tuple[int, int]:
        """The input's integer code range ``(qn, qp)`` at the current bits and signedness."""
        return quant_range(self.bits, signed=self.signed_input)

    def maybe_init_steps(self, x: torch.Tensor, weight: torch.Tensor) -> None:
        """LSQ init of both steps from this input and weight, once per layer.

        A step that would be zero or not finite (an all-zero or NaN first batch) is refused with
        :class:`QuantizationError` and nothing is stored, so one bad batch cannot freeze the layer.
        """
        if not self.quantized or bool(self.step_initialized):
            return
        with torch.no_grad():
            act = init_step(x, self.bits, signed=self.signed_input)
            if not bool(torch.isfinite(act).all()) or float(act) <= torch.finfo(act.dtype).tiny:
                what = 'is all zeros' if bool(torch.isfinite(act)) else 'holds NaN or infinite values'
                raise QuantizationError(
                    f'the first batch this {self.bits}-bit layer sees {what}, so its activation step size cannot be '
                    'initialised from it; nothing was stored: run the first forward pass on real, finite images '
                    '(or load trained weights)')
            w = init_step(weight, self.bits, signed=True)
            if not bool(torch.isfinite(w).all()) or float(w) <= torch.finfo(w.dtype).tiny:
                raise QuantizationError(f'this {self.bits}-bit layer\'s weights are all zero or not finite; its weight '
                                        'step size cannot be initialised; nothing was stored')
            self.act_step.copy_(act)
            self.weight_step.copy_(w)
            self.step_initialized.fill_(self.bits)

    def quantize_input(self, x: torch.Tensor, *, act: str | None = None) -> torch.Tensor:
        """Fake-quantized ``act(x)`` (see :func:`lsq_quantize` for the activations it absorbs)."""
        return lsq_quantize(x, self.act_step, self.bits, signed=self.signed_input, fused=self.fused, act=act)

    def clamps_away(self, act: nn.Module) -> bool:
        """Whether the input quantizer already does what ``act`` does (a ReLU before an unsigned grid:
        the clamp at 0), so that training, inference and export may skip ``act``."""
        return self.quantized and _clamp_is(_ACTIVATION_NAMES.get(type(act)), self.act_range[0])

    def quantize_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Fake-quantized ``weight`` (the layer's own, or a slice/transform of it)."""
        return lsq_quantize(weight, self.weight_step, self.bits, signed=True, fused=self.fused)

    def _inference_weight(self) -> torch.Tensor:
        """``Q(weight)·|act_step|``, cached until the weight, a step or the bits change.

        Convolution is linear, so ``conv(codes·s_a, Q(w)) = conv(codes, Q(w)·s_a)``: folding the
        activation step into the cached weight saves one pass over every activation tensor.
        """
        key = (self.weight._version, self.weight.data_ptr(), self.weight_step._version, self.weight_step.data_ptr(),
               self.act_step._version, self.act_step.data_ptr(), self.bits, self.weight.dtype, self.weight.device)
        if self._weight_cache is None or self._weight_cache[0] != key:
            folded = self.quantize_weight(self.weight) * self.act_step.abs()
            self._weight_cache = (key, folded)
        return self._weight_cache[1]

    def weight_codes(self) -> torch.Tensor:
        """Integer codes of the quantized weight (int8), as packed files store them."""
        return quant_codes(self.weight, self.weight_step, self.bits, signed=True).to(torch.int8)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, *, stride: int | None = None,
             groups: int | None = None, act: nn.Module | None = None) -> torch.Tensor:
        """Quantize ``act(x)`` and ``weight`` and convolve; used by the elastic layers with slices.

        ``act`` is the activation between the previous layer and this one. Taken here, a ReLU or
        hard-swish is absorbed by the input quantizer (:func:`lsq_quantize`): one pass over the
        activation instead of two, with the same values.
        """
        name = _ACTIVATION_NAMES.get(type(act))
        if act is not None and (name is None or not self.quantized or not bool(self.step_initialized)):
            x, name = act(x), None  # float, another activation, or LSQ's init, which reads act(x)
        self.maybe_init_steps(x, weight)
        stride = self.stride if stride is None else stride
        groups = self.groups if groups is None else groups
        padding = weight.shape[-1] // 2
        if not self.quantized:
            return _conv2d(x, weight, stride, padding, groups, fused=self.fused)
        if weight is self.weight and not self.training and not torch.is_grad_enabled():
            if name is not None and not self.clamps_away(act):
                x = act(x)
            codes = quant_codes(x, self.act_step, self.bits, signed=self.signed_input, inplace=self.inplace)
            return F.conv2d(codes, self._inference_weight(), None, stride, padding, 1, groups)
        x = self.quantize_input(x, act=name)
        return _conv2d(x, self.quantize_weight(weight), stride, padding, groups, fused=self.fused)

    def forward(self, x: torch.Tensor, *, act: nn.Module | None = None) -> torch.Tensor:
        return self.conv(x, self.weight, act=act)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        check_step_bits(self, state_dict, prefix)
        self._weight_cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', bits={self.bits}' + (', signed_input=True' if self.signed_input else '')


def check_step_bits(conv: QuantConv2d, state_dict: dict[str, Any], prefix: str) -> None:
    """Refuse (:class:`IncompatibleWeightsError`) a state dict whose steps for ``conv`` (keys under ``prefix``)
    were set for other bits than ``conv``'s: a 4-bit file loaded into a 2-bit model. A value written before
    the steps recorded their bits (a bool) is replaced in ``state_dict`` by ``conv``'s bits, unchecked."""
    key = prefix + 'step_initialized'
    value = state_dict.get(key)
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or value.is_meta:
        return  # missing or misshapen: load_state_dict's own report
    expected = conv.step_bits or conv.bits
    if value.dtype == torch.bool:
        state_dict[key] = torch.tensor(expected if bool(value) else 0, dtype=STEP_BITS_DTYPE).reshape(value.shape)
        return
    found = int(value)
    if found and found != expected:
        inherit = (f', or derive a {expected}-bit one from it by bit inheritance (`oqat inherit`, '
                   'oqatnets.training.inherit_bits)') if expected < found else ''
        raise IncompatibleWeightsError(f'{key} says these step sizes are {found}-bit, and this model is {expected}-bit: '
                                       f'the state dict is a {found}-bit model\'s; build the model at {found} bits'
                                       + inherit)


def iter_quant_convs(model: nn.Module) -> Iterator[tuple[str, QuantConv2d]]:
    """(name, module) for every quantized conv of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, QuantConv2d):
            yield name, module


def _module(model: Any, *, action: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f'{action} takes a torch module, got {type(model).__name__}')
    return model


def set_bits(model: nn.Module, bits: int) -> nn.Module:
    """Set the bit-width of every quantized conv of ``model`` (32 turns quantization off).

    The convs own the bit-width: an OQATNet's ``bits``, ``spec`` and ``pretrained_cfg`` read it from them.
    Steps already set are the new bit-width's from then on (:attr:`QuantConv2d.step_bits`), as they are
    used; 32 leaves them what they were, to be quantized with again.
    """
    validate_bits(bits)
    convs = [module for _, module in iter_quant_convs(_module(model, action='set_bits'))]
    if not convs:
        raise InvalidArgumentError(f'{type(model).__name__} has no quantized convs whose bits could be set')
    for module in convs:
        module.bits = bits
        module._weight_cache = None
        if bits < FLOAT_BITS and module.step_bits is not None:
            module.step_initialized.fill_(bits)
    return model


def set_fused_quantizer(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Run ``model``'s quantized convs through the fused one-pass LSQ kernels (or back to eager).

    Eager LSQ runs divide, clamp, round and multiply as separate passes; the fused kernels do one
    pass forward and one backward with the same operations: equal outputs and input gradients,
    the step gradient summed in another order. On the CPU they are ``csrc/lsq.c``, built with the
    C compiler on first use (:class:`~oqatnets.errors.KernelUnavailableError` here, before any
    training, when it cannot be), and they also compute a hard-swish handed to the conv (``act``)
    in their pass and the weight gradient of 5×5 and 7×7 depthwise convs (:func:`_conv2d`); elsewhere
    ``torch.compile``. The training commands turn them on by default on the CPU, where a sandwich
    step measured 1.04–1.21× faster (docs/BENCHMARKS.md §1). Without
    gradients (evaluation, BN calibration, the search) the CPU kernel's forward runs too, with the
    same values; off the CPU inference stays eager rather than compile.
    """
    if enabled and any(p.device.type == 'cpu' for p in model.parameters()):
        load_kernel()
    for _, module in iter_quant_convs(model):
        module.fused = bool(enabled)
    return model


def fused_quantizer_enabled(model: nn.Module) -> bool:
    """Whether every quantized conv of ``model`` trains through the fused kernels."""
    convs = [m for _, m in iter_quant_convs(model)]
    return bool(convs) and all(m.fused for m in convs)


def get_bits(model: nn.Module) -> int:
    """The uniform bit-width of ``model``'s quantized convs (32 when it has none)."""
    bits = {m.bits for _, m in iter_quant_convs(_module(model, action='get_bits'))}
    if len(bits) > 1:
        raise InvalidArgumentError(f'model mixes bit-widths {sorted(bits)}; OQATNets use one bit-width per network')
    return bits.pop() if bits else FLOAT_BITS
