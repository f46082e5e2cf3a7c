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

    python benchmarks/bench_ceiling.py [--demo-dir runs/demo] [--bits 4,2] [--seeds 0,1,2]
        [--out runs/bench/ceiling.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from oqatnets import OQATNet, SubnetSpec, profile
from oqatnets.errors import InvalidArgumentError
from oqatnets.evaluation import evaluate, recalibrate_bn
from oqatnets.quant import FLOAT_BITS, set_bits
from oqatnets.training.demo import SIZES, demo_recipe, load_finished_run, prepare_demo_data
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


def run(demo_dir: Path, *, bits_list: list[int], seeds: list[int]) -> dict[str, Any]:
    report, preset = load_finished_run(demo_dir)
    recipe = demo_recipe(preset)
    demo_data = prepare_demo_data(preset, recipe)
    test = list(demo_data.test_batches())
    ctx = init_distributed(device='cpu')
    entries = {e['entry']: e for e in report['entries']}
    rows, start = [], time.perf_counter()
    trained: dict[tuple[str, int], float] = {}
    for bits in bits_list:
        phases = schedule(recipe.float_epochs, preset.epochs, bits)
        for size in SIZES:
            entry = entries[f'oqat_fmnist_{bits}bit_{size}']
            spec = SubnetSpec.parse(entry['spec'])
            alone = []
            for seed in seeds:
                if (str(spec), seed) not in trained:  # two budgets can choose the same subnet
                    with tempfile.TemporaryDirectory() as work:
                        trained[str(spec), seed] = train_alone(spec, phases=phases, prepared=demo_data.prepared,
                                                               recipe=recipe, test=test, ctx=ctx, seed=seed,
                                                               work=Path(work))
                alone.append(trained[str(spec), seed])
                _log(f'{bits}-bit {size.upper()} seed {seed}: alone {alone[-1]:.2f} (entry {entry["top1"]:.2f})')
            row = {'bits': bits, 'entry': entry['entry'], 'spec': str(spec),
                   'bitops_g': round(profile(spec, space=recipe.space, num_classes=10).bitops, 5),
                   'phases': phases, 'entry_top1': entry['top1'], 'alone_top1_per_seed': alone,
                   'alone_mean': round(statistics.mean(alone), 2),
                   'alone_std': round(statistics.stdev(alone), 2) if len(alone) > 1 else 0.0}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {'demo_dir': str(demo_dir), 'preset': preset.name, 'demo_seed': report.get('seed'), 'seeds': seeds,
            'test_images': sum(len(y) for _, y in test), 'rows': rows, 'seconds': round(time.perf_counter() - start, 1)}


def markdown(result: dict[str, Any]) -> str:
    lines = ['| entry | BitOPs (G) | schedule (bits × epochs) | published entry | alone, per seed | alone mean ± std |',
             '|---|---|---|---|---|---|']
    for r in result['rows']:
        phases = ' → '.join(f"{'float' if b == FLOAT_BITS else f'{b}-bit'} × {e}" for b, e in r['phases'])
        per_seed = ' / '.join(f'{t:.2f}' for t in r['alone_top1_per_seed'])
        lines.append(f"| {r['entry']} | {r['bitops_g']:.4f} | {phases} | {r['entry_top1']:.2f} | {per_seed} | "
                     f"{r['alone_mean']:.2f} ± {r['alone_std']:.2f} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo-dir', type=Path, default=Path('runs/demo'), help='a finished `oqat demo` run')
    parser.add_argument('--bits', default='4,2', help='comma-separated bit-widths among the run\'s 4, 3, 2')
    parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds, one training per entry each')
    parser.add_argument('--out', type=Path, default=Path('runs/bench/ceiling.json'))
    args = parser.parse_args(argv)
    bits_list = [int(b) for b in args.bits.split(',') if b.strip()]
    if not bits_list or not set(bits_list) <= set(PIPELINE_BITS):
        parser.error(f'--bits {args.bits!r}: choose among {PIPELINE_BITS}')
    try:
        load_finished_run(args.demo_dir)  # a missing or foreign run is refused in one line, before any work
    except InvalidArgumentError as exc:
        parser.error(f'--demo-dir: {exc}')
    result = run(args.demo_dir, bits_list=bits_list, seeds=[int(s) for s in args.seeds.split(',') if s.strip()])
    write_json(args.out, result)
    print(markdown(result))
    return result


if __name__ == '__main__':
    main()
