"""Training-facing commands: train, inherit, calibrate, search, finetune, demo."""
from __future__ import annotations

from .main import cli  # noqa: F401
