"""What a demo's entries reach when each is trained alone with the pipeline's whole schedule.

The ceiling weight sharing is measured against: every searched entry of a finished ``oqat demo``
run (S/M/L by budget, at each ``--bits``) is built as a static network of the same spec and
trained alone on the same training images with the schedule the pipeline gave the supernet up to
that bit-width: the float epochs, the 4-bit epochs, then bit inheritance to 3 and to 2 bits with
their epochs (each phase its own warm-up and cosine, as in joint training; no KD, no weight
sharing). Test top-1 on the test split after BN recalibration on the pipeline's calibration
images, beside the entry's published top-1. A floor that the spec misses even alone is out of
reach for any weight-sharing recipe with this many steps; an entry far under its spec's ceiling
shows what sharing costs it.

``--finetune-epochs N`` measures what closes that gap after the search: each entry, taken from its
supernet with the recipe's BN calibration, trained alone for N more epochs at its bit-width (the
recipe's finetune LR; ``--teacher largest`` adds in-place-style distillation from the supernet's
largest subnet at the same bits; ``--finetune-lr`` another peak LR), recalibrated and tested the same
way. ``--no-alone`` skips the training from scratch.

    python benchmarks/bench_ceiling.py [--demo-dir runs/demo] [--bits 4,2] [--seeds 0,1,2]
        [--finetune-epochs 1] [--finetune-lr LR] [--teacher none|largest] [--no-alone] [--out runs/bench/ceiling.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from oqatnets import OQATNet, SubnetSpec, profile
from oqatnets.errors import InvalidArgumentError
from oqatnets.evaluation import evaluate, recalibrate_bn
from oqatnets.quant import FLOAT_BITS, set_bits
from oqatnets.training.artifacts import load_supernet
from oqatnets.training.calibrate import calibrated_subnet
from oqatnets.training.demo import (
    demo_recipe,
    finetune_entry,
    load_finished_run,
    prepare_demo_data,
    report_supernet_dirs,
)
from oqatnets.training.distributed import init_distributed
from oqatnets.training.finetune import finetune
from oqatnets.training.inherit import inherit_bits
from oqatnets.training.metrics import write_json

PIPELINE_BITS = (4, 3, 2)


def _log(message: str) -> None:
    print(f'[bench ceiling {time.strftime("%H:%M:%S")}] {message}', flush=True)


def schedule(float_epochs: int, epochs: tuple[int, ...], bits: int) -> list[tuple[int, int]]:
    """``(bits, epochs)`` phases the pipeline runs before its ``bits``-bit supernet is searched."""
    phases = [(FLOAT_BITS, float_epochs)] if float_epochs else []
    for stage_bits, stage_epochs in zip(PIPELINE_BITS, epochs):
        phases.append((stage_bits, stage_epochs))
        if stage_bits == bits:
            return phases
    raise ValueError(f'the pipeline has no {bits}-bit stage; choose among {PIPELINE_BITS}')


def train_alone(spec: SubnetSpec, *, phases: list[tuple[int, int]], prepared, recipe, test, ctx, seed: int,
                work: Path) -> float:
    """Test top-1 of ``spec`` trained alone through ``phases`` (float, then inheritance down the bits)."""
    torch.manual_seed(seed)
    net = OQATNet(spec, space=recipe.space, num_classes=prepared.data.num_classes)
    train_set = prepared.training_set(augment=recipe.augment)
    for i, (bits, epochs) in enumerate(phases):
        if bits == FLOAT_BITS or i == 0 or phases[i - 1][0] == FLOAT_BITS:
            set_bits(net, bits)  # from float: step sizes initialise on the first quantized batch
        else:
            net = inherit_bits(net, bits)
        finetune(model=net, train_set=train_set, recipe=recipe, epochs=epochs, resolution=spec.resolution,
                 out_dir=work / f'phase{i}_{bits}bit', ctx=ctx, lr=recipe.lr, seed=seed + i)
    recalibrate_bn(net, prepared.calib, resolution=spec.resolution, mode=recipe.bn_calibration)
    return round(evaluate(net, test, resolution=spec.resolution)['top1'], 2)


def finetuned_top1(supernet, spec: SubnetSpec, *, epochs: int, lr: float, teacher: bool, prepared, recipe, test, ctx,
                   seed: int, work: Path) -> float:
    """Test top-1 of ``spec`` taken from ``supernet`` (calibrated as published), then trained ``epochs`` alone."""
    guide = (calibrated_subnet(supernet, supernet.space.largest(spec.bits), calib_batches=prepared.calib,
                               mode=recipe.bn_calibration) if teacher else None)
    net, _ = finetune_entry(supernet, spec, prepared=prepared, recipe=recipe, epochs=epochs, ctx=ctx, seed=seed,
                            out_dir=work, lr=lr, teacher=guide)
    return round(evaluate(net, test, resolution=spec.resolution)['top1'], 2)


def _summary(values: list[float]) -> dict[str, float]:
    return {'mean': round(statistics.mean(values), 2),
            'std': round(statistics.stdev(values), 2) if len(values) > 1 else 0.0}


def run(demo_dir: Path, *, bits_list: list[int], seeds: list[int], alone: bool = True, finetune_epochs: int = 0,
        finetune_lr: float | None = None, teacher: bool = False) -> dict[str, Any]:
    report, preset = load_finished_run(demo_dir)
    recipe = demo_recipe(preset)
    finetune_lr = recipe.finetune_lr if finetune_lr is None else finetune_lr
    demo_data = prepare_demo_data(preset, recipe)
    test = list(demo_data.test_batches())
    ctx = init_distributed(device='cpu')
    supernet_dirs = report_supernet_dirs(demo_dir, report)
    rows, start = [], time.perf_counter()
    done: dict[tuple[str, str, int], float] = {}  # two budgets can choose the same subnet

    def per_seed(kind: str, spec: SubnetSpec, train: Callable[..., float], **kwargs: Any) -> list[float]:
        for seed in seeds:
            if (kind, str(spec), seed) not in done:
                with tempfile.TemporaryDirectory() as work:
                    done[kind, str(spec), seed] = train(spec, seed=seed, work=Path(work), **kwargs)
        return [done[kind, str(spec), seed] for seed in seeds]

    common = {'prepared': demo_data.prepared, 'recipe': recipe, 'test': test, 'ctx': ctx}
    for bits in bits_list:
        phases = schedule(recipe.float_epochs, preset.epochs, bits)
        supernet = load_supernet(str(supernet_dirs[bits])) if finetune_epochs else None
        for entry in (e for e in report['entries'] if e['bits'] == bits):  # S, M, L as the run wrote them
            spec = SubnetSpec.parse(entry['spec'])
            row: dict[str, Any] = {'bits': bits, 'entry': entry['entry'], 'spec': str(spec),
                                   'bitops_g': round(profile(spec, space=recipe.space, num_classes=10).bitops, 5),
                                   'phases': phases, 'entry_top1': entry['top1']}
            if alone:
                row['alone_top1_per_seed'] = per_seed('alone', spec, train_alone, phases=phases, **common)
                row.update({f'alone_{k}': v for k, v in _summary(row['alone_top1_per_seed']).items()})
            if finetune_epochs:
                row['finetuned_top1_per_seed'] = per_seed('finetuned', spec, partial(finetuned_top1, supernet),
                                                          epochs=finetune_epochs, lr=finetune_lr, teacher=teacher,
                                                          **common)
                row.update({f'finetuned_{k}': v for k, v in _summary(row['finetuned_top1_per_seed']).items()})
            _log(f"{entry['entry']}: {json.dumps(row)}")
            rows.append(row)
    return {'demo_dir': str(demo_dir), 'preset': preset.name, 'demo_seed': report.get('seed'), 'seeds': seeds,
            'finetune': {'epochs': finetune_epochs, 'lr': finetune_lr,
                         'teacher': 'largest' if teacher else None} if finetune_epochs else None,
            'test_images': sum(len(y) for _, y in test), 'rows': rows, 'seconds': round(time.perf_counter() - start, 1)}


def markdown(result: dict[str, Any]) -> str:
    columns = [('alone', 'alone'), ('finetuned', 'entry finetuned')]
    columns = [(key, title) for key, title in columns if result['rows'] and f'{key}_mean' in result['rows'][0]]
    lines = ['| entry | BitOPs (G) | schedule (bits × epochs) | published entry | '
             + ' | '.join(f'{title}, per seed | {title} mean ± std' for _, title in columns) + ' |',
             '|---|---|---|---|' + '---|---|' * len(columns)]
    for r in result['rows']:
        phases = ' → '.join(f"{'float' if b == FLOAT_BITS else f'{b}-bit'} × {e}" for b, e in r['phases'])
        cells = [f"{r['entry']}", f"{r['bitops_g']:.4f}", phases, f"{r['entry_top1']:.2f}"]
        for key, _ in columns:
            cells += [' / '.join(f'{t:.2f}' for t in r[f'{key}_top1_per_seed']),
                      f"{r[f'{key}_mean']:.2f} ± {r[f'{key}_std']:.2f}"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo-dir', type=Path, default=Path('runs/demo'), help='a finished `oqat demo` run')
    parser.add_argument('--bits', default='4,2', help='comma-separated bit-widths among the run\'s 4, 3, 2')
    parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds, one training per entry each')
    parser.add_argument('--alone', action=argparse.BooleanOptionalAction, default=True,
                        help='train each entry\'s spec alone from scratch (the ceiling)')
    parser.add_argument('--finetune-epochs', type=int, default=0,
                        help='also finetune each entry from its supernet weights for this many epochs (0: no)')
    parser.add_argument('--finetune-lr', type=float, default=None,
                        help='peak LR of the finetuning (default: the recipe\'s finetune LR)')
    parser.add_argument('--teacher', choices=('none', 'largest'), default='none',
                        help='distil the finetuning from the supernet\'s largest subnet at the same bits')
    parser.add_argument('--out', type=Path, default=Path('runs/bench/ceiling.json'))
    args = parser.parse_args(argv)
    if args.finetune_epochs < 0:
        parser.error(f'--finetune-epochs {args.finetune_epochs}: must be 0 or more')
    if not args.alone and not args.finetune_epochs:
        parser.error('--no-alone leaves nothing to measure: add --finetune-epochs N')
    if args.teacher != 'none' and not args.finetune_epochs:
        parser.error(f'--teacher {args.teacher} applies to finetuning: add --finetune-epochs N')
    if args.finetune_lr is not None and not (args.finetune_epochs and args.finetune_lr > 0):
        parser.error(f'--finetune-lr {args.finetune_lr}: give a positive LR, with --finetune-epochs N')
    bits_list = [int(b) for b in args.bits.split(',') if b.strip()]
    seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    if not seeds:
        parser.error(f'--seeds {args.seeds!r}: give at least one seed')
    if not bits_list or not set(bits_list) <= set(PIPELINE_BITS):
        parser.error(f'--bits {args.bits!r}: choose among {PIPELINE_BITS}')
    try:
        load_finished_run(args.demo_dir)  # a missing or foreign run is refused in one line, before any work
    except InvalidArgumentError as exc:
        parser.error(f'--demo-dir: {exc}')
    result = run(args.demo_dir, bits_list=bits_list, seeds=seeds,
                 alone=args.alone, finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                 teacher=args.teacher == 'largest')
    write_json(args.out, result)
    print(markdown(result))
    return result


if __name__ == '__main__':
    main()
