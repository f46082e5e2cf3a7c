"""timm's ``features_only``: an OQATNet or supernet wrapped to return its feature maps."""
from __future__ import annotations

from typing import Any

import torch.nn as nn
from timm.models._features import FeatureGetterNet

from .errors import InvalidArgumentError

__all__ = ['features_model']


def features_model(model: nn.Module, *, out_indices: Any = None, feature_cls: str | None = None) -> nn.Module:
    """A list of NCHW feature maps at ``out_indices`` (positions in ``model.feature_info``; default the last
    block at each stride) through timm's ``FeatureGetterNet``, which calls ``forward_intermediates`` and so
    follows a supernet's active depth (timm's hook-based wrappers would run every block)."""
    if feature_cls not in (None, 'getter'):
        raise InvalidArgumentError(f"feature_cls={feature_cls!r}: OQATNets give features through 'getter' "
                                   '(forward_intermediates), which follows the active subnet')
    indices = model.default_out_indices if out_indices is None else out_indices
    n = len(model.feature_info)
    if not _takes(indices, n):
        raise InvalidArgumentError(f'out_indices={out_indices!r}: this model has {n} feature maps; pass positions 0 to '
                                   f'{n - 1} (or -{n} to -1), or an int N for the last N')
    return FeatureGetterNet(model, out_indices=indices, prune=False)


def _takes(indices: Any, n: int) -> bool:
    """Whether timm's ``out_indices`` (an int N for the last N maps, or positions) fit ``n`` feature maps."""
    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)
    if is_int(indices):
        return 0 < indices <= n
    return isinstance(indices, (list, tuple)) and bool(indices) and all(is_int(i) and -n <= i < n for i in indices)
