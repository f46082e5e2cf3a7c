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
