"""Search: every candidate within budget, evolution beats as many random subnets, Pareto helpers."""
from __future__ import annotations

import random

import pytest
from training_helpers import TINY_SPACE

from oqatnets.spec import SubnetSpec
from oqatnets.training.evolution import (
    CachedFitness,
    ConstrainedSampler,
    cost_of,
    evolutionary_search,
    pareto_front,
    random_search,
    resolve_budgets,
)
from oqatnets.training.recipes import get_recipe


def _structured_fitness(spec: SubnetSpec) -> float:
    """Rewards big kernels and expand ratios in the blocks that run — in tension with the budget."""
    return sum(k * e for _, _, k, e in spec.active_blocks()) + 3 * spec.resolution


def _sampler(budget_fraction: float = 0.4) -> ConstrainedSampler:
    lo = cost_of(TINY_SPACE.smallest(2), space=TINY_SPACE, metric='bitops', num_classes=4)
    hi = cost_of(TINY_SPACE.largest(2), space=TINY_SPACE, metric='bitops', num_classes=4)
    return ConstrainedSampler(TINY_SPACE, 2, budget=lo + budget_fraction * (hi - lo), metric='bitops', num_classes=4)


def test_evolution_respects_budget_and_beats_random_search():
    sampler = _sampler()
    wins = []
    for seed in range(4):
        evo_fitness = CachedFitness(_structured_fitness)
        evo = evolutionary_search(sampler=sampler, fitness=evo_fitness, rng=random.Random(seed), population=12,
                                  generations=6)
        assert evo.evaluations == evo_fitness.evaluations > 12
        assert all(cost <= sampler.budget for _, _, cost in evo.history)
        rand = random_search(sampler=sampler, fitness=_structured_fitness, rng=random.Random(100 + seed),
                             evaluations=evo.evaluations)
        assert rand.evaluations == evo.evaluations
        assert all(cost <= sampler.budget for _, _, cost in rand.history)
        wins.append(evo.fitness - rand.fitness)
    assert min(wins) >= 0 and sum(wins) > 0, wins


@pytest.mark.parametrize('search,kwargs,words', [
    (evolutionary_search, dict(population=6, generations=-1), 'generations'),
    (evolutionary_search, dict(population=6, generations=1, mutation_prob=2.0), 'mutation_prob'),
    (evolutionary_search, dict(population=6, generations=1, parent_ratio=0.0), 'keeps no parent'),
    (evolutionary_search, dict(population=6, generations=1, rng=0), 'random.Random'),
    (random_search, dict(evaluations=0), 'evaluations'),
])
def test_search_arguments_that_cannot_be_honoured_are_refused(search, kwargs, words):
    kwargs = {'rng': random.Random(0), **kwargs}
    with pytest.raises(ValueError, match=words):
        search(sampler=_sampler(), fitness=_structured_fitness, **kwargs)


@pytest.mark.parametrize('changes,words', [(dict(space='bogus'), 'bogus'), (dict(parent_ratio=5.0), 'parent_ratio'),
                                           (dict(kd_temperature=0.0), 'kd_temperature'), (dict(momentum=-1), 'momentum')])
def test_recipes_refuse_values_that_cannot_train(changes, words):
    with pytest.raises(ValueError, match=words):
        get_recipe('small').override(**changes)


def test_tight_budget_is_met_by_shrinking_and_impossible_budget_is_refused():
    sampler = _sampler(0.02)
    rng = random.Random(0)
    assert all(sampler.feasible(sampler.sample(rng)) for _ in range(20))
    floor = cost_of(TINY_SPACE.smallest(2), space=TINY_SPACE, metric='macs', num_classes=4)
    for budget in (floor * 0.9, float('nan')):
        with pytest.raises(ValueError, match='below the smallest 2-bit subnet'):
            ConstrainedSampler(TINY_SPACE, 2, budget=budget, metric='macs', num_classes=4)


def test_budget_parsing_and_pareto_front():
    auto = resolve_budgets('auto:3', space=TINY_SPACE, bits=4, metric='bitops', num_classes=4)
    lo = cost_of(TINY_SPACE.smallest(4), space=TINY_SPACE, metric='bitops', num_classes=4)
    hi = cost_of(TINY_SPACE.largest(4), space=TINY_SPACE, metric='bitops', num_classes=4)
    assert len(auto) == 3 and lo < auto[0] < auto[1] < auto[2] < hi
    assert resolve_budgets('0.1, 0.2', space=TINY_SPACE, bits=4, metric='macs', num_classes=4) == [0.1, 0.2]
    for bad in ('auto:0', 'cheap', '-1', 'nan', 'inf', '0.1,0.2,0.1', '0.1,,0.2', '0.1,'):  # NaN hung the sampler
        with pytest.raises(ValueError, match='--budgets'):
            resolve_budgets(bad, space=TINY_SPACE, bits=4, metric='macs', num_classes=4)
    points = [{'bitops': 1, 'top1': 50}, {'bitops': 2, 'top1': 40}, {'bitops': 3, 'top1': 70}, {'bitops': 1, 'top1': 55}]
    assert pareto_front(points) == [{'bitops': 1, 'top1': 55}, {'bitops': 3, 'top1': 70}]


def _hashed_fitness(spec: SubnetSpec) -> float:
    """A fitness unrelated to cost (a hash of the spec), so separate budget runs disagree often."""
    return round(random.Random(str(spec)).uniform(50, 90), 3)


def test_each_budget_chooses_the_best_evaluated_subnet_within_it(monkeypatch):
    import oqatnets.training.search as search_mod
    from oqatnets.supernet import OQATSupernet

    monkeypatch.setattr(search_mod, 'supernet_fitness', lambda supernet, **_: _hashed_fitness)
    supernet = OQATSupernet(space=TINY_SPACE, bits=2, num_classes=4)
    budgets = resolve_budgets('auto:4', space=TINY_SPACE, bits=2, metric='bitops', num_classes=4)
    recipe = get_recipe('small').override(population=4, generations=1)
    for seed in range(3):
        result = search_mod.search_supernet(supernet, budgets=budgets, metric='bitops', recipe=recipe,
                                            calib_batches=[], eval_batches=[], seed=seed, progress=False)
        front = {p['spec'] for p in result['front']}
        for chosen in result['chosen']:
            assert chosen['cost'] <= chosen['budget']
            assert chosen['spec'] in front, 'a chosen subnet lies off its own front'
            # nothing evaluated that fits the budget scores higher (the best of those is on the front)
            fits = [p['top1'] for p in result['front']
                    if cost_of(SubnetSpec.parse(p['spec']), space=TINY_SPACE, metric='bitops', num_classes=4)
                    <= chosen['budget']]
            assert chosen['top1'] == max(fits)
        tops = [c['top1'] for c in sorted(result['chosen'], key=lambda c: c['budget'])]
        assert tops == sorted(tops), 'a larger budget chose a worse subnet than a smaller one'


def test_fitness_noise_measures_pair_differences_on_the_same_images():
    import torch

    from oqatnets.training.evolution import fitness_noise
    g = torch.Generator().manual_seed(0)
    base = torch.rand(4000, generator=g) < 0.8
    same = fitness_noise({'a': base, 'b': base.clone()}, sizes=[250, 1000])
    assert same['noise'] == {'250': 0.0, '1000': 0.0}  # identical hits: no noise in the difference
    independent = {str(i): torch.rand(4000, generator=g) < 0.7 + 0.02 * i for i in range(4)}
    result = fitness_noise(independent, sizes=[250, 1000, 4000])
    assert '4000' not in result['noise']  # one chunk gives no spread
    # two independent ~75 % classifiers: std of the difference ≈ 100·sqrt(2·0.19/N)
    assert 2.5 < result['noise']['250'] < 5.5 and 1.2 < result['noise']['1000'] < 2.8
    assert result['images_needed'] > 1000 and result['candidates'] == 4


def test_each_chosen_subnet_gets_one_folder_that_names_every_budget_it_was_chosen_for(tmp_path, monkeypatch):
    """Two budgets that choose one subnet share its folder and its card names both; two subnets whose folder
    names would be the same (bits, resolution, MACs to 0.01 M) each keep their own folder."""
    import json

    import torch
    from training_helpers import synthetic_dataset

    import oqatnets.training.search as search_mod
    from oqatnets.data import ImageData
    from oqatnets.supernet import OQATSupernet
    from oqatnets.training.metrics import StageTimer

    torch.manual_seed(0)
    supernet = OQATSupernet(space=TINY_SPACE, bits=2, num_classes=4)
    images, labels = next(iter(torch.utils.data.DataLoader(synthetic_dataset(16), batch_size=16)))
    with torch.no_grad():
        supernet.train()(images)  # the step sizes' initialisation
    supernet.eval()
    data = ImageData(name='blobs', train=synthetic_dataset(16), val=synthetic_dataset(16, train=False), num_classes=4,
                     resolution=24, mean=(0.3,) * 3, std=(0.3,) * 3)
    a, b = str(TINY_SPACE.largest(2)), str(TINY_SPACE.smallest(2).replace(resolution=24))
    chosen = [{'spec': a, 'budget': 1.0, 'top1': 50.0, 'macs': 1.0}, {'spec': a, 'budget': 2.0, 'top1': 50.0, 'macs': 1.0},
              {'spec': b, 'budget': 0.5, 'top1': 40.0, 'macs': 1.0}]
    monkeypatch.setattr(search_mod, 'entry_name', lambda spec, *, macs: 'oqat_2bit_r24_same')
    search_mod._save_entries(chosen, supernet, data=data, metric='bitops', recipe=get_recipe('small'), out_dir=tmp_path,
                             calib_batches=[(images, labels)], test_set=None, timer=StageTimer(), parent=None)
    folders = sorted(p.name for p in (tmp_path / 'entries').iterdir())
    assert len(folders) == 2 and chosen[0]['entry'] == chosen[1]['entry'] != chosen[2]['entry']
    config = json.loads((tmp_path / 'entries' / chosen[0]['entry'] / 'config.json').read_text())
    assert config['model_args']['spec'] == a and 'under 1, 2 bitops' in config['pretrained_cfg']['description']
    assert json.loads((tmp_path / 'entries' / chosen[2]['entry'] / 'config.json').read_text())['model_args']['spec'] == b


def test_a_card_gives_no_top5_for_five_classes_or_fewer(tmp_path):
    import json
    from dataclasses import replace

    import torch
    from training_helpers import synthetic_dataset

    from oqatnets.data import ImageData
    from oqatnets.supernet import OQATSupernet
    from oqatnets.training.artifacts import measured_metrics, save_model_folder

    data = ImageData(name='blobs', train=synthetic_dataset(16), val=synthetic_dataset(16, train=False), num_classes=4,
                     resolution=24, mean=(0.3,) * 3, std=(0.3,) * 3, val_split='test')
    result = {'top1': 62.5, 'top5': 100.0, 'images': 16}
    assert 'top5' not in measured_metrics(result, data, source='unit test')
    assert measured_metrics(result, replace(data, num_classes=6), source='unit test')['top5'] == 100.0
    net = OQATSupernet(space=TINY_SPACE, bits=2, num_classes=4).get_subnet(TINY_SPACE.smallest(2))
    with torch.no_grad():
        net.train()(torch.randn(2, 3, 24, 24))  # the step sizes' initialisation
    save_model_folder(net, tmp_path / 'net', data=data, metrics=measured_metrics(result, data, source='unit test'))
    cfg = json.loads((tmp_path / 'net' / 'config.json').read_text())['pretrained_cfg']
    assert cfg['top1'] == 62.5 and 'top5' not in cfg
    assert 'Top-5' not in (tmp_path / 'net' / 'README.md').read_text()
