"""Click options shared by several commands, defined once."""
from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from oqatnets._io import check_output, occupied  # torch-free: `oqat --help` stays fast

from .errors import BadUsage

# oqatnets.evaluation.CALIBRATION_MODES, spelled out so that `oqat --help` imports no torch
# (tests/test_calibration.py checks the two agree).
CALIBRATION_MODES = ('batch', 'population')

calibration_mode_option = click.option(
    '--calibration-mode', 'calibration_mode', type=click.Choice(CALIBRATION_MODES), default=None,
    help='How BN is recalibrated: batch (the authors\' per-batch statistics) or population (all images in '
         'one forward, what the deployed net sees; more memory). Default: the recipe\'s for the model\'s space.')


def given(name: str) -> bool:
    """Whether the current command's option ``name`` was given (command line or environment), not defaulted:
    a value given is honoured or refused, a default may adapt to the data."""
    return click.get_current_context().get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                                                      ParameterSource.ENVIRONMENT)


overwrite_option = click.option('--overwrite', is_flag=True,
                                help='Replace the output if it exists (default: refuse, so nothing written before is lost).')


def output_path(path: str, *, folder: bool, overwrite: bool) -> Path:
    """The checked output: a device, FIFO or path of the wrong kind is refused, and so is an existing file or a
    folder with something in it unless ``--overwrite``; before anything is loaded or written."""
    real = check_output(path, folder=folder)
    if not overwrite and occupied(real, folder=folder):
        raise BadUsage(f'{path} already exists; pass --overwrite to replace it, or choose another path')
    return real
