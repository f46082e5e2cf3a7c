"""Every exception oqatnets raises on purpose, in one place (as ``huggingface_hub.errors``).

Each is an :class:`OQATNetsError` and also the builtin a caller would naturally catch
(``ValueError`` for bad values, ``FileNotFoundError`` for missing files, ``ImportError`` for a
missing optional dependency), so ``except ValueError`` keeps working. Messages name the
argument or file and say what to do, in the API's words. ``exit_code`` is what the ``oqat``
command exits with: 2 for a bad argument (click's usage convention), 1 for everything else.
"""
from __future__ import annotations

__all__ = [
    'OQATNetsError', 'InvalidArgumentError', 'InvalidTypeError', 'UnknownModelError', 'InvalidFileError', 'IncompatibleWeightsError',
    'ChecksumError', 'FileMissingError', 'PretrainedWeightsError', 'MissingDependencyError', 'DataError',
    'CheckpointError', 'OfficialCheckpointError', 'OFACheckpointError', 'UnsafeOutputError', 'QuantizationError',
    'ExportMismatchError', 'KernelUnavailableError',
]


class OQATNetsError(Exception):
    """Base class of every error oqatnets raises for bad input or a missing resource."""

    exit_code = 1


class InvalidArgumentError(OQATNetsError, ValueError):
    """An argument's value is not acceptable (a spec, bit-width, name, count ...)."""

    exit_code = 2


class InvalidTypeError(InvalidArgumentError, TypeError):
    """An argument has a type the function does not take."""


class UnknownModelError(OQATNetsError, RuntimeError):
    """No registered model has this name (timm raises ``RuntimeError`` here too)."""

    exit_code = 2


class InvalidFileError(OQATNetsError, ValueError):
    """A file exists but does not hold what it must (corrupt, truncated, wrong format, bad JSON)."""


class IncompatibleWeightsError(InvalidFileError):
    """A weights file records another model (bits, space, spec or classes) than the one being built."""


class ChecksumError(InvalidFileError):
    """A file's sha256 differs from the one recorded for it."""


class FileMissingError(OQATNetsError, FileNotFoundError):
    """A file or folder that was named does not exist or is not of the expected kind."""


class UnsafeOutputError(OQATNetsError, ValueError):
    """An output path is not a regular file or folder that may be replaced (a device, a FIFO ...)."""


class PretrainedWeightsError(OQATNetsError, RuntimeError):
    """Weights were asked for and cannot be had; the message says why and what to do."""


class MissingDependencyError(OQATNetsError, ImportError):
    """An optional dependency is not installed; the message gives the ``pip install`` line."""


class DataError(OQATNetsError, RuntimeError):
    """A data set could not be found, read or prepared; the message says what to do."""


class CheckpointError(OQATNetsError, RuntimeError):
    """A training checkpoint or run folder is missing, unreadable or does not match the run."""


class OfficialCheckpointError(InvalidFileError):
    """A file is not a checkpoint in the authors' OQA format."""


class OFACheckpointError(InvalidFileError):
    """A file is not a float Once-for-All MobileNetV3 supernet, or does not fit the OQAT supernet."""


class ExportMismatchError(OQATNetsError, RuntimeError):
    """An exported ONNX file, run in onnxruntime, disagrees with the PyTorch model beyond the tolerance."""

    def __init__(self, path: object, details: str) -> None:
        self.path, self.details = path, details
        super().__init__(f'{path}: {details}')


class QuantizationError(OQATNetsError, ValueError):
    """Quantization cannot proceed (a step size would be zero or not finite)."""


class KernelUnavailableError(OQATNetsError, RuntimeError):
    """The fused LSQ kernel was asked for and cannot be built here (no C compiler, or it failed)."""
