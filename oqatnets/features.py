"""timm's ``features_only``: an OQATNet or supernet wrapped to return its feature maps."""
from __future__ import annotations

from typing import Any

import torch.nn as nn
from timm.models._features import FeatureGetterNet

from .errors import InvalidArgumentError
from .net import check_feature_indices

__all__ = ['features_model']


def features_model(model: nn.Module, *, out_indices: Any = None, feature_cls: str | None = None) -> nn.Module:
    """A list of NCHW feature maps at ``out_indices`` (positions in ``model.feature_info``; default the last
    block at each stride) through timm's ``FeatureGetterNet``, which calls ``forward_intermediates`` and so
    follows a supernet's active depth (timm's hook-based wrappers would run every block)."""
    if feature_cls not in (None, 'getter'):
        raise InvalidArgumentError(f"feature_cls={feature_cls!r}: OQATNets give features through 'getter' "
                                   '(forward_intermediates), which follows the active subnet')
    indices = model.default_out_indices if out_indices is None else out_indices
    check_feature_indices(indices, len(model.feature_info), name='out_indices')
    features = FeatureGetterNet(model, out_indices=indices, prune=False)
    # as timm's builder does: resolve_data_config(model=features) must find the model's data config, not ImageNet's
    features.pretrained_cfg = features.default_cfg = model.pretrained_cfg
    return features
