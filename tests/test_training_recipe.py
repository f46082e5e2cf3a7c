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


def test_demo_preset_carries_its_augmentation_into_the_recipe():
    assert demo_recipe(DEMO_PRESETS['default']).augment is False  # a few epochs: crop and flip cost points
    assert demo_recipe(DEMO_PRESETS['full']).augment is True
    assert get_recipe('imagenet').augment is True and get_recipe('small').augment is False


def test_training_set_without_augmentation_serves_the_evaluation_view():
    import torch

    from oqatnets.data import ImageData, TensorImageDataset
    from oqatnets.training.datasets import PreparedData, Split

    images, labels = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8), torch.arange(8) % 2
    train = TensorImageDataset(images, labels, mean=0.5, std=0.5, train=True)
    data = ImageData(name='t', train=train, val=train, num_classes=2, resolution=32, mean=(0.5,), std=(0.5,))
    prepared = PreparedData(data=data, split=Split(train=list(range(6)), holdout=[6, 7]),
                            train_set=torch.utils.data.Subset(train, range(6)), holdout_set=[], calib=[],
                            in_memory=True, num_workers=0)
    plain = prepared.training_set(augment=False)
    torch.manual_seed(0)
    first = [plain[i][0] for i in range(6)]
    torch.manual_seed(1)
    assert all(torch.equal(a, plain[i][0]) for i, a in enumerate(first))  # deterministic: no crop, no flip
    assert [plain[i][1] for i in range(6)] == [int(labels[i]) for i in range(6)]
    assert prepared.training_set(augment=True) is prepared.train_set
    assert train.train  # the augmented source is left as it was


def test_calibration_draws_are_seeded_and_draw_zero_is_the_pipelines_own():
    import torch

    from oqatnets.data import CALIBRATION_SEED
    from oqatnets.training.datasets import calibration_batches

    images = torch.arange(40, dtype=torch.float32).reshape(40, 1, 1, 1)
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(40, dtype=torch.long))

    def drawn(**kwargs) -> list[int]:
        batches = calibration_batches(dataset, num_images=10, batch_size=4, in_memory=True, **kwargs)
        return sorted(int(v) for x, _ in batches for v in x.flatten())

    assert drawn() == drawn(seed=CALIBRATION_SEED) == drawn(seed=CALIBRATION_SEED)
    assert drawn(seed=CALIBRATION_SEED + 1) != drawn() and len(drawn(seed=CALIBRATION_SEED + 1)) == 10
