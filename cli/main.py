"""The ``oqat`` click application: one group, commands registered from the modules beside it.

Every command's expected failures (bad names, specs, files, offline without weights) end with
exit status 2 and one line on stderr, never a traceback; ``OQAT_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

import os
import sys

import click

from oqatnets import __version__

# Exceptions that mean "the user's input is wrong or something is missing", not "a bug".
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, RuntimeError,
                                                 PermissionError, NotADirectoryError, IsADirectoryError)


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return ' '.join(text.split()) or type(exc).__name__


class OqatGroup(click.Group):
    """A click group that turns user errors into ``Error: <one line>`` and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except USER_ERRORS as exc:
            if os.environ.get('OQAT_DEBUG'):
                raise
            click.echo(f'Error: {_one_line(exc)}', err=True)
            sys.exit(2)


@click.group(cls=OqatGroup, context_settings={'help_option_names': ['-h', '--help']})
@click.version_option(__version__, prog_name='oqat')
def cli() -> None:
    """OQATNets: list, profile, evaluate, finetune, export, convert and publish 2/3/4-bit networks."""


def _register() -> None:
    from . import models, training  # noqa: F401  (each module adds its commands to ``cli``)


_register()

if __name__ == '__main__':
    # Run as ``python -m oqatnets.cli.main`` (e.g. under torchrun) this file is ``__main__``, while the
    # command modules registered themselves on the importable ``oqatnets.cli.main.cli``: run that one.
    from oqatnets.cli.main import cli as _registered_cli
    _registered_cli()
