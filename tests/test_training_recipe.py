"""Recipe knobs of the float-then-quantized schedule and the demo preset that uses them."""
from __future__ import annotations

import pytest

from oqatnets.training.demo import DEMO_PRESETS, demo_recipe
from oqatnets.training.optim import PhasedWarmupCosine
from oqatnets.training.recipes import get_recipe


def test_quantized_phase_after_float_peaks_at_its_factor():
    schedule = PhasedWarmupCosine([(10, 2, 1.0), (10, 2, 0.3)])
    assert schedule(1) == pytest.approx(1.0)  # end of the float warm-up
    assert schedule(11) == pytest.approx(0.3)  # end of the quantized warm-up: the lower peak
    assert max(schedule(s) for s in range(10, 20)) == pytest.approx(0.3)
    assert schedule(20) == 0.0
    old_style = PhasedWarmupCosine([(10, 2), (10, 2)])  # (steps, warm-up) pairs from older checkpoints
    assert old_style(11) == pytest.approx(1.0)


def test_recipe_refuses_a_non_positive_quant_lr_factor():
    with pytest.raises(ValueError, match='quant_lr_factor'):
        get_recipe('small').override(quant_lr_factor=0.0)


def test_demo_preset_carries_its_float_phase_into_the_recipe():
    preset = DEMO_PRESETS['default']
    recipe = demo_recipe(preset)
    assert recipe.float_epochs == preset.float_epochs and recipe.quant_lr_factor == preset.quant_lr_factor
