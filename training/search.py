"""A search run: several budgets × several bit-widths → chosen subnets, Pareto fronts, plot, zoo entries.

For each supernet (one per bit-width) and each budget, an evolutionary search picks a subnet;
fitness values are shared across the budgets of a bit-width (same supernet, same held-out
images), so later budgets reuse earlier evaluations. ``pareto.json`` holds the chosen subnets and
the front of everything evaluated; ``pareto.png`` draws held-out top-1 against BitOPs, one curve
per bit-width; each chosen subnet is saved as a zoo-entry folder under ``entries/``.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from tqdm.auto import tqdm

from oqatnets._io import atomic_path
from oqatnets.costs import profile
from oqatnets.data import ImageData
from oqatnets.errors import InvalidArgumentError
from oqatnets.spec import SubnetSpec
from oqatnets.supernet import OQATSupernet

from .artifacts import folder_cfg, measured_metrics, save_model_folder
from .calibrate import calibrated_subnet
from .datasets import evaluate_as_files
from .evolution import (
    BudgetMetric,
    CachedFitness,
    ConstrainedSampler,
    cost_of,
    evolutionary_search,
    pareto_front,
    resolve_budgets,
    supernet_fitness,
)
from .metrics import StageTimer, write_json
from .recipes import Recipe

__all__ = ['entry_name', 'search_supernet', 'best_within', 'plot_pareto', 'run_search']


def entry_name(spec: SubnetSpec, *, macs: float) -> str:
    """The zoo-style folder name of a searched subnet, e.g. ``oqat_2bit_r28_3p41m``."""
    return f'oqat_{spec.bits}bit_r{spec.resolution}_{macs:.2f}m'.replace('.', 'p')


def _point(spec: SubnetSpec, top1: float, *, supernet: OQATSupernet) -> dict[str, Any]:
    p = profile(spec, space=supernet.space, num_classes=supernet.num_classes)
    return {'spec': str(spec), 'bits': spec.bits, 'resolution': spec.resolution, 'top1': round(top1, 3),
            'macs': round(p.macs, 4), 'bitops': round(p.bitops, 5), 'params': round(p.params, 4),
            'size_mbit': round(p.size_mbit, 4)}


def search_supernet(supernet: OQATSupernet, *, budgets: list[float], metric: BudgetMetric, recipe: Recipe,
                    calib_batches: Iterable, eval_batches: Iterable, seed: int, progress: bool = True) -> dict[str, Any]:
    """Evolutionary search of one supernet at every budget; returns chosen points and the front."""
    fitness = CachedFitness(supernet_fitness(supernet, calib_batches=calib_batches, eval_batches=eval_batches,
                                             mode=recipe.bn_calibration))
    bar = tqdm(total=len(budgets) * recipe.population * (recipe.generations + 1), leave=False, dynamic_ncols=True,
               desc=f'search {supernet.bits}-bit', disable=not progress)

    def scored(spec: SubnetSpec) -> float:  # one tick per candidate scored (cached ones included)
        bar.update()
        return fitness(spec)

    runs = []
    for index, budget in enumerate(budgets):
        sampler = ConstrainedSampler(supernet.space, supernet.bits, budget=budget, metric=metric,
                                     num_classes=supernet.num_classes)
        result = evolutionary_search(sampler=sampler, fitness=scored, rng=random.Random(seed + index),
                                     population=recipe.population, generations=recipe.generations,
                                     mutation_prob=recipe.mutation_prob, parent_ratio=recipe.parent_ratio,
                                     mutation_ratio=recipe.mutation_ratio)
        runs.append((budget, result.evaluations))
    bar.close()
    evaluated = [_point(SubnetSpec.parse(key), top1, supernet=supernet) for key, top1 in fitness.cache.items()]
    costs = {p['spec']: cost_of(SubnetSpec.parse(p['spec']), space=supernet.space, metric=metric,
                                num_classes=supernet.num_classes) for p in evaluated}
    chosen = []
    for budget, evaluations in runs:
        best = best_within(evaluated, costs=costs, budget=budget)
        chosen.append({'budget': budget, 'budget_metric': metric, 'cost': round(costs[best['spec']], 6),
                       'evaluations': evaluations, **best})
    return {'bits': supernet.bits, 'chosen': chosen, 'front': pareto_front(evaluated),
            'distinct_evaluations': fitness.evaluations}


def best_within(points: list[dict[str, Any]], *, costs: dict[str, float], budget: float) -> dict[str, Any]:
    """The highest-scoring point whose cost fits ``budget`` (ties: the cheaper one).

    Every budget's choice is taken from every subnet evaluated for the bit-width, not only from
    its own evolution run: fitness is shared, so a subnet found under a smaller budget that
    also fits a larger one and scores higher must not lose to that run's own best.
    """
    feasible = [p for p in points if costs[p['spec']] <= budget]
    if not feasible:
        raise InvalidArgumentError(f'no evaluated subnet fits the budget {budget:g}')
    return max(feasible, key=lambda p: (p['top1'], -costs[p['spec']]))


def plot_pareto(results: list[dict[str, Any]], path: 'str | Path', *, title: str) -> Path:
    """Held-out top-1 vs BitOPs: each bit-width's front as a line, its chosen subnets as markers."""
    from matplotlib.figure import Figure  # optional dependency; a Figure needs no global backend
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.add_subplot()
    for result in sorted(results, key=lambda r: r['bits']):
        front = result['front']
        line, = ax.plot([p['bitops'] for p in front], [p['top1'] for p in front], '-', alpha=0.6,
                        label=f'{result["bits"]}-bit front')
        ax.plot([p['bitops'] for p in result['chosen']], [p['top1'] for p in result['chosen']], 'o',
                color=line.get_color(), label=f'{result["bits"]}-bit chosen')
    ax.set_xlabel('BitOPs (G)')
    ax.set_ylabel('held-out top-1 (%)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a symlink keeps its link; a device or FIFO is refused
        fig.savefig(tmp, format='png')
    return Path(path)


def _save_entries(chosen: list[dict[str, Any]], supernet: OQATSupernet, *, data: ImageData, metric: str, recipe: Recipe,
                  out_dir: Path, calib_batches: Iterable, test_set: Dataset | None, timer: StageTimer,
                  parent: str | None) -> None:
    """One folder per distinct chosen subnet, naming every budget it was chosen for; two subnets whose names
    (bits, resolution, MACs to 0.01 M) would be the same get folders told apart by their spec's hash."""
    by_spec: dict[str, list[dict[str, Any]]] = {}
    for point in chosen:
        by_spec.setdefault(point['spec'], []).append(point)
    names: set[str] = set()
    for text, points in by_spec.items():
        spec = SubnetSpec.parse(text)
        net = calibrated_subnet(supernet, spec, calib_batches=calib_batches, mode=recipe.bn_calibration)
        if test_set is not None:
            with timer.stage('test_eval'):
                test = evaluate_as_files(net, test_set, cfg=folder_cfg(net, data))
            timer.images['test_eval'] += test['images']
            metrics = measured_metrics(test, data, source=f'oqat search on {data.name}')
        else:  # the held-out training images the search ranked it on
            metrics = {'top1': points[0]['top1'], 'split': 'train',
                       'source': f'oqat search on {data.name}: held-out training images'}
        name = entry_name(spec, macs=points[0]['macs'])
        if name in names:
            name = f'{name}_{hashlib.sha256(text.encode()).hexdigest()[:6]}'
        names.add(name)
        budgets = ', '.join(f'{p["budget"]:g}' for p in points) + f' {metric}'
        for point in points:
            point['entry'] = name
            if test_set is not None:
                point.update(test_top1=round(test['top1'], 3), test_top5=round(test['top5'], 3))
        metrics.update(holdout_top1=points[0]['top1'], budget=budgets)
        save_model_folder(net, out_dir / 'entries' / name, data=data, metrics=metrics,
                          description=f'{spec.bits}-bit OQAT subnet searched under {budgets}',
                          extra_cfg={'supernet': parent})


def run_search(*, supernets: list[OQATSupernet], data: ImageData, budgets: str, metric: BudgetMetric,
               recipe: Recipe, out_dir: 'str | Path', calib_batches: Iterable, holdout_batches: Iterable,
               test_set: Dataset | None = None, seed: int = 0, save_entries: bool = True,
               run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Search every supernet at every budget, write ``pareto.json``/``pareto.png`` and save the chosen entries,
    each tested on ``test_set`` through the transform its folder's cfg describes."""
    out_dir = Path(out_dir)
    timer = StageTimer()
    results = []
    for supernet in sorted(supernets, key=lambda s: -s.bits):
        supernet.eval()
        values = resolve_budgets(budgets, space=supernet.space, bits=supernet.bits, metric=metric,
                                 num_classes=supernet.num_classes)
        with timer.stage(f'search_{supernet.bits}bit'):
            result = search_supernet(supernet, budgets=values, metric=metric, recipe=recipe,
                                     calib_batches=calib_batches, eval_batches=holdout_batches, seed=seed)
        timer.images[f'search_{supernet.bits}bit'] = result['distinct_evaluations']
        if save_entries:
            _save_entries(result['chosen'], supernet, data=data, metric=metric, recipe=recipe, out_dir=out_dir,
                          calib_batches=calib_batches, test_set=test_set, timer=timer,
                          parent=(run_info or {}).get('supernets', {}).get(str(supernet.bits)))
        results.append(result)
    report = {'metric': metric, 'data': data.name, 'results': results, 'throughput_evaluations_per_s': {
        k: v['images_per_s'] for k, v in timer.summary().items() if k.startswith('search')},
        'timing': timer.summary(), **(run_info or {})}
    write_json(out_dir / 'pareto.json', report)
    plot_pareto(results, out_dir / 'pareto.png', title=f'OQAT search on {data.name} ({metric} budgets)')
    return report
