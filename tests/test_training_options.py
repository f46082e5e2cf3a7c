"""Training conveniences: gradient clipping, the per-epoch console line, TensorBoard behind its extra, workers."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from oqatnets.cli.training import default_workers
from oqatnets.errors import MissingDependencyError
from oqatnets.training.loop import Amp, _tensorboard_writer, epoch_line


def test_amp_clip_bounds_the_global_gradient_norm():
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    (model(torch.randn(8, 4)) * 100).sum().backward()
    Amp(torch.device('cpu'), enabled=False).clip(optimizer, 0.5)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-4)


def test_epoch_line_is_one_line_with_loss_lr_speed_and_accuracy():
    record = {'epoch': 2, 'step': 40, 'lr': 0.05, 'train_loss': 1.23456, 'train_images_per_s': 812.3,
              'val_top1_largest': 61.25}
    line = epoch_line('finetune', record, epochs=5)
    assert line == 'finetune epoch 2/5 | step 40 | loss 1.2346 | lr 0.05000 | 812 img/s | val_top1_largest 61.25'


def test_tensorboard_needs_its_extra(tmp_path):
    if importlib.util.find_spec('tensorboard') is None:
        with pytest.raises(MissingDependencyError, match=r"pip install 'oqatnets\[tensorboard\]'"):
            _tensorboard_writer(tmp_path)
    else:
        writer = _tensorboard_writer(tmp_path)
        writer.add_scalar('loss', 1.0, 0)
        writer.close()
        assert any((tmp_path / 'tensorboard').iterdir())


def test_default_workers_leave_a_cpu_for_the_loop():
    assert 0 <= default_workers() <= 8


def test_finetune_with_adamw_clipping_and_ema_ends_with_the_ema_weights(tmp_path):
    import random

    from training_helpers import TINY_SPACE, synthetic_dataset

    from oqatnets import OQATNet
    from oqatnets.training.distributed import init_distributed
    from oqatnets.training.finetune import finetune
    from oqatnets.training.optim import build_optimizer
    from oqatnets.training.recipes import get_recipe
    from oqatnets.weights import read_weights

    assert type(build_optimizer(torch.nn.Linear(2, 2), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
                                opt='adamw')).__name__ == 'AdamW'
    torch.manual_seed(0)
    model = OQATNet(TINY_SPACE.sample(2, random.Random(0)).replace(resolution=24), space=TINY_SPACE, num_classes=4)
    recipe = get_recipe('small').override(batch_size=16)
    finetune(model=model, train_set=synthetic_dataset(64), recipe=recipe, epochs=1, resolution=24, out_dir=tmp_path,
             ctx=init_distributed(device='cpu'), lr=0.01, amp=False,
             loop_options={'ema_decay': 0.5, 'optimizer': 'adamw', 'clip_grad': 1.0})
    ema = read_weights(tmp_path / 'ema.safetensors')
    assert all(torch.equal(ema.state[k], v.cpu()) for k, v in model.state_dict().items())
    assert ema.record == model.model_args()  # the EMA file says what it holds, like every weights file


def test_resuming_the_ema_refuses_the_weights_of_another_model(tmp_path):
    import random

    from training_helpers import TINY_SPACE

    from oqatnets import OQATNet
    from oqatnets.errors import IncompatibleWeightsError
    from oqatnets.training.loop import _ema
    from oqatnets.weights import save_weights

    spec = TINY_SPACE.sample(2, random.Random(0)).replace(resolution=24)
    model = OQATNet(spec, space=TINY_SPACE, num_classes=4)
    save_weights(OQATNet(spec.replace(bits=4), space=TINY_SPACE, num_classes=4), tmp_path / 'ema.safetensors')
    with pytest.raises(IncompatibleWeightsError, match=r'ema\.safetensors'):
        _ema(model, 0.5, tmp_path / 'ema.safetensors')
    save_weights(model, tmp_path / 'ema.safetensors')
    assert _ema(model, 0.5, tmp_path / 'ema.safetensors') is not None


@pytest.mark.parametrize('command', [['train', 'supernet', '--space', 'small'], ['finetune', 'oqat_2bit_m']])
def test_an_optimizer_timm_does_not_know_is_refused_before_anything_runs(command, tmp_path):
    from click.testing import CliRunner

    from oqatnets.cli.main import cli
    result = CliRunner().invoke(cli, [*command, '--data', str(tmp_path / 'nowhere'), '--out', str(tmp_path / 'o'),
                                      '--opt', 'nosuchopt'])
    assert result.exit_code == 2 and "'nosuchopt' is not an optimizer timm knows" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / 'o').exists()
    assert CliRunner().invoke(cli, [*command, '--opt', 'lookahead_adamw', '--help']).exit_code == 0


def test_a_training_set_smaller_than_a_batch_is_refused_before_anything_is_written(tmp_path):
    from click.testing import CliRunner
    from zoo_helpers import image_folder

    from oqatnets.cli.main import cli
    data = str(image_folder(tmp_path / 'data', size=32))
    result = CliRunner().invoke(cli, ['train', 'supernet', '--space', 'small', '--data', data, '--holdout', '1',
                                      '--out', str(tmp_path / 'o'), '--device', 'cpu'])
    assert result.exit_code == 2 and 'give no full batch of 128' in result.output
    assert not (tmp_path / 'o').exists()
