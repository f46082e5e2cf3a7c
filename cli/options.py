"""Click options shared by several commands, defined once."""
from __future__ import annotations

import click
from click.core import ParameterSource

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
