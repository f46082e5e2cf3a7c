"""The main job end to end: regenerate a mini OQAT zoo from nothing on a real data set.

Prepare the data → jointly train a 4-bit supernet → inherit 3-bit, train → inherit 2-bit,
train → search three BitOPs budgets per bit-width → export the nine subnets as zoo entries →
(``finetuned`` preset: train each entry alone for two epochs) → publish them to a local Hugging
Face cache → load each back offline with ``oqatnets.create_model('<entry>', pretrained=True)`` →
evaluate on the test split → a table, ``report.json`` and the Pareto plot. ``oqat demo`` runs it;
presets size it for a test (``tiny``), two CPU cores (``quick``, 11 minutes; ``default``, 16–24 minutes;
``finetuned``, 15–19 more) or a GPU (``full``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

import oqatnets
from oqatnets._io import check_output, replacing_dir
from oqatnets.data import ImageData
from oqatnets.errors import InvalidArgumentError
from oqatnets.evaluation import evaluate, recalibrate_bn
from oqatnets.factory import load_packed
from oqatnets.hub import metrics_source
from oqatnets.net import OQATNet
from oqatnets.spec import SubnetSpec
from oqatnets.supernet import OQATSupernet

from .artifacts import folder_cfg, measured_metrics, recorded_source, save_model_folder, save_trained_supernet, write_run_file
from .calibrate import calibrated_subnet, evaluate_subnet
from .checkpoint import seeded_global_rng
from .datasets import PreparedData, cfg_view, evaluate_as_files, fixed_batches, prepare_data
from .distributed import DistContext, init_distributed
from .finetune import finetune
from .inherit import inherit_bits
from .joint import train_supernet
from .loop import TrainResult, resolve_fused_quantizer
from .metrics import StageTimer, write_json
from .recipes import SPLIT_SEED, Recipe, get_recipe
from .search import run_search

__all__ = ['DemoPreset', 'DEMO_PRESETS', 'DemoData', 'demo_recipe', 'prepare_demo_data', 'run_demo', 'format_table',
           'ran_preset', 'report_supernet_dirs', 'load_finished_run', 'finetune_entry', 'SIZES', 'ZOO_PREFIX']

ZOO_PREFIX = 'oqat_fmnist'
SIZES = ('s', 'm', 'l')


@dataclass(frozen=True)
class DemoPreset:
    """How much of each stage a demo run does."""

    name: str
    data: str = 'fashion-mnist'
    # signed block inputs: +3 points at 4 bits over 'small'; 20-28 px: 0.84x the step time (docs/TRAINING.md)
    space: str = 'small_signed_28'
    train_images: int | None = 24000  # of the training part (after the held-out split); None = all
    holdout_images: int = 5000  # kept out of training; the search's fitness set
    search_images: int = 1000  # held-out images scored per candidate subnet
    calib_images: int = 500  # fixed training images for every BN recalibration
    test_images: int | None = None  # None = the whole test split
    batch_size: int | None = None  # None: the space's recipe's (32 for small_signed_28)
    lr: float = 0.1
    warmup_epochs: float = 0.2
    augment: bool = False  # random crop and flip: they cost 4-6 points at a few epochs (docs/TRAINING.md)
    float_epochs: int = 0  # float joint training before the 4-bit phase (the authors began from float OFA)
    quant_lr_factor: float = 1.0  # peak LR of the 4-bit phase after the float one, relative to ``lr``
    epochs: tuple[int, int, int] = (4, 1, 1)  # 4-bit, then 3-bit and 2-bit after inheritance
    population: int = 10
    generations: int = 3
    budgets: str = 'auto:3'
    eval_images: int = 1000  # test images for the per-epoch check of the largest/smallest subnet
    # each searched entry then trains alone from its supernet weights (0: deployed as searched, the paper's
    # way); at lr 0.1 one epoch recovered 4.3–4.5 of the ~5.5 points weight sharing costs at 4 bits, the
    # recipe's finetune LR 0.02 only 1.9–2.5; two epochs put both 4-bit entries over 85 % (docs/TRAINING.md, *Floors*)
    finetune_epochs: int = 0
    finetune_lr: float = 0.1


# 4 epochs in all: a float epoch, then 1 each at 4, 3 and 2 bits, at batch 32 (+0.9 to +3.6 points on the entries
# over batch 64, docs/TRAINING.md *Batch 32*); 16-24 min on 2 CPU cores
_DEFAULT = DemoPreset('default', float_epochs=1, epochs=(1, 1, 1))

DEMO_PRESETS: dict[str, DemoPreset] = {
    'tiny': DemoPreset('tiny', train_images=512, holdout_images=512, search_images=256, calib_images=256,
                       test_images=512, batch_size=64, epochs=(1, 1, 1), population=4, generations=1,
                       eval_images=0),
    # the default run on half its training images, for 12 min on 2 CPU cores (11.3 measured): every stage has half
    # the steps, which costs the entries 3-8 points (docs/TRAINING.md, *The 12-minute budget*)
    'quick': replace(_DEFAULT, name='quick', train_images=12000),
    'default': _DEFAULT,
    # the default run, then each entry finetuned alone for two epochs (not in the paper; docs/TRAINING.md): at
    # batch 32, 33-40 min with every 4-bit entry over 85 % and every 2-bit over 82 % (two seeds; *Batch 32*)
    'finetuned': replace(_DEFAULT, name='finetuned', finetune_epochs=2),
    'full': DemoPreset('full', train_images=None, search_images=5000, calib_images=2000, batch_size=256,
                       float_epochs=10, epochs=(30, 20, 20), warmup_epochs=2.0, augment=True, population=32, generations=10,
                       eval_images=5000),
}


def demo_recipe(preset: DemoPreset) -> Recipe:
    """The recipe of the preset's space with the preset's batch, LR schedule, split and search sizes."""
    return get_recipe(preset.space).override(
        batch_size=preset.batch_size, lr=preset.lr, warmup_epochs=preset.warmup_epochs, augment=preset.augment,
        float_epochs=preset.float_epochs, quant_lr_factor=preset.quant_lr_factor,
        holdout_images=preset.holdout_images, calib_images=preset.calib_images, population=preset.population,
        generations=preset.generations, finetune_lr=preset.finetune_lr)


@dataclass
class DemoData:
    """The preset's data: training/held-out/calibration split, test subset, search-fitness batches."""

    prepared: PreparedData
    test_set: Dataset
    search_batches: Iterable

    def test_batches(self) -> Iterable:
        return fixed_batches(self.test_set, batch_size=250, in_memory=self.prepared.in_memory)


def prepare_demo_data(preset: DemoPreset, recipe: Recipe) -> DemoData:
    """Load and split ``preset.data``; the test and search subsets are the first N images."""
    prepared = prepare_data(preset.data, holdout_images=preset.holdout_images, calib_images=preset.calib_images,
                            calib_batch_size=recipe.calib_batch_size, train_images=preset.train_images)
    val = prepared.data.val
    test_set = val if preset.test_images is None else Subset(val, range(min(preset.test_images, len(val))))
    search_set = Subset(prepared.holdout_set, range(min(preset.search_images, len(prepared.holdout_set))))
    return DemoData(prepared, test_set, fixed_batches(search_set, batch_size=250, in_memory=prepared.in_memory))


def _log(message: str) -> None:
    print(f'[oqat demo {time.strftime("%H:%M:%S")}] {message}', flush=True)


def _test_source(finetune_epochs: int, *, data: ImageData, images: int) -> str:
    """The ``metrics_source`` of the zoo table's figures: the entries as published, tested after loading them back."""
    source = 'oqat demo: Fashion-MNIST after BN recalibration'
    if finetune_epochs:
        source += f', searched then finetuned alone for {finetune_epochs} epoch(s)'
    return metrics_source({'source': source, 'split': data.val_split, 'images': images})


def _zoo_rows(report: dict[str, Any], entries_dir: Path, supernet_dirs: dict[int, Path]) -> list[dict[str, Any]]:
    """One zoo-table row per chosen subnet, named ``oqat_fmnist_{b}bit_{s,m,l}.fmnist`` by budget; no accuracy yet
    (the entries are tested once published and loaded back, and the table then gets those figures)."""
    rows = []
    for result in report['results']:
        bits = result['bits']
        for size, point in zip(SIZES, sorted(result['chosen'], key=lambda p: p['budget'])):
            config = json.loads((entries_dir / point['entry'] / 'config.json').read_text())
            cfg = config['pretrained_cfg']
            rows.append({
                'name': f'{ZOO_PREFIX}_{bits}bit_{size}.fmnist', 'spec': point['spec'], 'space': config['model_args']['space'],
                'num_classes': config['num_classes'], 'input_size': cfg['input_size'], 'crop_pct': cfg['crop_pct'],
                'mean': cfg['mean'], 'std': cfg['std'], 'label_names': cfg.get('label_names'),
                'dataset': 'fashion-mnist', 'license': 'apache-2.0',
                'supernet': str(supernet_dirs[bits]), 'sha256': cfg['sha256'],
                'folder': str(entries_dir / point['entry']), 'budget': point['budget'],
            })
    return rows


def _publish_and_reload(rows: list[dict[str, Any]], *, table_path: Path, cache_dir: Path,
                        test_set: Dataset) -> list[dict[str, Any]]:
    """Register the table, publish each entry to the cache, load it back offline and test it on the test
    images through its own cfg transform: what a user feeding those images as files gets."""

    oqatnets.register_zoo_table(table_path)
    measured = []
    for row in rows:
        name = row['name'].split('.')[0]
        repo_id = oqatnets.get_pretrained_cfg(name).hf_hub_id
        oqatnets.publish_to_cache(row['folder'], repo_id, cache_dir=cache_dir)
        start = time.perf_counter()
        model = oqatnets.create_model(name, pretrained=True, cache_dir=cache_dir, local_files_only=True)
        load_s = time.perf_counter() - start
        spec = model.spec
        test = fixed_batches(cfg_view(test_set, model.pretrained_cfg), batch_size=250, in_memory=True)
        result = evaluate(model, test)
        packed_path = Path(row['folder']) / 'model.packed.safetensors'
        packed_images = _check_packed(load_packed(packed_path), model, test, path=packed_path)
        profile = oqatnets.profile(model)
        measured.append({
            'entry': name, 'bits': spec.bits, 'resolution': spec.resolution, 'spec': str(spec),
            'macs_m': round(profile.macs, 3), 'bitops_g': round(profile.bitops, 5),
            'size_mbit': round(profile.size_mbit, 4), 'packed_bytes': packed_path.stat().st_size,
            'fp32_bytes': (Path(row['folder']) / 'model.safetensors').stat().st_size,
            'top1': round(result['top1'], 2), 'top5': round(result['top5'], 2),
            'packed_equal_images': packed_images, 'test_images': result['images'],
            'load_s': round(load_s, 4), 'hf_hub_id': repo_id, 'budget_bitops_g': row['budget'],
        })
        _log(f'{name}: loaded from the Hub cache in {load_s * 1e3:.0f} ms, test top-1 {result["top1"]:.2f} %')
    return measured


@torch.no_grad()
def _check_packed(packed: nn.Module, model: nn.Module, batches: Iterable, *, path: Path, max_batches: int = 2) -> int:
    """How many test images the packed file's network gives the loaded entry's logits on, bit for bit (the
    first ``max_batches``: both run the same quantized weights, so one differing logit is a packing bug)."""
    packed.eval()
    model.eval()
    images = 0
    for index, (x, _) in enumerate(batches):
        if index == max_batches:
            break
        if not torch.equal(packed(x), model(x)):
            raise RuntimeError(f'{path}: the packed network\'s logits differ from the published entry\'s on test '
                               f'batch {index}; the packed file does not hold the network it was written from')
        images += len(x)
    return images


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ['| entry | bits | resolution | MACs (M) | BitOPs (G) | packed size (KiB) | top-1 (%) |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['entry']} | {r['bits']} | {r['resolution']} | {r['macs_m']:.3f} | "
                     f"{r['bitops_g']:.4f} | {r['packed_bytes'] / 1024:.1f} | {r['top1']:.2f} |")
    return '\n'.join(lines)


def run_demo(out: 'str | os.PathLike', *, preset: 'str | DemoPreset' = 'default', seed: int = 0,
             device: str | None = None, stop_after_training: bool = False, overwrite: bool = False,
             fused_quantizer: bool | None = None) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns the report (also written as ``report.json``).

    ``out`` must be empty or absent unless ``overwrite``; an earlier run there is replaced only when
    this one succeeds (a failed or interrupted run leaves it as it was).
    ``stop_after_training`` ends after the three supernets are trained (the benchmark reuses them).
    ``fused_quantizer`` is :func:`~oqatnets.training.train_supernet`'s (None: fused on the CPU when it builds);
    the report records which ran.
    """
    preset = DEMO_PRESETS[preset] if isinstance(preset, str) else preset
    out = check_output(out, folder=True)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InvalidArgumentError(f'{out} is not empty; pass --overwrite to replace what it holds or choose another --out')
    with replacing_dir(out):
        return _pipeline(out, preset=preset, seed=seed, device=device, stop_after_training=stop_after_training,
                         fused_quantizer=fused_quantizer)


# what a run does with its supernets once they are trained: runs that differ only here trained the same ones
_AFTER_TRAINING = ('name', 'search_images', 'test_images', 'population', 'generations', 'budgets',
                   'finetune_epochs', 'finetune_lr')


def ran_preset(report: dict[str, Any], preset: DemoPreset, *, training_only: bool = False) -> bool:
    """Whether a demo ``report.json`` records ``preset`` (:func:`run_demo` writes it as ``asdict``); with
    ``training_only``, whether its supernets were trained as ``preset`` trains them (the ``finetuned``
    preset's are the ``default`` one's).

    A field the record lacks was added after that run, with a default that keeps the earlier behaviour.
    """
    recorded = {**asdict(DemoPreset(report['preset']['name'])), **report['preset']}
    wanted = asdict(preset)
    if training_only:
        for key in _AFTER_TRAINING:
            recorded.pop(key, None)
            wanted.pop(key)
    return json.loads(json.dumps(recorded)) == json.loads(json.dumps(wanted))


def load_finished_run(run_dir: 'str | os.PathLike') -> tuple[dict[str, Any], DemoPreset]:
    """A finished demo run's ``report.json`` and the preset it ran, for analyses of the run."""
    path = Path(run_dir) / 'report.json'
    if not path.is_file():
        raise InvalidArgumentError(f'{run_dir}: no report.json there; run `make demo` (or `oqat demo --out {run_dir}`) first')
    report = json.loads(path.read_text())
    preset = DEMO_PRESETS.get(report['preset']['name'])
    if preset is None or not ran_preset(report, preset):
        raise InvalidArgumentError(f'{run_dir} ran a preset this version does not have; run the demo again')
    if 'entries' not in report:
        raise InvalidArgumentError(f'{run_dir} stopped after {report.get("stopped_after")}; it has no searched entries')
    return report, preset


def report_supernet_dirs(run_dir: 'str | os.PathLike', report: dict[str, Any]) -> dict[int, Path]:
    """A run's supernet folders by bits: they sit in ``run_dir``, wherever the run was started from
    (the report's own paths are relative to that)."""
    return {int(b): Path(run_dir) / Path(p).name for b, p in report['artifacts']['supernets'].items()}


def _train_supernets(
        demo_data: DemoData, *, preset: DemoPreset, recipe: Recipe, out: Path, ctx: DistContext, seed: int,
        timer: StageTimer, fused_quantizer: bool) -> tuple[dict[int, Path], list[OQATSupernet], dict[str, Any], dict[str, Any]]:
    """The 4-bit supernet (after the recipe's float phase), then 3 and 2 bits, each inherited from the last.

    Returns the run folders and supernets by bits, the inherited nets' held-out top-1 before training,
    and each stage's training records.
    """
    prepared, data, search_batches = demo_data.prepared, demo_data.prepared.data, demo_data.search_batches
    eval_batches = (prepared.val_batches(batch_size=250, limit=preset.eval_images) if preset.eval_images else None)
    run_info = {'data': preset.data, 'holdout_images': preset.holdout_images, 'split_seed': SPLIT_SEED}
    supernet_dirs: dict[int, Path] = {}
    supernets: list[OQATSupernet] = []
    inheritance: dict[str, Any] = {}
    training: dict[str, Any] = {}
    with seeded_global_rng(seed, device=ctx.device):  # --seed fixes the initial weights too
        supernet = OQATSupernet(space=preset.space, bits=4, num_classes=data.num_classes)
    for bits, epochs in zip((4, 3, 2), preset.epochs):
        if bits < 4:
            supernet = inherit_bits(supernets[-1], bits)
            checks = {}
            for which, spec in (('largest', supernet.space.largest(bits)), ('smallest', supernet.space.smallest(bits))):
                checks[which] = round(evaluate_subnet(supernet, spec, calib_batches=prepared.calib, eval_batches=search_batches,
                                                      mode=recipe.bn_calibration)['top1'], 2)
            inheritance[f'{bits}bit_before_training'] = checks
            _log(f'inherited {bits}-bit supernet before training (held-out top-1): {checks}')
        run_dir = out / f'supernet_w{bits}a{bits}'
        float_epochs = recipe.float_epochs if bits == 4 else 0  # the float phase precedes 4 bits only
        write_run_file(run_dir, supernet, data=data, run_info=run_info)
        with timer.stage(f'train_{bits}bit'):
            result = train_supernet(supernet=supernet, train_set=prepared.training_set(augment=recipe.augment),
                                    recipe=recipe, bits=bits,
                                    epochs=epochs, float_epochs=float_epochs, out_dir=run_dir, ctx=ctx,
                                    seed=seed + bits, checkpoint_every=100, fused_quantizer=fused_quantizer,
                                    calib_batches=prepared.calib,
                                    eval_batches=eval_batches,
                                    run_info={**run_info, 'inherited_from': str(supernet_dirs[bits + 1]) if bits < 4 else None})
        timer.images[f'train_{bits}bit'] = len(prepared.train_set) * (epochs + float_epochs)
        training[f'{bits}bit'] = {'epochs': epochs, 'float_epochs': float_epochs, 'records': result.records,
                                  'summary': result.summary}
        save_trained_supernet(supernet, run_dir, data=data, bits=bits, last_epoch=result.summary['last_epoch'],
                              eval_images=preset.eval_images)
        supernet.to(ctx.device)  # the export copied it to the CPU
        supernet_dirs[bits] = run_dir
        supernets.append(supernet.eval())
        _log(f'{bits}-bit supernet trained ({epochs} epoch(s)) -> {run_dir}')
    return supernet_dirs, supernets, inheritance, training


def finetune_entry(supernet: OQATSupernet, spec: SubnetSpec, *, prepared: PreparedData, recipe: Recipe, epochs: int,
                   ctx: DistContext, seed: int, out_dir: 'str | os.PathLike', lr: float | None = None,
                   teacher: nn.Module | None = None, fused_quantizer: bool | None = None) -> tuple[OQATNet, TrainResult]:
    """``spec`` taken from ``supernet`` as published (BN calibrated in the recipe's mode), trained alone for
    ``epochs`` at its bits (LR ``lr`` or the recipe's finetune LR), then recalibrated the same way."""
    net = calibrated_subnet(supernet, spec, calib_batches=prepared.calib, mode=recipe.bn_calibration)
    run = finetune(model=net, train_set=prepared.training_set(augment=recipe.augment), recipe=recipe, epochs=epochs,
                   resolution=spec.resolution, out_dir=out_dir, ctx=ctx, lr=lr, teacher=teacher,
                   kd_ratio=recipe.kd_ratio, kd_temperature=recipe.kd_temperature, seed=seed,
                   fused_quantizer=fused_quantizer)
    recalibrate_bn(net, prepared.calib, resolution=spec.resolution, mode=recipe.bn_calibration)
    return net, run


def _finetune_entries(search: dict[str, Any], supernets: list[OQATSupernet], demo_data: DemoData, *,
                      preset: DemoPreset, recipe: Recipe, entries_dir: Path, work_dir: Path, ctx: DistContext, seed: int,
                      supernet_dirs: dict[int, Path], fused_quantizer: bool) -> dict[str, Any]:
    """Train each searched entry alone for ``preset.finetune_epochs`` from its supernet weights (BN calibrated
    as published), recalibrate it and save it over its entry folder; returns held-out top-1 before and after."""
    prepared = demo_data.prepared
    by_bits = {supernet.bits: supernet for supernet in supernets}
    records: dict[str, Any] = {}
    for result in search['results']:
        for point in result['chosen']:
            if point['entry'] in records:  # two budgets chose one subnet: one folder
                continue
            spec = SubnetSpec.parse(point['spec'])
            net, run = finetune_entry(by_bits[spec.bits], spec, prepared=prepared, recipe=recipe,
                                      epochs=preset.finetune_epochs, ctx=ctx, seed=seed + spec.bits,
                                      out_dir=work_dir / point['entry'], fused_quantizer=fused_quantizer)
            holdout = round(evaluate(net, demo_data.search_batches, resolution=spec.resolution)['top1'], 3)
            records[point['entry']] = {'searched_holdout_top1': point['top1'], 'holdout_top1': holdout,
                                       'epochs': preset.finetune_epochs, 'lr': recipe.finetune_lr,
                                       'train_seconds': run.summary['throughput']['train']['seconds']}
            test = evaluate_as_files(net, demo_data.test_set, cfg=folder_cfg(net, prepared.data))
            source = f'oqat demo on {prepared.data.name}, after finetuning alone for {preset.finetune_epochs} epoch(s)'
            budgets = ', '.join(f'{p["budget"]:g}' for p in result['chosen'] if p['entry'] == point['entry'])
            save_model_folder(net.cpu(), entries_dir / point['entry'], data=prepared.data,
                              metrics={**measured_metrics(test, prepared.data, source=source), 'holdout_top1': holdout},
                              description=(f'{spec.bits}-bit OQAT subnet searched under {budgets} {search["metric"]}, '
                                           f'then finetuned alone for {preset.finetune_epochs} epoch(s)'),
                              extra_cfg={'supernet': recorded_source(str(supernet_dirs[spec.bits]))})
            _log(f'{point["entry"]}: finetuned, held-out top-1 {point["top1"]:.2f} -> {holdout:.2f} %')
    return records


def _pipeline(out: Path, *, preset: DemoPreset, seed: int, device: str | None,
              stop_after_training: bool, fused_quantizer: bool | None) -> dict[str, Any]:
    """Train, search, publish and test into the (new, empty) folder ``out``."""
    timer = StageTimer()
    ctx = init_distributed(device=device)
    fused = resolve_fused_quantizer(fused_quantizer, ctx.device)
    recipe = demo_recipe(preset)
    _log(f'preset {preset.name}: {preset}')
    _log(f'recipe: batch {recipe.batch_size}, lr {recipe.lr}, {recipe.num_random_subnets} random subnet(s) per step, '
         f'BN calibration {recipe.bn_calibration}')
    with timer.stage('data'):
        demo_data = prepare_demo_data(preset, recipe)
    prepared, data, test_set = demo_data.prepared, demo_data.prepared.data, demo_data.test_set
    _log(f'{data.name}: {len(prepared.train_set)} training images, {len(prepared.holdout_set)} held out, '
         f'{len(test_set)} test images')
    supernet_dirs, supernets, inheritance, training = _train_supernets(
        demo_data, preset=preset, recipe=recipe, out=out, ctx=ctx, seed=seed, timer=timer, fused_quantizer=fused)
    report: dict[str, Any] = {
        'preset': asdict(preset), 'seed': seed, 'data': data.name, 'space': preset.space, 'device': str(ctx.device),
        'quantizer': 'fused' if fused else 'eager',
        'oqatnets_version': oqatnets.__version__, 'inheritance': inheritance, 'training': training,
        'artifacts': {'supernets': {str(b): str(p) for b, p in supernet_dirs.items()}}}
    if stop_after_training:
        report.update(stopped_after='training', timing=timer.summary())
        write_json(out / 'report.json', report)
        return report

    with timer.stage('search'):
        search = run_search(supernets=supernets, data=data, budgets=preset.budgets, metric='bitops', recipe=recipe,
                            out_dir=out / 'search', calib_batches=prepared.calib,
                            holdout_batches=demo_data.search_batches,
                            test_set=None if preset.finetune_epochs else demo_data.test_set, seed=seed,
                            run_info={'supernets': {str(b): recorded_source(str(p)) for b, p in supernet_dirs.items()}})
    finetuned = None
    if preset.finetune_epochs:
        with timer.stage('finetune'):
            finetuned = _finetune_entries(search, supernets, demo_data, preset=preset, recipe=recipe,
                                          entries_dir=out / 'search' / 'entries', work_dir=out / 'finetune', ctx=ctx,
                                          seed=seed, supernet_dirs=supernet_dirs, fused_quantizer=fused)
    rows = _zoo_rows(search, out / 'search' / 'entries', supernet_dirs)
    table_path = out / 'zoo.json'
    table = {'schema': 'oqatnets-zoo', 'schema_version': 1,
             'models': [{k: v for k, v in row.items() if k not in ('folder', 'budget')} for row in rows]}
    write_json(table_path, table)
    shutil.copyfile(out / 'search' / 'pareto.png', out / 'pareto.png')

    with timer.stage('publish_load_test'):
        measured = _publish_and_reload(rows, table_path=table_path, cache_dir=out / 'hub', test_set=demo_data.test_set)
    for row, result in zip(table['models'], measured):  # the figures just measured on the entries loaded back
        row.update(top1=result['top1'], top5=result['top5'],
                   metrics_source=_test_source(preset.finetune_epochs, data=data, images=result['test_images']))
    write_json(table_path, table)
    oqatnets.register_zoo_table(table_path)
    table_md = format_table(measured)
    report.update(
        entries=measured,
        search={'metric': search['metric'],
                'results': [{k: r[k] for k in ('bits', 'chosen', 'front')} for r in search['results']]},
        **({'finetune': finetuned} if finetuned is not None else {}),
        timing=timer.summary(), table_markdown=table_md)
    report['artifacts'].update(zoo_table=str(table_path), hub_cache=str(out / 'hub'), pareto_png=str(out / 'pareto.png'))
    write_json(out / 'report.json', report)
    return report
