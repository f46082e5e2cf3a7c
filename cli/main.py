"""The ``oqat`` click application: the group, its error map, and the commands registered one way.

Command modules (``models``, ``training``) define plain click commands and never import this
module; the group imports them and adds their commands on first need (not for ``--version``,
so ``oqat --version`` starts without torch). Exit statuses: 0 success; 1 a known error
(:class:`oqatnets.OQATNetsError`, an operating-system error on a named file, a Hub transfer
error, or a missing optional dependency, printed with its ``pip install`` line); 2 bad usage
(click's convention; also a bad argument value that the library reports as
:class:`~oqatnets.errors.InvalidArgumentError`). Each known error prints one line,
``Error: ...``; anything else is a bug and keeps its traceback. ``OQAT_DEBUG=1`` shows
the traceback of known errors too.
"""
from __future__ import annotations

import os
import sys

import click
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

from oqatnets.errors import OQATNetsError

__all__ = ['cli', 'main']

_HUB_ERRORS = (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled)
# the connection errors of the HTTP client huggingface_hub uses (by version: httpx2, httpx or requests)
_TRANSPORT_ERRORS = (('httpx2', 'TransportError'), ('httpx', 'TransportError'), ('requests', 'ConnectionError'))
# optional dependencies (module -> the extra that installs it), named with their install line when missing
OPTIONAL_DEPENDENCIES = {'onnx': 'onnx', 'onnxruntime': 'onnx', 'tensorboard': 'tensorboard'}


def install_hint(module: str) -> str:
    """One line saying which optional dependency is missing and how to install it."""
    return f"this needs the optional dependency {module}: pip install 'oqatnets[{OPTIONAL_DEPENDENCIES[module]}]'"


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if 'Original Traceback' in text:  # re-raised from a DataLoader worker: its last line is the original error
        text = text.strip().splitlines()[-1].split(': ', 1)[-1]
    return ' '.join(text.split()) or type(exc).__name__


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The connection errors of whichever HTTP clients are loaded (a client not imported raised nothing)."""
    return tuple(getattr(sys.modules[module], name) for module, name in _TRANSPORT_ERRORS
                 if hasattr(sys.modules.get(module), name))


class OqatGroup(click.Group):
    """A click group that turns known errors into one line on stderr and their exit status, and loads
    its command modules when a command is listed or looked up."""

    _loaded = False

    def _load_commands(self) -> None:
        if self._loaded:
            return
        from . import models, training  # here, not at the top: they import torch, --version must not
        for command in (*models.COMMANDS, *training.COMMANDS):
            self.add_command(command)
        self._loaded = True

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> 'click.Command | None':
        self._load_commands()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a bad option value: one line naming it, not the usage block
            self._fail(ctx, _one_line(exc.format_message()), exc.exit_code)
        except OQATNetsError as exc:
            self._fail(ctx, _one_line(exc), exc.exit_code)
        except _HUB_ERRORS as exc:
            self._fail(ctx, f'Hugging Face Hub: {_one_line(exc)}', 1)
        except ModuleNotFoundError as exc:
            top = (exc.name or '').split('.')[0]
            if top not in OPTIONAL_DEPENDENCIES:
                raise
            self._fail(ctx, install_hint(top), 1)
        except Exception as exc:
            if isinstance(exc, _transport_errors()):
                self._fail(ctx, f'cannot reach the Hugging Face Hub ({_one_line(exc)}); check the connection, or set '
                                'HF_HUB_OFFLINE=1 to use only what is cached', 1)
            if not isinstance(exc, OSError) or exc.filename is None:  # no file the user named: a bug, keep the traceback
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


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == '__main__':
    main()
