"""LSQ's one-pass CPU kernels (``csrc/lsq.c``) and a depthwise convolution's weight gradient
(``csrc/depthwise.c``), built with the system C compiler on first use.

Eager LSQ reads and writes each activation about fourteen times per training step (divide, clamp,
round, multiply, the saved tensors, two dot products); these kernels read ``x`` once and write the
output once forward, and read ``x`` and the gradient once and write the input gradient once
backward, with the same floating-point operations (docs/BENCHMARKS.md §1); the ``lsq_hardswish``
variants also compute the hard-swish that produces ``x`` in that pass. oneDNN's weight gradient of
a 5×5 or 7×7 depthwise conv runs 10–35× slower than its forward pass; the direct sum here is 3–16×
faster than oneDNN's (:meth:`LSQKernel.depthwise_weight_grad`). The library is built
into a temporary folder once per process (a fraction of a second), loaded with ``ctypes`` and its
folder removed: nothing is left behind and no build cache can go stale. Its OpenMP calls resolve to
the runtime torch has already loaded and run on ``torch.get_num_threads()`` threads.
"""
from __future__ import annotations

import ctypes
import functools
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from .errors import KernelUnavailableError

__all__ = ['LSQKernel', 'load_kernel']

_SOURCES = tuple(Path(__file__).with_name('csrc') / name for name in ('lsq.c', 'depthwise.c'))
# -ffp-contract=off: no fused multiply-add, so every value rounds as eager PyTorch's does.
_FLAGS = ('-O3', '-march=native', '-std=c11', '-ffp-contract=off', '-fno-math-errno', '-fPIC', '-shared')
_BLOCK = 4096  # BLOCK in lsq.c
_ACTS = {None: 'lsq', 'hardswish': 'lsq_hardswish'}  # the activation computed in the pass: its functions' prefix
_CTYPES = {torch.float32: ('f32', ctypes.c_float), torch.float64: ('f64', ctypes.c_double)}


class LSQKernel:
    """The loaded kernels: ``forward``/``backward`` on 1-D contiguous CPU tensors of float32 or float64.

    ``ACTS`` are the activations the kernels can compute inside their pass (``act=``), so a quantized
    conv's input needs no pass of its own for them (:meth:`oqatnets.quant.QuantConv2d.conv`).
    """

    ACTS = tuple(act for act in _ACTS if act is not None)

    def __init__(self, lib: ctypes.CDLL):
        self._fns = {}
        ptr, n = ctypes.c_void_p, ctypes.c_int64
        for act, prefix in _ACTS.items():
            for dtype, (suffix, scalar) in _CTYPES.items():
                fwd, bwd = getattr(lib, f'{prefix}_forward_{suffix}'), getattr(lib, f'{prefix}_backward_{suffix}')
                fwd.argtypes, fwd.restype = [ptr, ptr, n, scalar, scalar, scalar, ctypes.c_int], None
                bwd.argtypes = [ptr, ptr, ptr, ptr, n, scalar, scalar, scalar, ctypes.c_int]
                bwd.restype = ctypes.c_double
                self._fns[act, dtype] = (fwd, bwd)
        for dtype, (suffix, _) in _CTYPES.items():
            fn = getattr(lib, f'depthwise_weight_grad_{suffix}')
            fn.argtypes, fn.restype = [ptr, ptr, ptr, ptr, *[n] * 9, ctypes.c_int], None
            self._fns['depthwise', dtype] = (fn,)

    @staticmethod
    def supports(t: torch.Tensor) -> bool:
        """Whether ``t`` (a CPU tensor of float32 or float64) can go through these kernels."""
        return t.device.type == 'cpu' and t.dtype in _CTYPES

    def forward(self, x: torch.Tensor, step: torch.Tensor, qn: int, qp: int, *, act: str | None = None) -> torch.Tensor:
        """``round(clamp(a / |s|, qn, qp)) · |s|`` for a flat ``x`` and the one-element ``step`` s, where ``a`` is
        ``x`` or, with ``act='hardswish'``, ``F.hardswish(x)`` computed in the same pass."""
        out = torch.empty_like(x)
        self._fns[act, x.dtype][0](x.data_ptr(), out.data_ptr(), x.numel(), abs(float(step)), qn, qp,
                                   torch.get_num_threads())
        return out

    def backward(self, grad: torch.Tensor, x: torch.Tensor, step: torch.Tensor, qn: int, qp: int, grad_scale: float,
                 *, act: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient with respect to ``x``, LSQ's step gradient ``Σ g·(q − v·inside) · grad_scale · sign(s)``) for
        flat ``grad`` and ``x`` of the same dtype and the forward's ``act``; the sum is the same on any number of
        threads."""
        grad_x = torch.empty_like(x)
        partial = torch.empty(-(-x.numel() // _BLOCK), dtype=torch.float64)  # one sum per block of the C source
        s = float(step)
        total = self._fns[act, x.dtype][1](grad.data_ptr(), x.data_ptr(), grad_x.data_ptr(), partial.data_ptr(),
                                           x.numel(), abs(s), qn, qp, torch.get_num_threads())
        return grad_x, torch.full_like(step, total * grad_scale * ((s > 0) - (s < 0)))

    def depthwise_weight_grad(self, x: torch.Tensor, grad: torch.Tensor, kernel_size: int, *, stride: int,
                              padding: int) -> torch.Tensor:
        """The gradient with respect to the C×1×k×k weight of ``F.conv2d(x, w, None, stride, padding, 1, C)`` given
        ``grad``, its output's gradient; ``x`` and ``grad`` are N×C×H×W of one dtype, used channels-last. Summed in
        the dtype, in the same order on any number of threads."""
        n, c, h, w = x.shape
        ho, wo = grad.shape[-2:]
        x = x.contiguous(memory_format=torch.channels_last)
        grad = grad.contiguous(memory_format=torch.channels_last)
        partial = torch.empty(n * kernel_size * kernel_size * c, dtype=x.dtype)
        out = torch.empty(kernel_size, kernel_size, c, dtype=x.dtype)
        self._fns['depthwise', x.dtype][0](x.data_ptr(), grad.data_ptr(), partial.data_ptr(), out.data_ptr(),
                                           n, h, w, c, ho, wo, kernel_size, stride, padding, torch.get_num_threads())
        return out.permute(2, 0, 1).unsqueeze(1).contiguous()


def _compiler() -> list[str]:
    command = shlex.split(os.environ.get('CC', '')) or ['cc']
    if shutil.which(command[0]) is None:
        raise KernelUnavailableError(
            f'no C compiler ({command[0]!r}) found to build the fused LSQ kernel: install gcc, set CC, '
            'or train without it (--no-compile)')
    return command


@functools.cache
def load_kernel() -> LSQKernel:
    """Build and load the kernels once per process; :class:`KernelUnavailableError` when they cannot be built."""
    openmp = ('-fopenmp',) if torch.backends.openmp.is_available() else ('-Wno-unknown-pragmas',)
    command = _compiler()
    with tempfile.TemporaryDirectory(prefix='oqatnets-lsq-', ignore_cleanup_errors=True) as folder:
        library = Path(folder) / 'lsq.so'
        build = subprocess.run([*command, *_FLAGS, *openmp, *map(str, _SOURCES), '-o', str(library)],
                               capture_output=True, text=True, check=False)
        if build.returncode != 0:
            first = next((line for line in build.stderr.splitlines() if line.strip()), f'exit status {build.returncode}')
            raise KernelUnavailableError(
                f'{command[0]} could not build the fused LSQ kernel ({first.strip()}); '
                'train without it (--no-compile) or set CC to a GCC-compatible compiler with OpenMP')
        return LSQKernel(ctypes.CDLL(str(library)))
