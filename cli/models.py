"""Zoo-facing commands: list, info, profile, eval, predict, export, push, convert-official, zoo."""
from __future__ import annotations

from .main import cli  # noqa: F401
