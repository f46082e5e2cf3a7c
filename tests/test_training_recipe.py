"""Recipe knobs of the float-then-quantized schedule and the demo preset that uses them."""
from __future__ import annotations

import random

import pytest
import torch
from training_helpers import TINY_SPACE, synthetic_dataset

from oqatnets.cli import training as cli_training
from oqatnets.spec import list_spaces
from oqatnets.supernet import OQATSupernet
from oqatnets.training import init_distributed, joint
from oqatnets.training.demo import DEMO_PRESETS, demo_recipe
from oqatnets.training.optim import PhasedWarmupCosine, build_optimizer, build_scheduler
from oqatnets.training.recipes import FLOAT_SAMPLINGS, RESOLUTION_SAMPLINGS, get_recipe


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


def test_demo_preset_trains_at_its_spaces_recipe_batch_unless_it_names_its_own():
    default = DEMO_PRESETS['default']
    assert default.batch_size is None
    assert demo_recipe(default).batch_size == get_recipe(default.space).batch_size == 32
    assert demo_recipe(DEMO_PRESETS['finetuned']).batch_size == 32  # its supernets are the default run's
    assert demo_recipe(DEMO_PRESETS['tiny']).batch_size == DEMO_PRESETS['tiny'].batch_size == 64
    assert demo_recipe(DEMO_PRESETS['full']).batch_size == 256
    explicit = type(default)(**{**default.__dict__, 'batch_size': 48})
    assert demo_recipe(explicit).batch_size == 48


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


@pytest.mark.parametrize('sampling, float_step_subnets', [('sandwich', 4), ('largest', 1)])
def test_float_sampling_says_what_the_float_phase_trains(tmp_path, monkeypatch, sampling, float_step_subnets):
    trained: list[tuple[int, list]] = []
    real_step = joint.sandwich_step

    def spy(supernet, images, target, *, specs, **kwargs):
        trained.append((supernet.bits, list(specs)))
        return real_step(supernet, images, target, specs=specs, **kwargs)

    monkeypatch.setattr(joint, 'sandwich_step', spy)
    torch.manual_seed(0)
    net = OQATSupernet(space=TINY_SPACE, bits=4, num_classes=4)
    recipe = get_recipe('small').override(batch_size=16, num_random_subnets=2, float_sampling=sampling)
    result = joint.train_supernet(supernet=net, train_set=synthetic_dataset(32), recipe=recipe, bits=4, epochs=1,
                                  float_epochs=1, out_dir=tmp_path, ctx=init_distributed(device='cpu'), log_every=1000)
    assert [len(specs) for bits, specs in trained] == [float_step_subnets] * 2 + [4] * 2
    assert [bits for bits, _ in trained] == [32, 32, 4, 4]
    assert all(specs[0] == TINY_SPACE.largest(bits) for bits, specs in trained)
    assert result.summary['subnets_per_step'] == (float_step_subnets + 4) / 2


def test_recipe_refuses_an_unknown_float_sampling():
    with pytest.raises(ValueError, match='float_sampling'):
        get_recipe('small').override(float_sampling='smallest')


def test_resolution_sampling_per_step_gives_every_subnet_of_a_step_one_resolution():
    rng = random.Random(0)
    per_subnet = [joint.sandwich_specs(TINY_SPACE, 4, rng, num_random=2) for _ in range(20)]
    assert all(s[0].resolution == 24 and s[1].resolution == 16 for s in per_subnet)
    per_step = [joint.sandwich_specs(TINY_SPACE, 4, rng, num_random=2, resolution_sampling='per_step') for _ in range(20)]
    assert all(len({spec.resolution for spec in specs}) == 1 for specs in per_step)
    assert {specs[0].resolution for specs in per_step} == set(TINY_SPACE.resolutions)  # 20 draws of 3 values
    assert all(specs[0].ks == TINY_SPACE.largest(4).ks and specs[1].ks == TINY_SPACE.smallest(4).ks for specs in per_step)
    with pytest.raises(ValueError, match='resolution_sampling'):
        get_recipe('small').override(resolution_sampling='random')


def test_step_lr_factor_gives_the_lsq_steps_their_own_learning_rate():
    net = OQATSupernet(space=TINY_SPACE, bits=4, num_classes=4)
    steps = {id(p) for name, p in net.named_parameters() if name.endswith(('act_step', 'weight_step'))}
    assert steps
    plain = build_optimizer(net, lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
    assert all(g['lr'] == 0.1 for g in plain.param_groups)
    optimizer = build_optimizer(net, lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5, step_lr_factor=0.25)
    *others, own = optimizer.param_groups
    assert {id(p) for p in own['params']} == steps and own['lr'] == pytest.approx(0.025) and own['weight_decay'] == 0
    assert not any(id(p) in steps for g in others for p in g['params']) and all(g['lr'] == 0.1 for g in others)
    assert sum(len(g['params']) for g in optimizer.param_groups) == len(list(net.parameters()))
    scheduler = build_scheduler(optimizer, phases=[(10, 5)])
    optimizer.step()
    scheduler.step()
    assert own['lr'] / others[0]['lr'] == pytest.approx(0.25)  # the schedule scales both alike
    with pytest.raises(ValueError, match='step_lr_factor'):
        get_recipe('small').override(step_lr_factor=0.0)


def test_the_cli_offers_every_sampling_choice_of_the_recipe_and_every_space_with_its_recipe():
    assert cli_training.FLOAT_SAMPLINGS == FLOAT_SAMPLINGS
    assert cli_training.RESOLUTION_SAMPLINGS == RESOLUTION_SAMPLINGS
    assert list(cli_training.SPACE_NAMES) == list_spaces()
    assert all(get_recipe(name).space == name for name in list_spaces())
