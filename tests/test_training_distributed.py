"""Two gloo processes under torchrun end with identical parameters (identical subnets, averaged grads)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_helpers import run_script

TESTS_DIR = str(Path(__file__).parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical(tmp_path):
    script = tmp_path / 'run.py'
    script.write_text(run_script(TESTS_DIR, epochs=1, float_epochs=1, batch_size=16, checkpoint_every=0))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(_free_port()), str(script), str(tmp_path / 'out'), '0', str(tmp_path / 'state')]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-2000:]
    rank0 = torch.load(tmp_path / 'state.rank0', weights_only=True)
    rank1 = torch.load(tmp_path / 'state.rank1', weights_only=True)
    assert rank0.keys() == rank1.keys()
    for name in rank0:  # parameters, LSQ steps (init all-reduced) and BN buffers (broadcast)
        assert torch.equal(rank0[name], rank1[name]), name
    assert bool(rank0['final_conv.step_initialized']) and float(rank0['final_conv.weight_step']) > 0
    # only rank 0 wrote the run's files
    out = tmp_path / 'out'
    assert (out / 'checkpoint.pt').is_file() and len((out / 'metrics.jsonl').read_text().splitlines()) == 2


def test_rank0_only_work_joins_no_process_group(monkeypatch):
    import torch.distributed as dist

    from oqatnets.training.distributed import init_distributed
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '1')
    ctx = init_distributed(device='cpu', join_group=False)
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (1, 2, False)
    assert not dist.is_initialized()
    ctx.barrier()  # no group, nothing to wait for: returns at once instead of blocking rank 1


@pytest.mark.parametrize('device', ['bogus', 'mps', 'meta'])
def test_a_device_training_cannot_use_is_refused(device):
    from oqatnets.errors import InvalidArgumentError
    from oqatnets.training.distributed import init_distributed
    with pytest.raises(InvalidArgumentError, match=f'--device {device!r} is not a device|{device}: training runs'):
        init_distributed(device=device, join_group=False)
