"""The CLI's own refusal: a bad combination of arguments, one line, exit status 2 (usage)."""
from __future__ import annotations

import click

__all__ = ['BadUsage']


class BadUsage(click.ClickException):
    """Arguments that cannot work together; printed as ``Error: <message>`` without the usage block."""

    exit_code = 2

