"""Evolutionary architecture search under a BitOPs or MACs budget, and Pareto fronts per bit-width.

The search is generic over a fitness function ``SubnetSpec -> float`` (higher is better); for
OQAT the fitness is top-1 on held-out training images after BN recalibration
(:func:`supernet_fitness`). Every candidate satisfies the budget: random samples are redrawn and,
if the budget is tight, shrunk one elastic choice at a time; mutants and crossovers that break
the budget are redrawn. Fitness values are cached, so a spec is never evaluated twice and the
number of evaluations is what :class:`CachedFitness` counts — the number a random-search
baseline gets for a fair comparison.
"""
from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from oqatnets.costs import profile
from oqatnets.errors import InvalidArgumentError, InvalidTypeError
from oqatnets.evaluation import CalibrationMode, resize_batch
from oqatnets.spec import SearchSpace, SubnetSpec
from oqatnets.supernet import OQATSupernet

from .calibrate import calibrated_subnet, evaluate_subnet

__all__ = ['BudgetMetric', 'cost_of', 'ConstrainedSampler', 'CachedFitness', 'SearchResult', 'mutate', 'crossover',
           'evolutionary_search', 'random_search', 'pareto_front', 'resolve_budgets', 'supernet_fitness',
           'correct_per_image', 'fitness_noise']

BudgetMetric = Literal['bitops', 'macs']
_MAX_TRIES = 200


def cost_of(spec: SubnetSpec, *, space: SearchSpace, metric: BudgetMetric, num_classes: int) -> float:
    """The budgeted cost of ``spec``: BitOPs in G or MACs in M (``oqatnets.profile`` conventions)."""
    if metric not in ('bitops', 'macs'):
        raise InvalidArgumentError(f'unknown budget metric {metric!r}; use bitops or macs')
    p = profile(spec, space=space, num_classes=num_classes)
    return p.bitops if metric == 'bitops' else p.macs


class ConstrainedSampler:
    """Draws, mutates and crosses subnets of one space and bit-width whose cost is within a budget."""

    def __init__(self, space: SearchSpace, bits: int, *, budget: float, metric: BudgetMetric, num_classes: int):
        self.space, self.bits, self.budget, self.metric, self.num_classes = space, bits, budget, metric, num_classes
        floor = self.cost(space.smallest(bits))
        if not floor <= budget:  # NaN too: no subnet would ever be within it
            raise InvalidArgumentError(f'budget {budget:g} {metric} is below the smallest {bits}-bit subnet ({floor:.4g}); '
                             f'raise the budget')

    def cost(self, spec: SubnetSpec) -> float:
        return cost_of(spec, space=self.space, metric=self.metric, num_classes=self.num_classes)

    def feasible(self, spec: SubnetSpec) -> bool:
        return self.cost(spec) <= self.budget

    def sample(self, rng: random.Random) -> SubnetSpec:
        """A random subnet within budget: rejection sampling, then shrinking the last draw."""
        spec = self.space.sample(self.bits, rng)
        for _ in range(_MAX_TRIES):
            if self.feasible(spec):
                return spec
            spec = self.space.sample(self.bits, rng)
        while not self.feasible(spec):
            spec = _shrink_once(spec, self.space, rng)
        return spec

    def mutate(self, spec: SubnetSpec, rng: random.Random, *, prob: float) -> SubnetSpec:
        for _ in range(_MAX_TRIES):
            child = mutate(spec, self.space, rng, prob=prob)
            if self.feasible(child):
                return child
        return spec

    def crossover(self, a: SubnetSpec, b: SubnetSpec, rng: random.Random) -> SubnetSpec:
        for _ in range(_MAX_TRIES):
            child = crossover(a, b, rng)
            if self.feasible(child):
                return child
        return a


def _lower(value: int, choices: tuple[int, ...]) -> int:
    smaller = [c for c in sorted(choices) if c < value]
    return smaller[-1] if smaller else value


def _shrink_once(spec: SubnetSpec, space: SearchSpace, rng: random.Random) -> SubnetSpec:
    """Lower one random elastic choice (resolution, a depth, a kernel or an expand ratio) one notch."""
    options: list[Callable[[], SubnetSpec]] = []
    if spec.resolution > min(space.resolutions):
        options.append(lambda: spec.replace(resolution=_lower(spec.resolution, space.resolutions)))
    for i, d in enumerate(spec.d):
        if d > min(space.d_choices):
            options.append(lambda i=i: spec.replace(d=_set(spec.d, i, _lower(spec.d[i], space.d_choices))))
    for i in range(len(spec.ks)):
        if spec.ks[i] > min(space.ks_choices):
            options.append(lambda i=i: spec.replace(ks=_set(spec.ks, i, _lower(spec.ks[i], space.ks_choices))))
        if spec.e[i] > min(space.e_choices):
            options.append(lambda i=i: spec.replace(e=_set(spec.e, i, _lower(spec.e[i], space.e_choices))))
    return rng.choice(options)() if options else spec


def _set(values: tuple[int, ...], index: int, value: int) -> list[int]:
    out = list(values)
    out[index] = value
    return out


def mutate(spec: SubnetSpec, space: SearchSpace, rng: random.Random, *, prob: float) -> SubnetSpec:
    """Resample each gene (resolution, every kernel, expand ratio and depth) with probability ``prob``."""
    def pick(value: int, choices: tuple[int, ...]) -> int:
        return rng.choice(choices) if rng.random() < prob else value
    return SubnetSpec(pick(spec.resolution, space.resolutions), [pick(k, space.ks_choices) for k in spec.ks],
                      [pick(e, space.e_choices) for e in spec.e], [pick(d, space.d_choices) for d in spec.d],
                      spec.bits)


def crossover(a: SubnetSpec, b: SubnetSpec, rng: random.Random) -> SubnetSpec:
    """Each gene from either parent with equal probability."""
    def pick(x, y):
        return x if rng.random() < 0.5 else y
    return SubnetSpec(pick(a.resolution, b.resolution), [pick(x, y) for x, y in zip(a.ks, b.ks)],
                      [pick(x, y) for x, y in zip(a.e, b.e)], [pick(x, y) for x, y in zip(a.d, b.d)], a.bits)


class CachedFitness:
    """Memoises a fitness function by spec; ``evaluations`` counts the distinct specs evaluated."""

    def __init__(self, fn: Callable[[SubnetSpec], float]):
        self.fn = fn
        self.cache: dict[str, float] = {}

    def __call__(self, spec: SubnetSpec) -> float:
        key = str(spec)
        if key not in self.cache:
            self.cache[key] = float(self.fn(spec))
        return self.cache[key]

    @property
    def evaluations(self) -> int:
        return len(self.cache)


@dataclass
class SearchResult:
    """The best spec found, its fitness and cost, and every (spec, fitness, cost) evaluated."""

    spec: SubnetSpec
    fitness: float
    cost: float
    evaluations: int
    history: list[tuple[SubnetSpec, float, float]] = field(default_factory=list)


def _result(scored: dict[str, tuple[SubnetSpec, float]], sampler: ConstrainedSampler, evaluations: int) -> SearchResult:
    history = [(spec, fit, sampler.cost(spec)) for spec, fit in scored.values()]
    best = max(history, key=lambda h: (h[1], -h[2]))  # ties: the cheaper subnet
    return SearchResult(spec=best[0], fitness=best[1], cost=best[2], evaluations=evaluations, history=history)


def evolutionary_search(*, sampler: ConstrainedSampler, fitness: Callable[[SubnetSpec], float], rng: random.Random,
                        population: int, generations: int, mutation_prob: float = 0.2,
                        parent_ratio: float = 0.25, mutation_ratio: float = 0.5) -> SearchResult:
    """OFA-style evolution: keep the top ``parent_ratio``, refill with mutants and crossovers."""
    _check_rng(rng)
    if population < 2:
        raise InvalidArgumentError(f'population must be at least 2, got {population}')
    if generations < 0:
        raise InvalidArgumentError(f'generations must be >= 0, got {generations}')
    for name, value in (('mutation_prob', mutation_prob), ('parent_ratio', parent_ratio),
                        ('mutation_ratio', mutation_ratio)):
        if not 0.0 <= value <= 1.0:
            raise InvalidArgumentError(f'{name} must be in [0, 1], got {value}')
    if parent_ratio * population < 0.5:
        raise InvalidArgumentError(f'parent_ratio={parent_ratio} keeps no parent of a population of {population}')
    scored: dict[str, tuple[SubnetSpec, float]] = {}

    def score(spec: SubnetSpec) -> float:
        value = fitness(spec)
        scored[str(spec)] = (spec, value)
        return value

    pop = [sampler.sample(rng) for _ in range(population)]
    ranked = sorted(((score(s), s) for s in pop), key=lambda t: -t[0])
    num_parents = max(1, round(parent_ratio * population))
    num_mutants = round(mutation_ratio * population)
    for _ in range(generations):
        parents = [s for _, s in ranked[:num_parents]]
        children = [sampler.mutate(rng.choice(parents), rng, prob=mutation_prob) for _ in range(num_mutants)]
        while len(parents) + len(children) < population:
            children.append(sampler.crossover(rng.choice(parents), rng.choice(parents), rng))
        ranked = sorted(((score(s), s) for s in parents + children), key=lambda t: -t[0])
    return _result(scored, sampler, len(scored))


def random_search(*, sampler: ConstrainedSampler, fitness: Callable[[SubnetSpec], float], rng: random.Random,
                  evaluations: int) -> SearchResult:
    """The baseline: the best of ``evaluations`` distinct random subnets within the budget."""
    _check_rng(rng)
    if evaluations < 1:
        raise InvalidArgumentError(f'evaluations must be at least 1, got {evaluations}')
    scored: dict[str, tuple[SubnetSpec, float]] = {}
    for _ in range(evaluations * 20):
        if len(scored) >= evaluations:
            break
        spec = sampler.sample(rng)
        if str(spec) not in scored:
            scored[str(spec)] = (spec, fitness(spec))
    return _result(scored, sampler, len(scored))


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, random.Random):
        raise InvalidTypeError(f'rng must be a random.Random (e.g. random.Random(0)), got {type(rng).__name__}')


def pareto_front(points: Iterable[dict[str, Any]], *, cost: str = 'bitops', score: str = 'top1') -> list[dict[str, Any]]:
    """The points no other point beats on both lower ``cost`` and higher ``score``, by rising cost."""
    front: list[dict[str, Any]] = []
    for p in sorted(points, key=lambda p: (p[cost], -p[score])):
        if not front or p[score] > front[-1][score]:
            front.append(p)
    return front


def resolve_budgets(text: str, *, space: SearchSpace, bits: int, metric: BudgetMetric, num_classes: int) -> list[float]:
    """``"0.1,0.2"`` as given, or ``"auto:N"``: N budgets spread evenly (log scale) between the
    smallest and the largest subnet's cost, excluding both ends."""
    text = text.strip()
    if text.startswith('auto:'):
        try:
            n = int(text[5:])
        except ValueError:
            n = 0
        if n < 1:
            raise InvalidArgumentError(f'--budgets {text!r}: write auto:N with N ≥ 1, e.g. auto:3')
        lo = cost_of(space.smallest(bits), space=space, metric=metric, num_classes=num_classes)
        hi = cost_of(space.largest(bits), space=space, metric=metric, num_classes=num_classes)
        return [round(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * (i + 1) / (n + 1)), 6) for i in range(n)]
    try:
        budgets = [float(b) for b in text.split(',')]  # an empty item ('0.05,,0.1') is refused, not skipped
    except ValueError:
        raise InvalidArgumentError(f'--budgets {text!r}: give numbers separated by commas (e.g. 0.05,0.1) or auto:N') from None
    if not budgets or not all(math.isfinite(b) and b > 0 for b in budgets):
        raise InvalidArgumentError(f'--budgets {text!r}: give positive numbers separated by commas, or auto:N')
    if len(set(budgets)) < len(budgets):
        raise InvalidArgumentError(f'--budgets {text!r}: gives a budget twice; give each once')
    return budgets


def supernet_fitness(supernet: OQATSupernet, *, calib_batches: Iterable, eval_batches: Iterable,
                     mode: CalibrationMode = 'batch') -> Callable[[SubnetSpec], float]:
    """Top-1 (%) on ``eval_batches`` of a spec taken from ``supernet`` after BN recalibration (``mode``)."""
    def fitness(spec: SubnetSpec) -> float:
        return evaluate_subnet(supernet, spec, calib_batches=calib_batches, eval_batches=eval_batches,
                               mode=mode)['top1']
    return fitness



@torch.no_grad()
def correct_per_image(supernet: OQATSupernet, spec: SubnetSpec, *, calib_batches: Iterable,
                      eval_batches: Iterable, mode: CalibrationMode = 'batch') -> torch.Tensor:
    """Whether ``spec`` (BN recalibrated, ``mode``) classifies each image of ``eval_batches`` right, in order."""
    net = calibrated_subnet(supernet, spec, calib_batches=calib_batches, mode=mode)
    device = next(net.parameters()).device
    hits = [net(resize_batch(images.to(device), spec.resolution)).argmax(1).cpu() == target
            for images, target in eval_batches]
    return torch.cat(hits)


def fitness_noise(correct: dict[str, torch.Tensor], *, sizes: Iterable[int]) -> dict[str, Any]:
    """How noisy the search's fitness is at N held-out images, against the gaps it has to rank.

    ``correct`` maps candidate subnets to per-image hits on the same images. The search compares
    candidates on the *same* images, so what matters is the noise of a difference: for each size
    N, the images are cut into disjoint chunks of N and the spread (std over chunks) of every
    pair's top-1 difference is measured; ``noise[N]`` is its root mean square over the pairs.
    ``gap`` is the median |top-1 difference| between candidates adjacent in rank on all images,
    the smallest differences the ranking has to get right. ``images_needed`` extrapolates
    (noise ∝ 1/√N, from the largest size with at least 4 chunks) to the N where noise = gap / 2.
    """
    names = sorted(correct)
    total = min(len(v) for v in correct.values())
    acc = {n: correct[n][:total].float() * 100 for n in names}
    noise: dict[int, float] = {}
    for size in sorted(sizes):
        chunks = total // size
        if chunks < 2:
            continue
        variances = []
        for a, b in itertools.combinations(names, 2):
            diff = (acc[a][:chunks * size] - acc[b][:chunks * size]).view(chunks, size).mean(1)
            variances.append(statistics.pvariance(diff.tolist()) * chunks / (chunks - 1))
        noise[size] = math.sqrt(sum(variances) / len(variances))
    full = sorted((float(acc[n].mean()) for n in names), reverse=True)
    gaps = [x - y for x, y in itertools.pairwise(full)]
    gap = statistics.median(gaps) if gaps else float('nan')
    usable = [n for n in noise if total // n >= 4] or list(noise)
    needed = None
    if usable and gap > 0:
        ref = max(usable)
        needed = math.ceil(ref * (noise[ref] / (gap / 2)) ** 2)
    return {'images': total, 'candidates': len(names), 'noise': {str(k): round(v, 3) for k, v in noise.items()},
            'gap_median_adjacent': round(gap, 3), 'top1_full': [round(x, 3) for x in full],
            'images_needed': needed}
