"""Time of the search's candidates on a finished demo run: eager against fused quantizer, in one process.

Each candidate is what the evolutionary search scores: a random subnet of the run's supernet, its BN
recalibrated on the demo's calibration images (the recipe's mode), then top-1 on the search's held-out
images. The fused quantizer runs the C kernel's forward without gradients; the same top-1 values are
checked. Rounds are interleaved and the median per configuration is reported.

    python benchmarks/bench_search.py --demo-dir runs/demo [--bits 2] [--candidates 6] [--rounds 3]
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from oqatnets.quant import set_fused_quantizer
from oqatnets.training.artifacts import load_supernet
from oqatnets.training.calibrate import evaluate_subnet
from oqatnets.training.demo import demo_recipe, load_finished_run, prepare_demo_data, report_supernet_dirs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo-dir', type=Path, required=True, help='a finished `oqat demo` run folder')
    parser.add_argument('--bits', type=int, default=2, help='which supernet of the run')
    parser.add_argument('--candidates', type=int, default=6, help='random subnets per round')
    parser.add_argument('--rounds', type=int, default=3, help='interleaved rounds per configuration')
    args = parser.parse_args(argv)
    report, preset = load_finished_run(args.demo_dir)
    recipe = demo_recipe(preset)
    data = prepare_demo_data(preset, recipe)
    supernet = load_supernet(f'local-dir:{report_supernet_dirs(args.demo_dir, report)[args.bits] / "supernet"}').eval()
    rng = random.Random(0)
    specs = [supernet.space.sample(args.bits, rng) for _ in range(args.candidates)]
    seconds: dict[str, list[float]] = {'eager': [], 'fused': []}
    top1: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name in seconds:
            set_fused_quantizer(supernet, name == 'fused')
            start = time.perf_counter()
            top1[name] = [evaluate_subnet(supernet, spec, calib_batches=data.prepared.calib,
                                          eval_batches=data.search_batches, mode=recipe.bn_calibration)['top1']
                          for spec in specs]
            seconds[name].append(time.perf_counter() - start)
    assert top1['eager'] == top1['fused'], 'the fused quantizer changed a candidate\'s top-1'
    eager, fused = statistics.median(seconds['eager']), statistics.median(seconds['fused'])
    print(f'{args.candidates} candidates of the {args.bits}-bit supernet, median of {args.rounds} rounds: '
          f'eager {eager:.2f} s, fused {fused:.2f} s, {eager / fused:.2f}x faster fused (top-1 {top1["fused"]})')
    return {'eager_s': eager, 'fused_s': fused, 'speedup': eager / fused, 'top1': top1['fused']}


if __name__ == '__main__':
    main()
