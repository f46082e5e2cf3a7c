"""The ``oqat`` click application: the group, its error map, and the commands registered one way.

Command modules (``models``, ``training``) define plain click commands and never import this
module; this module imports them and adds them to the group. Exit statuses: 0 success, 1 a
known error (:class:`oqatnets.OQATNetsError`, or an operating-system error on a named file,
or a Hub transfer error), 2 bad usage (click's convention; also a bad argument value that the
library reports as :class:`~oqatnets.errors.InvalidArgumentError`). Each known error prints
one line, ``Error: ...``; anything else is a bug and keeps its traceback. ``OQAT_DEBUG=1`` shows
the traceback of known errors too.
"""
from __future__ import annotations

import os

import click
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

from oqatnets.errors import OQATNetsError

from . import models, training

__all__ = ['cli', 'main']

_HUB_ERRORS = (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if 'Original Traceback' in text:  # re-raised from a DataLoader worker: its last line is the original error
        text = text.strip().splitlines()[-1].split(': ', 1)[-1]
    return ' '.join(text.split()) or type(exc).__name__


class OqatGroup(click.Group):
    """A click group that turns known errors into one line on stderr and their exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OQATNetsError as exc:
            self._fail(ctx, _one_line(exc), exc.exit_code)
        except _HUB_ERRORS as exc:
            self._fail(ctx, f'Hugging Face Hub: {_one_line(exc)}', 1)
        except OSError as exc:
            if exc.filename is None:  # not about a file the user named: a bug or the machine, keep the traceback
                raise
            self._fail(ctx, f'{exc.filename}: {exc.strerror or _one_line(exc)}', 1)

    @staticmethod
    def _fail(ctx: click.Context, message: str, code: int) -> None:
        if os.environ.get('OQAT_DEBUG'):
            raise
        click.echo(f'Error: {message}', err=True)
        ctx.exit(code)


@click.group(cls=OqatGroup, context_settings={'help_option_names': ['-h', '--help']})
@click.version_option(package_name='oqatnets', prog_name='oqat')
def cli() -> None:
    """OQATNets: list, profile, evaluate, finetune, export, convert and publish 2/3/4-bit networks."""


for _command in (*models.COMMANDS, *training.COMMANDS):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == '__main__':
    main()
