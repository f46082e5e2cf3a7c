"""How much a subnet's test top-1 depends on the images its BN statistics are recalibrated on.

Every subnet of a supernet is evaluated, searched and published after BN recalibration on a fixed
set of training images (the demo: 500). This benchmark takes a finished demo run's supernets, its
searched entries (S/M/L by budget) and the largest and smallest subnets, recalibrates each on N
training images for several independent seeded draws (draw 0 is the pipeline's own set) and tests
it on the whole test split: the spread over draws is the calibration noise in every reported
top-1, and the mean over sizes says whether more calibration images help. Each draw is calibrated
in every ``--modes`` of ``recalibrate_bn``: ``batch`` (the authors': per-batch statistics) and
``population`` (all images in one forward: what the deployed net sees). ``--numerics`` also
recalibrates on the pipeline's own images with the forward in NCHW or channels-last on 1 or 2
threads: the same images and weights, only float summation order differs.

    python benchmarks/bench_calibration.py [--demo-dir runs/demo] [--bits 4,2] [--sizes 500,2000,all]
        [--draws 3] [--modes batch,population] [--out runs/bench/calibration.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from oqatnets import SubnetSpec
from oqatnets.data import CALIBRATION_SEED
from oqatnets.errors import InvalidArgumentError
from oqatnets.evaluation import CALIBRATION_MODES, CalibrationMode, evaluate
from oqatnets.training.artifacts import load_supernet
from oqatnets.training.calibrate import calibrated_subnet, evaluate_subnet
from oqatnets.training.datasets import calibration_batches, eval_view
from oqatnets.training.demo import SIZES, demo_recipe, load_finished_run, prepare_demo_data, report_supernet_dirs
from oqatnets.training.metrics import write_json

# the calibration forward's float summation order: memory layout (training runs channels-last) and threads
NUMERICS = (('NCHW', torch.contiguous_format, 1), ('NCHW', torch.contiguous_format, 2),
            ('channels-last', torch.channels_last, 1), ('channels-last', torch.channels_last, 2))


def _subnets(report: dict[str, Any], supernet, bits: int) -> dict[str, SubnetSpec]:
    """The run's entries at ``bits`` (by budget) and the space's largest and smallest subnets."""
    result = next(r for r in report['search']['results'] if r['bits'] == bits)
    chosen = sorted(result['chosen'], key=lambda p: p['budget'])
    subnets = {f'entry {size.upper()}': SubnetSpec.parse(p['spec']) for size, p in zip(SIZES, chosen)}
    subnets.update(largest=supernet.space.largest(bits), smallest=supernet.space.smallest(bits))
    return subnets


def _numerics_top1(supernet, spec: SubnetSpec, *, calib, test, layout: torch.memory_format, threads: int,
                   mode: CalibrationMode) -> float:
    """Test top-1 after recalibrating on ``calib`` with the forward in ``layout`` on ``threads`` threads;
    the test pass is the same every time (NCHW, the process's threads), so only the calibration differs."""
    default = torch.get_num_threads()
    supernet.to(memory_format=layout)
    torch.set_num_threads(threads)
    try:
        net = calibrated_subnet(supernet, spec, calib_batches=calib, mode=mode)
    finally:
        torch.set_num_threads(default)
        supernet.to(memory_format=torch.contiguous_format)
    net = net.to(memory_format=torch.contiguous_format)
    return round(evaluate(net, test, resolution=spec.resolution)['top1'], 2)


def run(demo_dir: Path, *, bits_list: list[int], sizes: list[int | None], draws: int,
        modes: tuple[str, ...] = CALIBRATION_MODES, numerics: bool = True) -> dict[str, Any]:
    report, preset = load_finished_run(demo_dir)
    recipe = demo_recipe(preset)
    demo_data = prepare_demo_data(preset, recipe)
    prepared = demo_data.prepared
    test = list(demo_data.test_batches())
    train_view = eval_view(prepared.train_set, resolution=prepared.data.resolution)  # the calibration images' pool
    rows, numeric_rows, start = [], [], time.perf_counter()
    supernet_dirs = report_supernet_dirs(demo_dir, report)
    for bits in bits_list:
        supernet = load_supernet(str(supernet_dirs[bits]))
        for name, spec in _subnets(report, supernet, bits).items():
            for size, mode in itertools.product(sizes, modes):
                n = len(train_view) if size is None else size
                top1 = []
                for draw in range(1 if n >= len(train_view) else draws):
                    calib = calibration_batches(train_view, num_images=n, batch_size=recipe.calib_batch_size,
                                                in_memory=prepared.in_memory, seed=CALIBRATION_SEED + draw)
                    top1.append(round(evaluate_subnet(supernet, spec, calib_batches=calib, eval_batches=test,
                                                      mode=mode)['top1'], 2))
                row = {'bits': bits, 'subnet': name, 'spec': str(spec), 'calib_images': n, 'mode': mode,
                       'top1_per_draw': top1, 'mean': round(statistics.mean(top1), 2),
                       'std': round(statistics.stdev(top1), 2) if len(top1) > 1 else 0.0}
                print(json.dumps(row), flush=True)
                rows.append(row)
            for mode in modes if numerics else ():
                row = {'bits': bits, 'subnet': name, 'spec': str(spec), 'calib_images': recipe.calib_images, 'mode': mode,
                       'top1': {f'{label}, {threads} thread{"s" if threads > 1 else ""}': _numerics_top1(
                           supernet, spec, calib=prepared.calib, test=test, layout=layout, threads=threads, mode=mode)
                           for label, layout, threads in NUMERICS}}
                print(json.dumps(row), flush=True)
                numeric_rows.append(row)
    return {'demo_dir': str(demo_dir), 'preset': asdict(preset), 'seed': report.get('seed'),
            'test_images': sum(len(y) for _, y in test), 'draws': draws, 'rows': rows, 'numerics': numeric_rows,
            'seconds': round(time.perf_counter() - start, 1)}


def markdown(result: dict[str, Any]) -> str:
    lines = ['| bits | subnet | calibration images | mode | top-1 per draw | mean ± std |', '|---|---|---|---|---|---|']
    for r in result['rows']:
        draws = ' / '.join(f'{t:.2f}' for t in r['top1_per_draw'])
        lines.append(f"| {r['bits']} | {r['subnet']} | {r['calib_images']} | {r['mode']} | {draws} | "
                     f"{r['mean']:.2f} ± {r['std']:.2f} |")
    if result['numerics']:
        labels = list(result['numerics'][0]['top1'])
        lines += ['', '| bits | subnet | mode | ' + ' | '.join(labels) + ' | spread |',
                  '|---|---|---|' + '---|' * (len(labels) + 1)]
        for r in result['numerics']:
            values = list(r['top1'].values())
            lines.append(f"| {r['bits']} | {r['subnet']} | {r['mode']} | " + ' | '.join(f'{v:.2f}' for v in values)
                         + f' | {max(values) - min(values):.2f} |')
    return '\n'.join(lines)


def _sizes(text: str) -> list[int | None]:
    try:
        return [None if x.strip() == 'all' else int(x) for x in text.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: give image counts or "all", comma-separated') from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo-dir', type=Path, default=Path('runs/demo'), help='a finished `oqat demo` run')
    parser.add_argument('--bits', default='4,2', help='comma-separated bit-widths among the run\'s 4, 3, 2')
    parser.add_argument('--sizes', type=_sizes, default='500,2000,all',
                        help='calibration image counts, comma-separated; "all" is the whole training part')
    parser.add_argument('--draws', type=int, default=3, help='seeded draws per size (draw 0: the pipeline\'s own)')
    parser.add_argument('--modes', default=','.join(CALIBRATION_MODES),
                        help='recalibrate_bn modes, comma-separated (population keeps every image in memory at once)')
    parser.add_argument('--numerics', action=argparse.BooleanOptionalAction, default=True,
                        help='also recalibrate on the pipeline\'s own images in NCHW and channels-last, 1 and 2 threads')
    parser.add_argument('--out', type=Path, default=Path('runs/bench/calibration.json'))
    args = parser.parse_args(argv)
    try:
        load_finished_run(args.demo_dir)  # a missing or foreign run is refused in one line, before any work
    except InvalidArgumentError as exc:
        parser.error(f'--demo-dir: {exc}')
    modes = tuple(m.strip() for m in args.modes.split(',') if m.strip())
    if not modes or not set(modes) <= set(CALIBRATION_MODES):
        parser.error(f'--modes {args.modes!r}: choose among {", ".join(CALIBRATION_MODES)}')
    result = run(args.demo_dir, bits_list=[int(b) for b in args.bits.split(',')], sizes=args.sizes, draws=args.draws,
                 modes=modes, numerics=args.numerics)
    write_json(args.out, result)
    print(markdown(result))
    return result


if __name__ == '__main__':
    main()
