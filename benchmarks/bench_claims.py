"""The paper's claims, side by side on the same data (Fashion-MNIST) and the same training budget.

1. OQAT vs a hand-designed net at 2 bits: the best 2-bit subnet searched under the BitOPs of a
   MobileNetV3-Large-like spec of our space, vs that spec quantized with the same LSQ at 2 bits
   and trained from scratch for the same total epochs as the whole 4→3→2 OQAT pipeline.
2. Bit inheritance vs 2-bit from scratch (a 2-bit supernet jointly trained for the same total
   epochs): test top-1 of the smallest, a middle and the largest subnet.
3. Shared step sizes: those three subnets taken straight from the inherited 2-bit supernet vs the
   same subnets trained alone (own weights, own step sizes) for the same total epochs.

Every subnet is evaluated on the test split after BN recalibration on the same fixed training
images. The OQAT supernets come from the demo pipeline (reused from ``--demo-dir`` when that run
used the same preset, trained here otherwise).

    python benchmarks/bench_claims.py [--quick] [--demo-dir runs/demo] [--out runs/bench/claims]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from oqatnets import OQATNet, OQATSupernet, SubnetSpec, profile
from oqatnets.evaluation import evaluate, recalibrate_bn
from oqatnets.training.artifacts import load_supernet
from oqatnets.training.calibrate import evaluate_subnet
from oqatnets.training.demo import DEMO_PRESETS, DemoPreset, demo_recipe, prepare_demo_data, run_demo
from oqatnets.training.distributed import init_distributed
from oqatnets.training.finetune import finetune
from oqatnets.training.joint import train_supernet
from oqatnets.training.search import search_supernet

# MobileNetV3-Large's stages mapped onto the space's choices (its 2.5/2.3 expansions → 3).
MBV3_LARGE_LIKE = SubnetSpec(
    32,
    ks=[3, 3, 3, 3, 5, 5, 5, 5, 3, 3, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5],
    e=[4, 3, 3, 3, 3, 3, 3, 3, 6, 3, 3, 3, 6, 6, 6, 6, 6, 6, 6, 6],
    d=[2, 3, 4, 2, 3], bits=2)
MIDDLE = SubnetSpec(28, [5] * 20, [4] * 20, [3] * 5, bits=2)


def _log(message: str) -> None:
    print(f'[bench claims {time.strftime("%H:%M:%S")}] {message}', flush=True)


def _supernets(preset: DemoPreset, demo_dir: Path | None, out: Path) -> dict[int, OQATSupernet]:
    """The demo pipeline's 4/3/2-bit supernets: reused when ``demo_dir`` ran this preset."""
    report_path = demo_dir / 'report.json' if demo_dir else None
    if report_path is not None and report_path.is_file():
        report = json.loads(report_path.read_text())
        if report['preset'] == json.loads(json.dumps(asdict(preset))):
            _log(f'reusing the supernets of {demo_dir}')
            return {int(b): load_supernet(p) for b, p in report['artifacts']['supernets'].items()}
        _log(f'{demo_dir} ran another preset; training the pipeline here')
    dirs = run_demo(out / 'pipeline', preset=preset, stop_after_training=True)['supernets']
    return {int(b): load_supernet(p) for b, p in dirs.items()}


def _train_static(spec: SubnetSpec, *, name: str, prepared, recipe, epochs: int, out: Path, ctx,
                  test_batches) -> float:
    """A 2-bit static net of ``spec`` trained alone from scratch; test top-1 after BN recalibration."""
    net = OQATNet(spec, space='small', num_classes=prepared.data.num_classes)
    finetune(model=net, train_set=prepared.train_set, recipe=recipe, epochs=epochs, resolution=spec.resolution,
             out_dir=out / name, ctx=ctx, lr=recipe.lr, seed=1)
    recalibrate_bn(net, prepared.calib, resolution=spec.resolution)
    return evaluate(net, test_batches(), resolution=spec.resolution)['top1']


def run(*, quick: bool, demo_dir: Path | None, out: Path) -> dict:
    preset = DEMO_PRESETS['tiny' if quick else 'default']
    out.mkdir(parents=True, exist_ok=True)
    ctx = init_distributed(device='cpu')
    recipe = demo_recipe(preset)
    demo_data = prepare_demo_data(preset, recipe)
    prepared, test_set = demo_data.prepared, demo_data.test_set
    test_batches, search_batches = demo_data.test_batches, demo_data.search_batches
    total_epochs = sum(preset.epochs)
    start = time.perf_counter()
    supernets = _supernets(preset, demo_dir, out)
    inherited = supernets[2]

    def from_supernet(supernet: OQATSupernet, spec: SubnetSpec) -> float:
        return evaluate_subnet(supernet, spec, calib_batches=prepared.calib, eval_batches=test_batches())['top1']

    # 1. searched 2-bit subnet vs the MobileNetV3-Large-like spec, at equal or lower BitOPs
    budget = profile(MBV3_LARGE_LIKE, space='small', num_classes=10).bitops
    _log(f'claim 1: searching the 2-bit supernet under {budget:.4f} GBitOPs (MobileNetV3-Large-like spec)')
    found = search_supernet(inherited, budgets=[budget], metric='bitops', recipe=recipe,
                            calib_batches=prepared.calib, eval_batches=search_batches, seed=0)['chosen'][0]
    searched = SubnetSpec.parse(found['spec'])
    claim1 = {
        'searched_spec': str(searched), 'searched_bitops_g': profile(searched, space='small', num_classes=10).bitops,
        'searched_top1': from_supernet(inherited, searched),
        'mbv3_spec': str(MBV3_LARGE_LIKE), 'mbv3_bitops_g': budget,
        'mbv3_scratch_top1': _train_static(MBV3_LARGE_LIKE, name='mbv3_scratch', prepared=prepared, recipe=recipe,
                                           epochs=total_epochs, out=out, ctx=ctx, test_batches=test_batches),
    }
    _log(f'claim 1: {claim1}')

    # 2. bit inheritance vs a 2-bit supernet trained from scratch for the same total epochs
    _log(f'claim 2: training a 2-bit supernet from scratch for {total_epochs} epochs')
    scratch = OQATSupernet(space='small', bits=2, num_classes=prepared.data.num_classes)
    train_supernet(supernet=scratch, train_set=prepared.train_set, recipe=recipe, bits=2, epochs=total_epochs,
                   out_dir=out / 'supernet_w2a2_scratch', ctx=ctx, seed=2)
    subnets = {'smallest': inherited.space.smallest(2), 'middle': MIDDLE, 'largest': inherited.space.largest(2)}
    claim2 = {name: {'spec': str(spec), 'bitops_g': profile(spec, space='small', num_classes=10).bitops,
                     'inherited_top1': from_supernet(inherited, spec), 'scratch_top1': from_supernet(scratch, spec)}
              for name, spec in subnets.items()}
    _log(f'claim 2: {claim2}')

    # 3. shared step sizes: subnets from the supernet vs the same subnets trained alone
    claim3 = {}
    for name, spec in subnets.items():
        alone = _train_static(spec, name=f'alone_{name}', prepared=prepared, recipe=recipe, epochs=total_epochs,
                              out=out, ctx=ctx, test_batches=test_batches)
        claim3[name] = {'spec': str(spec), 'from_supernet_top1': claim2[name]['inherited_top1'], 'alone_top1': alone}
    _log(f'claim 3: {claim3}')
    result = {'preset': preset.name, 'data': prepared.data.name, 'train_images': len(prepared.train_set),
              'test_images': len(test_set), 'total_epochs': total_epochs, 'oqat_epochs': list(preset.epochs),
              'claim1_oqat_vs_mbv3': claim1, 'claim2_inheritance_vs_scratch': claim2,
              'claim3_shared_steps_vs_alone': claim3, 'seconds': round(time.perf_counter() - start, 1)}
    (out / 'claims.json').write_text(json.dumps(result, indent=1) + '\n')
    return result


def markdown(r: dict) -> str:
    c1 = r['claim1_oqat_vs_mbv3']
    lines = [f"Fashion-MNIST, {r['train_images']} training images, {r['test_images']} test images; "
             f"OQAT epochs 4/3/2-bit = {r['oqat_epochs']}, baselines {r['total_epochs']} epochs.", '',
             '| claim | model | BitOPs (G) | top-1 (%) |', '|---|---|---|---|',
             f"| 1 | OQAT searched 2-bit | {c1['searched_bitops_g']:.4f} | {c1['searched_top1']:.2f} |",
             f"| 1 | MobileNetV3-L-like 2-bit from scratch | {c1['mbv3_bitops_g']:.4f} | {c1['mbv3_scratch_top1']:.2f} |"]
    for name, c in r['claim2_inheritance_vs_scratch'].items():
        lines.append(f"| 2 | {name}: inherited 4→3→2 / 2-bit supernet from scratch | {c['bitops_g']:.4f} | "
                     f"{c['inherited_top1']:.2f} / {c['scratch_top1']:.2f} |")
    for name, c in r['claim3_shared_steps_vs_alone'].items():
        bitops = r['claim2_inheritance_vs_scratch'][name]['bitops_g']
        lines.append(f"| 3 | {name}: from the supernet (shared steps) / trained alone | {bitops:.4f} | "
                     f"{c['from_supernet_top1']:.2f} / {c['alone_top1']:.2f} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='the tiny preset: a smoke run of the same code')
    parser.add_argument('--demo-dir', type=Path, default=Path('runs/demo'),
                        help='a finished `oqat demo` run whose supernets to reuse (same preset only)')
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path('runs/bench') / ('claims-quick' if args.quick else 'claims')
    result = run(quick=args.quick, demo_dir=args.demo_dir, out=out)
    print(markdown(result))
    return result


if __name__ == '__main__':
    main()
