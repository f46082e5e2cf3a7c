"""The recipe ablation: one row per change to the joint-training recipe, measured on Fashion-MNIST.

Each row trains a ``small``-space 4-bit supernet (optionally after a float phase) with the demo's
data pipeline, then — for rows that ask — inherits 3 and 2 bits and trains each for its epochs,
as ``oqat demo`` does. Reported: test top-1 of the largest and smallest subnet after BN
recalibration, and the mean over 4 fixed random subnets (rows since 2026-11-29), at 4 bits and at 2
bits where trained, and the minutes the row took. Rows are appended
to ``rows.jsonl`` as they finish, so an interrupted run resumes where it stopped; ``--rows``
picks rows by name.

    OMP_NUM_THREADS=1 python benchmarks/bench_recipe.py [--train-images 8000] [--rows a,b] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from oqatnets import OQATSupernet, SearchSpace, SubnetSpec
from oqatnets.spec import get_space
from oqatnets.training.calibrate import evaluate_subnet
from oqatnets.training.demo import DEMO_PRESETS, demo_recipe, prepare_demo_data
from oqatnets.training.distributed import init_distributed
from oqatnets.training.inherit import inherit_bits
from oqatnets.training.joint import train_supernet
from oqatnets.training.loop import resolve_fused_quantizer


@dataclass(frozen=True)
class Row:
    """One ablation row: the recipe changes against the baseline and the epochs per stage."""

    name: str
    change: str
    float_epochs: int = 0
    epochs: tuple[int, ...] = (3,)  # 4-bit, then (optionally) 3-bit and 2-bit after inheritance
    augment: bool = True  # every row before the no-augmentation ablation was measured with crop and flip
    space: str = 'small'  # and with the authors' unsigned quantizer
    overrides: dict[str, Any] = field(default_factory=dict)
    resolutions: tuple[int, ...] | None = None  # the space's resolutions, if not its own


# The baseline is the recipe before this ablation (lr 0.1, 4-bit LSQ from scratch, 1 random subnet).
ROWS: list[Row] = [
    Row('baseline', 'recipe before the ablation: 4-bit LSQ from scratch, lr 0.1', epochs=(3,)),
    Row('float1', 'float phase: 1 float epoch, then 2 at 4 bits', float_epochs=1, epochs=(2,)),
    Row('float2', 'float phase: 2 float epochs, then 1 at 4 bits', float_epochs=2, epochs=(1,)),
    Row('float1_qlr03', 'float1 + quantized phase peaks at 0.3 × lr', float_epochs=1, epochs=(2,),
        overrides={'quant_lr_factor': 0.3}),
    Row('float1_pipe', 'float1, then 4→3→2 bits, 1 epoch each after inheritance', float_epochs=1, epochs=(2, 1, 1)),
    Row('baseline_pipe', 'baseline, then 4→3→2 bits, 1 epoch each after inheritance', epochs=(3, 1, 1)),
    Row('float1_lr02', 'float1 + lr 0.2 (both phases)', float_epochs=1, epochs=(2,), overrides={'lr': 0.2}),
    Row('float1_rand0', 'float1 + no random subnet (largest + smallest only)', float_epochs=1, epochs=(2,),
        overrides={'num_random_subnets': 0}),
    Row('float1_kdT2', 'float1 + KD temperature 2', float_epochs=1, epochs=(2,), overrides={'kd_temperature': 2.0}),
    # the demo's shape at 4 epochs in all: before (all quantized) and after (a float epoch first)
    Row('demo_quant_only', 'demo shape, no float phase: 2 epochs at 4 bits, then 1 at 3 and 1 at 2', epochs=(2, 1, 1)),
    Row('demo_float_first', 'demo shape, float first: 1 float epoch, then 1 each at 4, 3 and 2 bits',
        float_epochs=1, epochs=(1, 1, 1)),
    Row('demo_4bit_stage', "the default demo preset's 4-bit stage: 1 float epoch, then 1 at 4 bits",
        float_epochs=1, epochs=(1,)),
    Row('demo_float_first_noaug', 'demo_float_first without crop and flip', float_epochs=1, epochs=(1, 1, 1),
        augment=False),
    Row('demo_float_first_noaug_signed', 'demo_float_first_noaug in the small_signed space (the demo now)',
        float_epochs=1, epochs=(1, 1, 1), augment=False, space='small_signed'),
]
# the space at the images' own 28 px and below instead of 24-32 (28 px upsampled to 32 for the largest)
ROWS.append(replace(ROWS[-1], name='demo_pipe_r28', resolutions=(20, 24, 28),
                    change='demo_float_first_noaug_signed with the space at 20/24/28 px instead of 24/28/32'))
# twice the steps for the same images: batch 64 at the same peak LR (each stage is ~190 steps at batch 128)
ROWS.append(replace(ROWS[-1], name='demo_pipe_r28_b64', overrides={'batch_size': 64},
                    change='demo_pipe_r28 at batch 64 (same lr 0.1, twice the steps)'))
ROWS.append(replace(ROWS[-1], name='demo_pipe_r28_b32', overrides={'batch_size': 32},
                    change='demo_pipe_r28 at batch 32 (same lr 0.1, four times the steps)'))
# the current demo's 4-bit stage (small_signed, no augmentation), then one knob at a time
DEMO4 = Row('demo4', "the demo's 4-bit stage now: 1 float epoch, then 1 at 4 bits (small_signed, no augmentation)",
            float_epochs=1, epochs=(1,), augment=False, space='small_signed')
ROWS += [DEMO4] + [replace(DEMO4, name=f'demo4_{suffix}', change=f'demo4 + {change}', overrides=overrides)
                   for suffix, change, overrides in (
                       ('rand0', 'no random subnet (largest + smallest only)', {'num_random_subnets': 0}),
                       ('rand2', '2 random subnets per step', {'num_random_subnets': 2}),
                       ('lr02', 'lr 0.2 (both phases)', {'lr': 0.2}),
                       ('kdT2', 'KD temperature 2', {'kd_temperature': 2.0}),
                       ('kd05', 'KD weight 0.5 (the students\' loss halved against the largest\'s)', {'kd_ratio': 0.5}),
                       ('ps', 'the float epoch trains the largest subnet alone (progressive shrinking\'s first stage)',
                        {'float_sampling': 'largest'}),
                       ('res', 'one random resolution per step for every subnet (OFA) instead of max / min / own',
                        {'resolution_sampling': 'per_step'}),
                       ('steplr01', 'the LSQ step sizes at 0.1 × the LR', {'step_lr_factor': 0.1}),
                       ('steplr10', 'the LSQ step sizes at 10 × the LR', {'step_lr_factor': 10.0}))]
# the float phase on the largest alone is cheaper per step: two of its epochs cost about one sandwich epoch
ROWS.append(replace(DEMO4, name='demo4_ps2', float_epochs=2, overrides={'float_sampling': 'largest'},
                    change='demo4 + 2 float epochs of the largest subnet alone, then 1 at 4 bits'))
RANDOM_SUBNETS = 4  # fixed random subnets per bit-width whose mean top-1 is reported beside the extremes


def _random_specs(space: SearchSpace, bits: int) -> list[SubnetSpec]:
    """The same ``RANDOM_SUBNETS`` specs for every row (their own seeded generator): the zoo's
    entries are middle subnets, which the sandwich trains only through its random draws."""
    rng = random.Random(1000 + bits)
    return [space.sample(bits, rng) for _ in range(RANDOM_SUBNETS)]


def _top1(supernet: OQATSupernet, bits: int, calib, test_batches, *, mode: str) -> dict[str, float]:
    space = supernet.space

    def top1(spec: SubnetSpec) -> float:
        return evaluate_subnet(supernet, spec, calib_batches=calib, eval_batches=test_batches(), mode=mode)['top1']

    result = {'largest': round(top1(space.largest(bits)), 2), 'smallest': round(top1(space.smallest(bits)), 2)}
    result['random'] = round(statistics.mean(top1(spec) for spec in _random_specs(space, bits)), 2)
    return result


def run_row(row: Row, *, train_images: int, test_images: int | None, out: Path, seed: int,
            fused_quantizer: bool | None = None, device: str = 'cpu') -> dict[str, Any]:
    """Train one row's supernet(s) on ``device`` (with AMP on CUDA, as training does there); returns its
    record (top-1 per stage, minutes)."""
    preset = DEMO_PRESETS['default']
    preset = type(preset)(**{**preset.__dict__, 'train_images': train_images, 'test_images': test_images,
                             'space': row.space})
    recipe = demo_recipe(preset).override(float_epochs=row.float_epochs, augment=row.augment, **row.overrides)
    data = prepare_demo_data(preset, recipe)
    prepared = data.prepared
    ctx = init_distributed(device=device)
    fused = resolve_fused_quantizer(fused_quantizer, ctx.device)
    start = time.perf_counter()
    record: dict[str, Any] = {'row': row.name, 'seed': seed, 'change': row.change, 'float_epochs': row.float_epochs,
                              'epochs': list(row.epochs), 'overrides': row.overrides,
                              'train_images': len(prepared.train_set), 'test_images': len(data.test_set),
                              'resolutions': list(row.resolutions or get_space(recipe.space).resolutions),
                              'quantizer': 'fused' if fused else 'eager', 'device': str(ctx.device)}
    torch.manual_seed(seed)  # the initial weights (rows before 2026-11-29 drew them unseeded)
    space = get_space(recipe.space)
    if row.resolutions:
        space = replace(space, name=f'{space.name}_r{max(row.resolutions)}', resolutions=row.resolutions)
    supernet = OQATSupernet(space=space, bits=4, num_classes=prepared.data.num_classes)
    for index, (bits, epochs) in enumerate(zip((4, 3, 2), row.epochs)):
        if index:
            supernet = inherit_bits(supernet, bits)
        train_supernet(supernet=supernet, train_set=prepared.training_set(augment=recipe.augment),
                       recipe=recipe, bits=bits, epochs=epochs,
                       float_epochs=row.float_epochs if index == 0 else 0, out_dir=out / row.name / f'w{bits}',
                       ctx=ctx, seed=seed + bits, log_every=10**9, fused_quantizer=fused)
        if bits in (4, 2):
            record[f'top1_{bits}bit'] = _top1(supernet, bits, prepared.calib, data.test_batches,
                                              mode=recipe.bn_calibration)
    record['minutes'] = round((time.perf_counter() - start) / 60, 2)
    return record


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ['| row | change | train images | epochs (float + 4/3/2-bit) | 4-bit largest | 4-bit smallest | '
             f'4-bit random (mean of {RANDOM_SUBNETS}) | 2-bit largest | 2-bit smallest | minutes |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in records:
        t4, t2 = r.get('top1_4bit', {}), r.get('top1_2bit', {})
        lines.append(f"| {r['row']} | {r['change']} | {r['train_images']} | {r['float_epochs']} + {'/'.join(map(str, r['epochs']))} | "
                     f"{t4.get('largest', '–')} | {t4.get('smallest', '–')} | {t4.get('random', '–')} | "
                     f"{t2.get('largest', '–')} | {t2.get('smallest', '–')} | {r['minutes']} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--train-images', type=int, default=8000, help='of the demo split (the demo uses 24000)')
    parser.add_argument('--test-images', type=int, default=None, help='first N test images (default: all 10000)')
    parser.add_argument('--rows', default=None, help='comma-separated row names (default: all)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--eager-quantizer', action='store_true',
                        help="train through the eager LSQ quantizer (default: training's, fused on the CPU)")
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--device', default='cpu', help="cpu (the demo's) or cuda (AMP, as training runs there)")
    parser.add_argument('--out', type=Path, default=Path('runs/bench/recipe'))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = args.rows.split(',') if args.rows else [r.name for r in ROWS]
    unknown = sorted(set(wanted) - {r.name for r in ROWS})
    if unknown:
        parser.error(f'unknown rows {unknown}; known: {", ".join(r.name for r in ROWS)}')
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / 'rows.jsonl'
    done = {json.loads(line)['row']: json.loads(line) for line in log.read_text().splitlines()} if log.exists() else {}
    other_seed = sorted({r['row'] for r in done.values() if r.get('seed', 0) != args.seed})
    if other_seed:
        parser.error(f'{log} holds rows of another seed ({", ".join(other_seed)}); give another --out')
    for row in ROWS:
        if row.name in wanted and row.name not in done:
            print(f'[bench recipe {time.strftime("%H:%M:%S")}] {row.name}: {row.change}', flush=True)
            done[row.name] = run_row(row, train_images=args.train_images, test_images=args.test_images,
                                     out=args.out, seed=args.seed, fused_quantizer=False if args.eager_quantizer else None,
                                     device=args.device)
            with log.open('a') as f:
                f.write(json.dumps(done[row.name]) + '\n')
            print(json.dumps(done[row.name]), flush=True)
    records = [done[r.name] for r in ROWS if r.name in done and r.name in wanted]
    table = markdown(records)
    (args.out / 'table.md').write_text(table + '\n')
    print(table)
    return records


if __name__ == '__main__':
    main()
