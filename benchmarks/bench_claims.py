"""The paper's claims, side by side on the same data (Fashion-MNIST) and the same training budget.

1. OQAT vs a hand-designed net at 2 bits: the best 2-bit subnet searched under the BitOPs of a
   MobileNetV3-Large-like spec of our space, vs that spec quantized with the same LSQ at 2 bits
   and trained from scratch for the same total epochs as the whole 4→3→2 OQAT pipeline.
2. Bit inheritance vs 2-bit from scratch (a 2-bit supernet jointly trained for the same total
   epochs): test top-1 of the smallest, a middle and the largest subnet.
3. Shared step sizes: those three subnets taken straight from the inherited 2-bit supernet vs the
   same subnets trained alone (own weights, own step sizes) for the same total epochs.

Every subnet is evaluated on the test split after BN recalibration on the same fixed training
images. The OQAT supernets come from the demo pipeline (reused from a ``--demo-dir`` that trained them
as the preset does with that seed, a ``finetuned`` run included; trained here otherwise). Each comparison runs once per seed
(``--seeds``, default 3): the pipeline, the searches and every baseline use that seed; the table
gives mean ± std over seeds. The search's fitness noise is measured on the first seed's 2-bit
supernet (``fitness_noise``: candidates within the claim-1 budget, held-out images cut into
chunks) and says how many held-out images the ranking needs. ``--claims`` picks which comparisons
run (claim 1 alone is the pipeline, one search and one baseline per seed: about a third of the time).

    python benchmarks/bench_claims.py [--quick] [--seeds 0,1,2] [--claims 1,2,3] [--demo-dir runs/demo]
        [--out runs/bench/claims] [--reevaluate]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from oqatnets import OQATNet, OQATSupernet, SubnetSpec, profile
from oqatnets.evaluation import CALIBRATION_MODES, CalibrationMode, evaluate, recalibrate_bn
from oqatnets.spec import SearchSpace
from oqatnets.training.artifacts import load_supernet
from oqatnets.training.calibrate import evaluate_subnet
from oqatnets.training.checkpoint import load_checkpoint
from oqatnets.training.demo import DEMO_PRESETS, DemoPreset, demo_recipe, prepare_demo_data, ran_preset, report_supernet_dirs, run_demo
from oqatnets.training.distributed import init_distributed
from oqatnets.training.evolution import ConstrainedSampler, correct_per_image, fitness_noise
from oqatnets.training.finetune import finetune
from oqatnets.training.joint import train_supernet
from oqatnets.training.metrics import write_json
from oqatnets.training.search import search_supernet

ALL_CLAIMS = frozenset({1, 2, 3})


def mbv3_large_like(space: SearchSpace) -> SubnetSpec:
    """MobileNetV3-Large's stages mapped onto the space's choices (its 2.5/2.3 expansions → 3), at the space's
    largest resolution, as MobileNetV3 runs at the ImageNet space's 224 px (the 20-28 px space's is 28, not 32)."""
    return SubnetSpec(max(space.resolutions),
                      ks=[3, 3, 3, 3, 5, 5, 5, 5, 3, 3, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5],
                      e=[4, 3, 3, 3, 3, 3, 3, 3, 6, 3, 3, 3, 6, 6, 6, 6, 6, 6, 6, 6],
                      d=[2, 3, 4, 2, 3], bits=2)


def middle_subnet(space: SearchSpace) -> SubnetSpec:
    """Every choice in the middle: kernel 5, expansion 4, depth 3, the middle resolution."""
    resolutions = sorted(space.resolutions)
    return SubnetSpec(resolutions[len(resolutions) // 2], [5] * 20, [4] * 20, [3] * 5, bits=2)


def _log(message: str) -> None:
    print(f'[bench claims {time.strftime("%H:%M:%S")}] {message}', flush=True)


def _supernets(preset: DemoPreset, demo_dirs: list[Path], out: Path, *, seed: int,
               train_missing: bool = True) -> dict[int, OQATSupernet]:
    """The demo pipeline's 4/3/2-bit supernets: those of the first of ``demo_dirs`` (or of an earlier
    run's ``out/pipeline``) whose report says it trained them as this preset does with this seed (a
    ``finetuned`` run's serve the ``default`` preset), else trained here."""
    for folder in [*demo_dirs, out / 'pipeline']:
        report_path = folder / 'report.json'
        if not report_path.is_file():
            continue
        report = json.loads(report_path.read_text())
        if ran_preset(report, preset, training_only=True) and report.get('seed', 0) == seed:
            _log(f'seed {seed}: reusing the supernets of {folder}')
            break
        _log(f'{folder} trained its supernets otherwise or with another seed')
    else:
        if not train_missing:
            raise SystemExit(f'no --demo-dir trained the {preset.name} preset\'s supernets with seed {seed}; '
                             'pass the one the claims used')
        folder = out / 'pipeline'
        report = run_demo(folder, preset=preset, seed=seed, stop_after_training=True, overwrite=True)
    return {bits: load_supernet(str(path)) for bits, path in report_supernet_dirs(folder, report).items()}


def _train_static(spec: SubnetSpec, *, name: str, prepared, recipe, epochs: int, out: Path, ctx,
                  test_batches, seed: int) -> float:
    """A 2-bit static net of ``spec`` trained alone from scratch; test top-1 after BN recalibration."""
    torch.manual_seed(seed)  # the net's initial weights (a benchmark script may set global seeds)
    net = OQATNet(spec, space=recipe.space, num_classes=prepared.data.num_classes)
    finetune(model=net, train_set=prepared.training_set(augment=recipe.augment),
             recipe=recipe, epochs=epochs, resolution=spec.resolution,
             out_dir=out / name, ctx=ctx, lr=recipe.lr, seed=seed + 1)
    recalibrate_bn(net, prepared.calib, resolution=spec.resolution, mode=recipe.bn_calibration)
    return evaluate(net, test_batches(), resolution=spec.resolution)['top1']


def _noise(supernet: OQATSupernet, *, budget: float, prepared, candidates: int, seed: int,
           mode: CalibrationMode) -> dict[str, Any]:
    """The search fitness's noise on ``supernet``: random candidates within ``budget``, all held-out images."""
    sampler = ConstrainedSampler(supernet.space, supernet.bits, budget=budget, metric='bitops', num_classes=10)
    rng = random.Random(seed)
    specs = {str(s): s for s in (sampler.sample(rng) for _ in range(candidates))}
    holdout = prepared.holdout_batches(batch_size=250)
    correct = {k: correct_per_image(supernet, s, calib_batches=prepared.calib, eval_batches=holdout, mode=mode)
               for k, s in specs.items()}
    return fitness_noise(correct, sizes=(100, 250, 500, 1000, 2500))


def run_seed(*, preset: DemoPreset, seed: int, demo_dirs: list[Path], out: Path,
             claims: frozenset[int] = ALL_CLAIMS) -> dict[str, Any]:
    """The chosen comparisons for one seed (pipeline, search and baselines all seeded with it)."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = init_distributed(device='cpu')
    recipe = demo_recipe(preset)
    demo_data = prepare_demo_data(preset, recipe)
    prepared = demo_data.prepared
    test_batches = demo_data.test_batches
    total_epochs = sum(preset.epochs) + recipe.float_epochs
    supernets = _supernets(preset, demo_dirs, out, seed=seed)
    inherited = supernets[2]

    def from_supernet(supernet: OQATSupernet, spec: SubnetSpec) -> float:
        return evaluate_subnet(supernet, spec, calib_batches=prepared.calib, eval_batches=test_batches(),
                               mode=recipe.bn_calibration)['top1']

    result: dict[str, Any] = {'seed': seed, 'inherited_supernet': inherited}
    if 1 in claims:
        result['claim1_oqat_vs_mbv3'] = _claim1(inherited, seed=seed, prepared=prepared, recipe=recipe,
                                                ctx=ctx, out=out, epochs=total_epochs, evaluate_on_test=from_supernet,
                                                test_batches=test_batches)
    if claims & {2, 3}:
        subnets = _claim_subnets(inherited)
        from_inherited = {name: from_supernet(inherited, spec) for name, spec in subnets.items()}
    if 2 in claims:
        result['claim2_inheritance_vs_scratch'] = _claim2(subnets, from_inherited, seed=seed, prepared=prepared,
                                                          recipe=recipe, ctx=ctx, out=out, epochs=total_epochs,
                                                          evaluate_on_test=from_supernet)
    if 3 in claims:
        claim3 = {}
        for name, spec in subnets.items():
            alone = _train_static(spec, name=f'alone_{name}', prepared=prepared, recipe=recipe, epochs=total_epochs,
                                  out=out, ctx=ctx, test_batches=test_batches, seed=seed)
            claim3[name] = {'spec': str(spec), 'bitops_g': profile(spec, space=recipe.space, num_classes=10).bitops,
                            'from_supernet_top1': from_inherited[name], 'alone_top1': alone}
        _log(f'seed {seed}, claim 3: {claim3}')
        result['claim3_shared_steps_vs_alone'] = claim3
    return result


def _claim_subnets(supernet: OQATSupernet) -> dict[str, SubnetSpec]:
    """The three subnets claims 2 and 3 compare."""
    space = supernet.space
    return {'smallest': space.smallest(2), 'middle': middle_subnet(space), 'largest': space.largest(2)}


def reevaluate(out: Path, *, demo_dirs: list[Path], seeds: list[int]) -> list[dict[str, Any]]:
    """Claims 2 and 3 again from an earlier run's nets (checkpoints under ``out``), no training: each
    net evaluated after BN recalibration in every mode, so a change of calibration is measured alone."""
    preset = DEMO_PRESETS['default']
    recipe = demo_recipe(preset)
    demo_data = prepare_demo_data(preset, recipe)
    prepared, test = demo_data.prepared, list(demo_data.test_batches())
    rows = []
    for seed in seeds:
        seed_dir = out / f'seed{seed}'
        inherited = _supernets(preset, demo_dirs, seed_dir, seed=seed, train_missing=False)[2]
        scratch = OQATSupernet(space=recipe.space, bits=2, num_classes=prepared.data.num_classes)
        scratch.load_state_dict(load_checkpoint(seed_dir / 'supernet_w2a2_scratch' / 'checkpoint.pt').model)
        for name, spec in _claim_subnets(inherited).items():
            alone = OQATNet(spec, space=recipe.space, num_classes=prepared.data.num_classes)
            alone.load_state_dict(load_checkpoint(seed_dir / f'alone_{name}' / 'checkpoint.pt').model)
            for mode in CALIBRATION_MODES:
                recalibrate_bn(alone, prepared.calib, resolution=spec.resolution, mode=mode)
                row = {'seed': seed, 'subnet': name, 'mode': mode, **{
                    which: round(evaluate_subnet(net, spec, calib_batches=prepared.calib, eval_batches=test,
                                                 mode=mode)['top1'], 2)
                    for which, net in (('inherited_top1', inherited), ('scratch_top1', scratch))},
                    'alone_top1': round(evaluate(alone, test, resolution=spec.resolution)['top1'], 2)}
                _log(json.dumps(row))
                rows.append(row)
    return rows


def _claim1(inherited: OQATSupernet, *, seed: int, prepared, recipe, ctx, out: Path, epochs: int,
            evaluate_on_test, test_batches) -> dict[str, Any]:
    """The best 2-bit subnet searched within the MobileNetV3-Large-like spec's BitOPs vs that spec alone."""
    holdout_batches = prepared.holdout_batches(batch_size=250)
    mbv3 = mbv3_large_like(inherited.space)
    budget = profile(mbv3, space=recipe.space, num_classes=10).bitops
    _log(f'seed {seed}, claim 1: searching the 2-bit supernet under {budget:.4f} GBitOPs')
    # all held-out images as fitness (not the demo's 1 000): at 1 000 the std of a difference between
    # two candidates is ~1.6 points, at 5 000 ~0.7 (search_fitness_noise)
    found = search_supernet(inherited, budgets=[budget], metric='bitops', recipe=recipe,
                            calib_batches=prepared.calib, eval_batches=holdout_batches, seed=seed)['chosen'][0]
    searched = SubnetSpec.parse(found['spec'])
    claim1 = {
        'searched_spec': str(searched), 'searched_bitops_g': profile(searched, space=recipe.space, num_classes=10).bitops,
        'searched_holdout_top1': found['top1'], 'searched_top1': evaluate_on_test(inherited, searched),
        'mbv3_spec': str(mbv3), 'mbv3_bitops_g': budget,
        'mbv3_from_supernet_top1': evaluate_on_test(inherited, mbv3),
        'mbv3_scratch_top1': _train_static(mbv3, name='mbv3_scratch', prepared=prepared, recipe=recipe,
                                           epochs=epochs, out=out, ctx=ctx, test_batches=test_batches,
                                           seed=seed),
    }
    _log(f'seed {seed}, claim 1: {claim1}')
    return claim1


def _claim2(subnets: dict[str, SubnetSpec], from_inherited: dict[str, float], *, seed: int, prepared, recipe,
            ctx, out: Path, epochs: int, evaluate_on_test) -> dict[str, Any]:
    """Bit inheritance vs a 2-bit supernet trained from scratch for the same total epochs."""
    _log(f'seed {seed}, claim 2: training a 2-bit supernet from scratch for {epochs} epochs')
    torch.manual_seed(seed)
    scratch = OQATSupernet(space=recipe.space, bits=2, num_classes=prepared.data.num_classes)
    train_supernet(supernet=scratch, train_set=prepared.training_set(augment=recipe.augment),
                   recipe=replace(recipe, float_epochs=0), bits=2,
                   epochs=epochs, out_dir=out / 'supernet_w2a2_scratch', ctx=ctx, seed=seed + 2)
    claim2 = {name: {'spec': str(spec), 'bitops_g': profile(spec, space=recipe.space, num_classes=10).bitops,
                     'inherited_top1': from_inherited[name], 'scratch_top1': evaluate_on_test(scratch, spec)}
              for name, spec in subnets.items()}
    _log(f'seed {seed}, claim 2: {claim2}')
    return claim2


def _stats(values: list[float]) -> dict[str, float]:
    return {'mean': round(statistics.fmean(values), 3),
            'std': round(statistics.stdev(values), 3) if len(values) > 1 else 0.0, 'values': values}


def _aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of every top-1 figure (same nested keys as one seed's result)."""
    def walk(items: list[Any]) -> Any:
        first = items[0]
        if isinstance(first, dict):
            return {k: walk([i[k] for i in items]) for k in first}
        if all(i == first for i in items):
            return first  # the same on every seed (a spec, a fixed baseline's BitOPs)
        if isinstance(first, float):
            return _stats([round(i, 3) for i in items])
        return items
    return walk([{k: v for k, v in r.items() if k.startswith('claim')} for r in per_seed])


def run(*, quick: bool, demo_dirs: list[Path], out: Path, seeds: list[int], claims: frozenset[int] = ALL_CLAIMS,
        noise_candidates: int = 12) -> dict:
    preset = DEMO_PRESETS['tiny' if quick else 'default']
    recipe = demo_recipe(preset)
    start = time.perf_counter()
    per_seed, noise = [], None
    for seed in seeds:
        result = run_seed(preset=preset, seed=seed, demo_dirs=demo_dirs, out=out / f'seed{seed}', claims=claims)
        inherited = result.pop('inherited_supernet')
        if noise is None and 1 in claims:
            prepared = prepare_demo_data(preset, recipe).prepared
            noise = _noise(inherited, budget=result['claim1_oqat_vs_mbv3']['mbv3_bitops_g'], prepared=prepared,
                           candidates=noise_candidates, seed=seed, mode=recipe.bn_calibration)
            _log(f'search fitness noise (seed {seed} 2-bit supernet): {noise}')
        per_seed.append(result)
    result = {'preset': preset.name, 'seeds': seeds, 'claims': sorted(claims), 'train_images': preset.train_images,
              'test_images': preset.test_images or 10000, 'search_images': preset.search_images,
              'oqat_epochs': {'float': recipe.float_epochs, 'bits_4_3_2': list(preset.epochs)},
              'total_epochs': sum(preset.epochs) + recipe.float_epochs,
              'summary': _aggregate(per_seed), 'per_seed': per_seed, 'search_fitness_noise': noise,
              'seconds': round(time.perf_counter() - start, 1)}
    if 1 in claims:
        c1 = [r['claim1_oqat_vs_mbv3'] for r in per_seed]
        wins = [c['searched_top1'] - c['mbv3_scratch_top1'] for c in c1]
        result['claim1_holds'] = {
            'searched_minus_mbv3': _stats(wins), 'holds_every_seed': all(w > 0 for w in wins),
            'searched_at_most_mbv3_bitops': all(c['searched_bitops_g'] <= c['mbv3_bitops_g'] + 1e-9 for c in c1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / 'claims.json').write_text(json.dumps(result, indent=1) + '\n')
    return result


def _pm(s: 'dict[str, Any] | float', digits: int = 2) -> str:
    if not isinstance(s, dict):
        return f'{s:.{digits}f} ± 0'
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"



def markdown(r: dict) -> str:
    s = r['summary']
    epochs = r['oqat_epochs']
    lines = [f"Fashion-MNIST, {r['train_images']} training images, {r['test_images']} test images, seeds "
             f"{r['seeds']} (mean ± std); OQAT: {epochs['float']} float + {epochs['bits_4_3_2']} epochs at 4/3/2 bits, "
             f"baselines {r['total_epochs']} epochs.", '',
             '| claim | model | BitOPs (G) | top-1 (%) |', '|---|---|---|---|']
    if 'claim1_oqat_vs_mbv3' in s:
        c1 = s['claim1_oqat_vs_mbv3']
        lines += [f"| 1 | OQAT searched 2-bit | {_pm(c1['searched_bitops_g'], 4)} | {_pm(c1['searched_top1'])} |",
                  f"| 1 | MobileNetV3-L-like 2-bit, from the supernet | {c1['mbv3_bitops_g']:.4f} | "
                  f"{_pm(c1['mbv3_from_supernet_top1'])} |",
                  f"| 1 | MobileNetV3-L-like 2-bit from scratch | {c1['mbv3_bitops_g']:.4f} | "
                  f"{_pm(c1['mbv3_scratch_top1'])} |"]
    for name, c in s.get('claim2_inheritance_vs_scratch', {}).items():
        lines.append(f"| 2 | {name}: inherited 4→3→2 / 2-bit supernet from scratch | {c['bitops_g']:.4f} | "
                     f"{_pm(c['inherited_top1'])} / {_pm(c['scratch_top1'])} |")
    for name, c in s.get('claim3_shared_steps_vs_alone', {}).items():
        lines.append(f"| 3 | {name}: from the supernet (shared steps) / trained alone | {c['bitops_g']:.4f} | "
                     f"{_pm(c['from_supernet_top1'])} / {_pm(c['alone_top1'])} |")
    if 'claim1_holds' in r:
        h = r['claim1_holds']
        lines += ['', f"Claim 1 (searched − MobileNetV3-like from scratch): {_pm(h['searched_minus_mbv3'])} points; "
                      f"holds on every seed: {h['holds_every_seed']}."]
    n = r['search_fitness_noise']
    if n:
        lines.append(f"Search fitness noise (std of a top-1 difference between two candidates on the same images): "
                     f"{n['noise']} by images; median gap between adjacent-ranked candidates "
                     f"{n['gap_median_adjacent']} points; images for noise ≤ gap/2: {n['images_needed']} "
                     f"({n['candidates']} candidates, {n['images']} held-out images).")
    return '\n'.join(lines)


def noise_only(checkpoint: Path, *, candidates: int = 12) -> dict:
    """The fitness-noise measurement alone, on a 2-bit supernet from a training checkpoint."""
    preset = DEMO_PRESETS['default']
    recipe = demo_recipe(preset)
    supernet = OQATSupernet(space=recipe.space, bits=2, num_classes=10)
    supernet.load_state_dict(load_checkpoint(checkpoint).model)
    prepared = prepare_demo_data(preset, recipe).prepared
    budget = profile(mbv3_large_like(supernet.space), space=recipe.space, num_classes=10).bitops
    result = _noise(supernet.eval(), budget=budget, prepared=prepared, candidates=candidates, seed=0,
                    mode=recipe.bn_calibration)
    print(json.dumps(result))
    return result


def _claims(text: str) -> frozenset[int]:
    claims = frozenset(int(x) for x in text.split(',') if x.strip())
    if not claims or not claims <= ALL_CLAIMS:
        raise argparse.ArgumentTypeError(f'{text!r}: give claims among 1,2,3, comma-separated')
    return claims


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='the tiny preset: a smoke run of the same code')
    parser.add_argument('--demo-dir', type=Path, action='append', default=None,
                        help='a finished `oqat demo` run (or a pipeline this benchmark trained) whose supernets to '
                             'reuse for the seed it ran, if it trained them as the default preset does (a finetuned '
                             'run does); repeatable (default: runs/demo)')
    parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds, one full comparison each')
    parser.add_argument('--claims', default='1,2,3', type=_claims,
                        help='comma-separated claims to compare (1: searched vs MobileNetV3-like; 2: inheritance; '
                             '3: shared steps)')
    parser.add_argument('--noise-only', type=Path, default=None, metavar='CHECKPOINT',
                        help='only measure the search fitness noise on this 2-bit small-space checkpoint.pt')
    parser.add_argument('--reevaluate', action='store_true',
                        help='no training: evaluate the claims-2/3 nets of an earlier --out in every BN-calibration mode')
    parser.add_argument('--out', type=Path, default=None)
    args = parser.parse_args(argv)
    if args.noise_only is not None:
        return noise_only(args.noise_only)
    out = args.out or Path('runs/bench') / ('claims-quick' if args.quick else 'claims')
    seeds = [int(x) for x in args.seeds.split(',') if x.strip()]
    if args.reevaluate:
        rows = reevaluate(out, demo_dirs=args.demo_dir or [Path('runs/demo')], seeds=seeds)
        write_json(out / 'claims23_by_calibration_mode.json', rows)
        return {'rows': rows}
    result = run(quick=args.quick, demo_dirs=args.demo_dir or [Path('runs/demo')], out=out, seeds=seeds, claims=args.claims)
    print(markdown(result))
    return result


if __name__ == '__main__':
    main()
