"""Why the quantized nets lag float: the small space's largest subnet trained alone, one change per run.

One static network, no supernet, so each run takes ~2 minutes on 2 cores and isolates one factor:
bit-width, augmentation, training images, optimizer, batch, LR, label smoothing, a float epoch
first, and the space: ``small`` (the authors' quantizer, unsigned everywhere) or ``small_signed``
(the convs whose input can be negative, i.e. each block's expand conv, the first block's depthwise
conv and the final 1×1 conv, quantize on a signed grid; ``small_signed_28``, the demo's, at 20-28 px), and with
``--signed-input-grid`` that signed grid's 2-bit code range (an experiment patched in here: the package has LSQ's ``[-2, 1]``).
The recipes' optimizer and schedule (``build_optimizer``: SGD nesterov 0.9, wd 4e-5 on conv/linear
weights only; ``build_scheduler``: linear warm-up then cosine per phase); test top-1 on all 10 000
Fashion-MNIST test images after BN recalibration on 500 training images.
Prints one JSON line per run (append it to a file to build the table in docs/TRAINING.md):

    OMP_NUM_THREADS=2 python benchmarks/bench_quant_gap.py --bits 4 --no-augment >> runs/bench/gap.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F

from oqatnets import quant
from oqatnets.evaluation import evaluate, recalibrate_bn
from oqatnets.net import OQATNet
from oqatnets.spec import get_space
from oqatnets.training.datasets import batches_from, epoch_order, prepare_data
from oqatnets.training.optim import build_optimizer, build_scheduler

SIGNED_GRIDS = {'lsq': quant.quant_range(2, signed=True), 'symmetric': (-1, 1), 'shifted': (-1, 2)}


class _SignedGrid(NamedTuple):
    """Stands for ``signed_input=True`` on a conv, with the 2-bit code range it quantizes to."""

    qn: int
    qp: int


def _use_signed_input_grid(net: torch.nn.Module, qn: int, qp: int) -> None:
    """Quantize ``net``'s signed inputs at 2 bits to ``[qn, qp]``: their convs get a :class:`_SignedGrid` for
    ``signed_input`` (weights keep ``signed=True``), and ``quant_range`` answers it."""
    lsq_range = quant.quant_range

    def quant_range(bits: int, *, signed: bool | _SignedGrid) -> tuple[int, int]:
        if isinstance(signed, _SignedGrid) and bits == 2:
            return signed.qn, signed.qp
        return lsq_range(bits, signed=bool(signed))

    quant.quant_range = quant_range
    for _, conv in quant.iter_quant_convs(net):
        if conv.signed_input:
            conv.signed_input = _SignedGrid(qn, qp)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--bits', type=int, default=4)
    p.add_argument('--space', choices=['small', 'small_signed', 'small_signed_28'], default='small')
    p.add_argument('--epochs', type=int, default=1, help='epochs at --bits')
    p.add_argument('--float-epochs', type=int, default=0, help='float epochs first')
    p.add_argument('--images', type=int, default=24000, help='training images (the demo uses 24 000)')
    p.add_argument('--augment', action=argparse.BooleanOptionalAction, default=True)
    p.add_argument('--optimizer', choices=['sgd', 'adamw'], default='sgd')
    p.add_argument('--lr', type=float, default=0.1)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--label-smoothing', type=float, default=0.1)
    p.add_argument('--warmup', type=float, default=0.2, help='warm-up epochs per phase')
    p.add_argument('--signed-input-grid', choices=sorted(SIGNED_GRIDS), default='lsq',
                   help="2-bit code range of the signed inputs (small_signed): LSQ's [-2, 1], symmetric [-1, 1] "
                        "or shifted [-1, 2]")
    p.add_argument('--seed', type=int, default=0, help='initial weights and data order')
    args = p.parse_args()
    torch.manual_seed(args.seed)
    net = OQATNet(get_space(args.space).largest(args.bits), space=args.space, num_classes=10, in_chans=3)
    if args.signed_input_grid != 'lsq':
        if not get_space(args.space).signed_inputs:
            p.error('--signed-input-grid needs a space with signed inputs (small_signed, small_signed_28)')
        _use_signed_input_grid(net, *SIGNED_GRIDS[args.signed_input_grid])
    if args.float_epochs:
        quant.set_bits(net, quant.FLOAT_BITS)
    net = net.to(memory_format=torch.channels_last)
    data = prepare_data('fashion-mnist', holdout_images=5000, calib_images=500, calib_batch_size=250,
                        train_images=args.images)
    train_set = data.training_set(augment=args.augment)
    bs = args.batch_size
    spe = len(train_set) // bs
    order = []
    for epoch in range(args.float_epochs):
        order += epoch_order(len(train_set), epoch=100 + epoch, seed=args.seed, rank=0, world_size=1)[:spe * bs]
    for epoch in range(args.epochs):
        order += epoch_order(len(train_set), epoch=epoch, seed=args.seed, rank=0, world_size=1)[:spe * bs]
    float_steps, quant_steps = args.float_epochs * spe, args.epochs * spe
    opt = build_optimizer(net, lr=args.lr, momentum=0.9, nesterov=True, weight_decay=4e-5, opt=args.optimizer)
    warm = max(1, int(args.warmup * spe))
    sched = build_scheduler(opt, phases=[(float_steps, warm), (quant_steps, warm)])
    start = time.time()
    net.train()
    resolution = net.spec.resolution
    for i, (x, y) in enumerate(batches_from(train_set, order, batch_size=bs)):
        if i == float_steps and args.float_epochs:
            quant.set_bits(net, args.bits)
        x = x.to(memory_format=torch.channels_last)
        if x.shape[-1] != resolution:
            x = F.interpolate(x, size=resolution, mode='bilinear', align_corners=False)
        loss = F.cross_entropy(net(x), y, label_smoothing=args.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if i % 50 == 0:
            print(f'step {i}/{float_steps + quant_steps} loss {loss.item():.3f} {time.time() - start:.0f} s',
                  file=sys.stderr, flush=True)
    recalibrate_bn(net, data.calib, resolution=resolution)
    result = evaluate(net, data.val_batches(batch_size=250), resolution=resolution)
    print(json.dumps({**vars(args), 'steps': float_steps + quant_steps, 'top1': round(result['top1'], 2),
                      'minutes': round((time.time() - start) / 60, 2)}), flush=True)


if __name__ == '__main__':
    main()
