"""Packed low-bit weights: every quantized conv's integer codes bit-packed into U8 safetensors.

Format ``oqatnets.packed`` version 1 (all of it is described in the file's ``__metadata__``):

- ``<conv>.weight_codes``: U8, the conv's signed weight codes ``q ∈ [Qn, Qp]`` stored offset-binary
  as ``q − Qn`` in ``bits`` bits each, concatenated in C order into one little-endian bit stream
  (value ``i`` occupies stream bits ``i·b … i·b+b−1``, least significant bit first; bit ``j`` of
  the stream is bit ``j mod 8`` of byte ``j // 8``), so 3-bit codes cross byte boundaries.
- ``<conv>.weight_step`` and ``<conv>.act_step``: F32, as trained (sign kept; ``|s|`` is used).
- every other tensor of the state dict (stem, BN, SE, classifier): as is.
- metadata: ``format``, ``format_version``, ``bits``, ``weight_signed``, ``code_offset``,
  ``bit_order``, ``shapes`` (JSON: original shape of each packed weight), ``model_args`` and
  ``pretrained_cfg`` (JSON, added by :mod:`oqatnets.weights`), so the model can be rebuilt from
  the file alone (:func:`oqatnets.load_packed`).

Dequantized weight = ``q · |weight_step|``, exactly what :class:`~oqatnets.quant.QuantConv2d`
computes in its forward, so the unpacked model's outputs equal the fake-quant model's.

This module is the codec only: tensors in, tensors out. Reading and writing files is
:mod:`oqatnets.weights`; rebuilding the model is :mod:`oqatnets.factory`.
"""
from __future__ import annotations

import json
import math

import torch
import torch.nn as nn

from .errors import InvalidArgumentError, InvalidFileError, QuantizationError
from .quant import STEP_BITS_DTYPE, QuantConv2d, iter_quant_convs, quant_range

__all__ = ['FORMAT_NAME', 'FORMAT_VERSION', 'pack_bits', 'unpack_bits', 'packed_state_dict', 'unpack_state_dict',
           'is_packed_metadata']

FORMAT_NAME = 'oqatnets.packed'
FORMAT_VERSION = 1
_CODES = '.weight_codes'


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integers ``< 2**bits`` into a little-endian U8 bit stream.

    Eight values of ``b`` bits fill exactly ``b`` bytes, so each group of eight becomes one
    64-bit word (value ``j`` at bit ``j·b``) whose low ``b`` bytes are the group's bytes.
    """
    if not 1 <= bits <= 8:
        raise InvalidArgumentError(f'pack_bits: bits must be 1 to 8, got {bits}')
    flat = values.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise InvalidArgumentError(f'pack_bits: values must lie in [0, {(1 << bits) - 1}] for {bits} bits')
    n = flat.numel()
    groups = torch.nn.functional.pad(flat, (0, (-n) % 8)).reshape(-1, 8)
    words = (groups << (torch.arange(8, dtype=torch.int64) * bits)).sum(1)
    packed = (words[:, None] >> (torch.arange(bits, dtype=torch.int64) * 8)) & 0xFF
    return packed.reshape(-1)[:(n * bits + 7) // 8].to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int, *, where: str = 'unpack_bits') -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` values, as int64; ``where`` names the data in errors."""
    if packed.numel() * 8 < numel * bits:
        raise InvalidFileError(f'{where}: {packed.numel()} bytes cannot hold {numel} values of {bits} bits; '
                               'the file is corrupt')
    data = packed.reshape(-1).to(torch.int64)
    data = torch.nn.functional.pad(data, (0, (-data.numel()) % bits)).reshape(-1, bits)
    words = (data << (torch.arange(bits, dtype=torch.int64) * 8)).sum(1)
    values = (words[:, None] >> (torch.arange(8, dtype=torch.int64) * bits)) & ((1 << bits) - 1)
    return values.reshape(-1)[:numel]


def _quantized_convs(model: nn.Module) -> list[tuple[str, QuantConv2d]]:
    convs = [(name, m) for name, m in iter_quant_convs(model) if m.quantized]
    for name, m in convs:
        if not bool(m.step_initialized):
            raise QuantizationError(f'{name} has no step sizes yet; run one forward pass (or load weights) before packing')
    return convs


def packed_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The packed tensors and the metadata of ``model`` (an OQATNet with initialised steps)."""
    convs = _quantized_convs(model)
    bits = {m.bits for _, m in convs}
    if len(bits) != 1:
        raise InvalidArgumentError(f'packing needs one bit-width across quantized convs, found {sorted(bits) or "none"}')
    (b,) = bits
    if not 2 <= b <= 8:
        raise InvalidArgumentError(f'{b}-bit weights are not packed (the format holds 2 to 8 bits; 1-bit weights are '
                                   "sign(w), three levels with 0); save model.safetensors instead")
    qn, _ = quant_range(b, signed=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    shapes = {}
    for name, conv in convs:
        codes = conv.weight_codes().cpu()
        shapes[name] = list(codes.shape)
        del state[f'{name}.weight'], state[f'{name}.step_initialized']
        state[name + _CODES] = pack_bits(codes.to(torch.int64) - qn, b)
        state[f'{name}.weight_step'] = state[f'{name}.weight_step'].float()
        state[f'{name}.act_step'] = state[f'{name}.act_step'].float()
    metadata = {
        'format': FORMAT_NAME, 'format_version': str(FORMAT_VERSION), 'bits': str(b),
        'weight_signed': 'true', 'code_offset': str(qn), 'bit_order': 'lsb0-stream',
        'activation_signed': 'false', 'shapes': json.dumps(shapes, separators=(',', ':')),
    }
    return state, metadata


def is_packed_metadata(metadata: dict[str, str] | None) -> bool:
    """Whether a safetensors file's metadata says it holds packed weights."""
    return (metadata or {}).get('format') == FORMAT_NAME


def unpack_state_dict(tensors: dict[str, torch.Tensor], metadata: dict[str, str], *,
                      where: str = 'packed weights') -> dict[str, torch.Tensor]:
    """The regular (dequantized) state dict of packed ``tensors``; ``where`` names them in errors."""
    if not is_packed_metadata(metadata):
        raise InvalidFileError(f'{where} is not an {FORMAT_NAME} file (its metadata says format='
                               f'{metadata.get("format")!r}); load it as plain safetensors')
    try:
        version, bits, offset = int(metadata['format_version']), int(metadata['bits']), int(metadata['code_offset'])
        shapes = json.loads(metadata['shapes'])
    except (KeyError, ValueError) as exc:
        raise InvalidFileError(f'{where}: packed metadata is incomplete or malformed ({exc})') from None
    if version > FORMAT_VERSION:
        raise InvalidFileError(f'{where} uses {FORMAT_NAME} version {version}; this oqatnets reads up to '
                               f'{FORMAT_VERSION}: upgrade oqatnets')
    if version < 1 or not 2 <= bits <= 8 or not isinstance(shapes, dict):
        raise InvalidFileError(f'{where}: packed metadata declares version {version}, bits={bits} and shapes of '
                               f'type {type(shapes).__name__}; the file is corrupt')
    if offset != quant_range(bits, signed=True)[0]:  # the codes' zero: fixed by the bits, never free
        raise InvalidFileError(f'{where}: code_offset {offset} is not the {bits}-bit offset '
                               f'{quant_range(bits, signed=True)[0]}; the file is corrupt')
    state = dict(tensors)
    for name, shape in shapes.items():
        codes_key, step_key = name + _CODES, f'{name}.weight_step'
        if codes_key not in state or step_key not in state:
            raise InvalidFileError(f'{where}: {codes_key} or {step_key} is missing; the file is corrupt')
        if state[codes_key].dtype != torch.uint8:
            raise InvalidFileError(f'{where}: {codes_key} holds {state[codes_key].dtype}, not packed bytes '
                                   '(uint8); the file is corrupt')
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise InvalidFileError(f'{where}: shape of {name} is {shape!r}; the file is corrupt')
        codes = unpack_bits(state.pop(codes_key), bits, math.prod(shape), where=where) + offset
        step = state[step_key]
        state[f'{name}.weight'] = codes.to(step.dtype).reshape(shape) * step.abs()
        state[f'{name}.step_initialized'] = torch.tensor(bits, dtype=STEP_BITS_DTYPE)
    return state
