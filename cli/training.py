"""Training-facing commands: train supernet, inherit, calibrate, search, finetune.

Each works alone or under ``torchrun --nproc_per_node N -m oqatnets.cli.main …``: training
commands run data-parallel, the others run on rank 0 while the other ranks wait. Only rank 0
writes files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .main import cli


def _recipe(name: str, **overrides: Any):
    from oqatnets.training.presets import get_recipe
    return get_recipe(name).override(**overrides)


def _ctx(device: str | None):
    from oqatnets.training.distributed import init_distributed
    return init_distributed(device=device)


def _finish(ctx) -> None:
    import torch.distributed as dist
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _echo(ctx, data: dict[str, Any]) -> None:
    if ctx.is_main:
        click.echo(json.dumps(data, indent=2))


_device = click.option('--device', type=click.Choice(['cpu', 'cuda']), default=None,
                       help='Default: CUDA (GPU LOCAL_RANK) when available, else CPU.')
_data = click.option('--data', 'data_source', required=True,
                     help='fashion-mnist, mnist, or a folder with train/ and val/ ImageFolder sub-folders.')
_seed = click.option('--seed', type=int, default=0, show_default=True)
_compile = click.option('--compile', 'compile_quantizer', is_flag=True,
                        help='Fuse the LSQ quantizers with torch.compile (inductor), same values; no faster than '
                             'eager on a 2-core CPU (docs/BENCHMARKS.md), and compiling costs minutes at start.')


def _use_compile(compile_quantizer: bool) -> None:
    if compile_quantizer:
        from oqatnets.quant import set_fused_quantizer
        set_fused_quantizer(True)


def _split_of(source: str, holdout: int | None, recipe) -> tuple[int, int]:
    """(holdout images, split seed): explicit, else the training run's, else the recipe's."""
    from oqatnets.training.artifacts import RUN_FILE
    from oqatnets.training.presets import SPLIT_SEED
    run_file = Path(source) / RUN_FILE
    run = json.loads(run_file.read_text()) if run_file.is_file() else {}
    default = run.get('holdout_images', recipe.holdout_images)
    return (default if holdout is None else holdout), run.get('split_seed', SPLIT_SEED)


@cli.group('train')
def train_group() -> None:
    """Joint training of quantized supernets."""


@train_group.command('supernet')
@_data
@click.option('--space', type=click.Choice(['small', 'imagenet']), default='small', show_default=True)
@click.option('--recipe', 'recipe_name', default=None, help='Recipe preset (default: the space name).')
@click.option('--bits', type=int, default=4, show_default=True, help='Bit-width (32 = float).')
@click.option('--epochs', type=int, default=None, help='Quantized epochs (default: the recipe\'s).')
@click.option('--float-epochs', type=int, default=None, help='Float epochs before quantization starts.')
@click.option('--batch-size', type=int, default=None, help='Global batch size (all ranks).')
@click.option('--lr', type=float, default=None)
@click.option('--num-random', type=int, default=None, help='Random subnets per sandwich step.')
@click.option('--holdout', type=int, default=None, help='Training images held out for the search.')
@click.option('--train-images', type=int, default=None, help='Train on only the first N training images.')
@click.option('--eval-images', type=int, default=2000, show_default=True,
              help='Validation images for the per-epoch check of the largest/smallest subnet (0: none).')
@click.option('--init', 'init_source', default=None, help='Start from this model (e.g. local-dir:PATH or a run folder).')
@click.option('--out', required=True, type=click.Path(file_okay=False))
@click.option('--resume', is_flag=True, help='Continue the run in --out exactly where it stopped.')
@click.option('--checkpoint-every', type=int, default=50, show_default=True, help='Steps between checkpoints.')
@click.option('--no-amp', is_flag=True, help='Disable mixed precision on GPU.')
@_compile
@_seed
@_device
def train_supernet_cmd(data_source: str, space: str, recipe_name: str | None, bits: int, epochs: int | None,
                       float_epochs: int | None, batch_size: int | None, lr: float | None, num_random: int | None,
                       holdout: int | None, train_images: int | None, eval_images: int, init_source: str | None,
                       out: str, resume: bool, checkpoint_every: int, no_amp: bool, compile_quantizer: bool, seed: int,
                       device: str | None) -> None:
    """Jointly train a quantized supernet with the sandwich rule; exports OUT/supernet at the end."""
    from oqatnets.quant import FLOAT_BITS, get_bits, set_bits, validate_bits
    from oqatnets.supernet import OQATSupernet
    from oqatnets.training.artifacts import export_trained_supernet, load_supernet, write_run_file
    from oqatnets.training.joint import train_supernet
    from oqatnets.training.prepare import prepare_data
    from oqatnets.training.presets import SPLIT_SEED

    validate_bits(bits)
    _use_compile(compile_quantizer)
    recipe = _recipe(recipe_name or space, batch_size=batch_size, lr=lr, num_random_subnets=num_random,
                     holdout_images=holdout, float_epochs=float_epochs)
    epochs = recipe.epochs if epochs is None else epochs
    ctx = _ctx(device)
    prepared = prepare_data(data_source, holdout_images=recipe.holdout_images, calib_images=recipe.calib_images,
                            calib_batch_size=recipe.calib_batch_size, train_images=train_images)
    data = prepared.data
    if init_source:
        supernet = load_supernet(init_source)
        source_bits = get_bits(supernet)
        if source_bits not in (bits, FLOAT_BITS):
            raise ValueError(f'--init {init_source} is {source_bits}-bit but --bits is {bits}; run '
                             f'`oqat inherit {init_source} DST --bits {bits}` first and --init from DST')
        if supernet.num_classes != data.num_classes:
            supernet.reset_classifier(data.num_classes)
        set_bits(supernet, bits)
    else:
        supernet = OQATSupernet(space=space, bits=bits, num_classes=data.num_classes)
    run_info = {'data': data_source, 'init': init_source, 'holdout_images': recipe.holdout_images,
                'split_seed': SPLIT_SEED, 'train_images_limit': train_images}
    out_dir = Path(out)
    if ctx.is_main and not resume:
        write_run_file(out_dir, supernet, data=data, run_info=run_info)
    val = prepared.val_batches(batch_size=recipe.calib_batch_size, limit=eval_images) if eval_images else None
    result = train_supernet(supernet=supernet, train_set=prepared.train_set, recipe=recipe, bits=bits,
                            epochs=epochs, float_epochs=recipe.float_epochs, out_dir=out_dir, ctx=ctx, resume=resume,
                            seed=seed, checkpoint_every=checkpoint_every, amp=not no_amp,
                            calib_batches=prepared.calib if val is not None else None, eval_batches=val,
                            run_info=run_info)
    if ctx.is_main:
        export_trained_supernet(supernet, out_dir, data=data, bits=bits, last_epoch=result.summary['last_epoch'])
    _echo(ctx, result.summary)
    _finish(ctx)


@cli.command('inherit')
@click.argument('src')
@click.argument('dst', type=click.Path(file_okay=False))
@click.option('--bits', type=int, required=True, help='Target bit-width, below the source\'s.')
def inherit_cmd(src: str, dst: str, bits: int) -> None:
    """Bit inheritance: write DST, the supernet SRC at --bits with every step size doubled per bit dropped."""
    from oqatnets.quant import get_bits
    from oqatnets.training.artifacts import export_model, load_model
    from oqatnets.training.inherit import inherit_bits
    model = load_model(src)
    child = inherit_bits(model, bits)
    export_model(child, dst, description=f'{bits}-bit OQAT model inherited from the {get_bits(model)}-bit {src}',
                 extra_cfg={'supernet': str(src)})
    click.echo(f'wrote {dst}: {bits}-bit, step sizes x{2 ** (get_bits(model) - bits)}')


@cli.command('calibrate')
@click.argument('model_source')
@_data
@click.option('--out', required=True, type=click.Path(file_okay=False))
@click.option('--spec', default=None, help='Subnet of a supernet to extract (default: the largest).')
@click.option('--calib-images', type=int, default=2000, show_default=True)
@click.option('--batch-size', type=int, default=250, show_default=True)
@click.option('--holdout', type=int, default=None, help='Held-out images to exclude (default: the recipe\'s).')
@click.option('--eval/--no-eval', 'do_eval', default=True, help='Evaluate on the validation split afterwards.')
@_device
def calibrate_cmd(model_source: str, data_source: str, out: str, spec: str | None, calib_images: int,
                  batch_size: int, holdout: int | None, do_eval: bool, device: str | None) -> None:
    """Recalibrate BN statistics of MODEL (or of one subnet of a supernet) and export it to OUT."""
    from oqatnets.evaluation import evaluate
    from oqatnets.spec import SubnetSpec
    from oqatnets.training.artifacts import export_model, load_model
    from oqatnets.training.calibrate import calibrate_model, calibrated_subnet
    from oqatnets.training.prepare import prepare_data
    ctx = _ctx(device)
    if ctx.is_main:
        model = load_model(model_source)
        recipe = _recipe(model.space.name if model.space.name in ('small', 'imagenet') else 'imagenet')
        holdout_images, split_seed = _split_of(model_source, holdout, recipe)
        prepared = prepare_data(data_source, holdout_images=holdout_images, calib_images=calib_images,
                                calib_batch_size=batch_size, split_seed=split_seed)
        model.to(ctx.device)
        if hasattr(model, 'active_spec'):
            chosen = SubnetSpec.parse(spec) if spec else model.space.largest(model.bits)
            net = calibrated_subnet(model, chosen, calib_batches=prepared.calib)
        else:
            if spec:
                raise ValueError(f'{model_source} is a static network; --spec only applies to supernets')
            net = calibrate_model(model, calib_batches=prepared.calib, resolution=model.spec.resolution).eval()
        metrics = None
        if do_eval:
            result = evaluate(net, prepared.val_batches(batch_size=batch_size), resolution=net.spec.resolution)
            metrics = {'top1': result['top1'], 'top5': result['top5'],
                       'source': f'oqat calibrate ({calib_images} training images), {prepared.data.name} val'}
        export_model(net.cpu(), out, data=prepared.data, metrics=metrics)
        _echo(ctx, {'out': out, 'spec': str(net.spec), **(metrics or {})})
    _finish(ctx)


@cli.command('search')
@click.argument('supernets', nargs=-1, required=True)
@_data
@click.option('--budgets', default='auto:3', show_default=True,
              help='Comma-separated budgets (G BitOPs or M MACs), or auto:N spread over each space\'s range.')
@click.option('--budget-metric', type=click.Choice(['bitops', 'macs']), default='bitops', show_default=True)
@click.option('--out', required=True, type=click.Path(file_okay=False))
@click.option('--population', type=int, default=None)
@click.option('--generations', type=int, default=None)
@click.option('--holdout', type=int, default=None, help='Held-out images (default: the training run\'s).')
@click.option('--holdout-eval', type=int, default=None, help='Use only the first N held-out images as fitness.')
@click.option('--calib-images', type=int, default=None)
@click.option('--export/--no-export', default=True, help='Export each chosen subnet as a zoo entry folder.')
@click.option('--test-eval/--no-test-eval', default=True, help='Evaluate chosen subnets on the val/test split.')
@_seed
@_device
def search_cmd(supernets: tuple[str, ...], data_source: str, budgets: str, budget_metric: str, out: str,
               population: int | None, generations: int | None, holdout: int | None, holdout_eval: int | None,
               calib_images: int | None, export: bool, test_eval: bool, seed: int, device: str | None) -> None:
    """Evolutionary search of one or more SUPERNETS (one per bit-width) under several budgets."""
    from torch.utils.data import Subset
    from oqatnets.training.artifacts import load_supernet
    from oqatnets.training.pareto import run_search
    from oqatnets.training.prepare import prepare_data
    ctx = _ctx(device)
    if ctx.is_main:
        models = [load_supernet(s).to(ctx.device) for s in supernets]
        bits = [m.bits for m in models]
        if len(set(bits)) != len(bits):
            raise ValueError(f'give one supernet per bit-width; got bit-widths {bits}')
        recipe = _recipe(models[0].space.name if models[0].space.name in ('small', 'imagenet') else 'imagenet',
                         population=population, generations=generations, calib_images=calib_images)
        holdout_images, split_seed = _split_of(supernets[0], holdout, recipe)
        prepared = prepare_data(data_source, holdout_images=holdout_images, calib_images=recipe.calib_images,
                                calib_batch_size=recipe.calib_batch_size, split_seed=split_seed)
        if holdout_eval:
            prepared.holdout_set = Subset(prepared.holdout_set, range(min(holdout_eval, len(prepared.holdout_set))))
        report = run_search(
            supernets=models, data=prepared.data, budgets=budgets, metric=budget_metric, recipe=recipe,
            out_dir=out, calib_batches=prepared.calib,
            holdout_batches=prepared.holdout_batches(batch_size=recipe.calib_batch_size),
            test_batches=prepared.val_batches(batch_size=recipe.calib_batch_size) if test_eval else None,
            seed=seed, export=export,
            run_info={'supernets': {str(m.bits): s for m, s in zip(models, supernets)},
                      'holdout_images': len(prepared.holdout_set)})
        rows = [{k: p.get(k) for k in ('entry', 'bits', 'budget', 'resolution', 'macs', 'bitops', 'top1', 'test_top1')}
                for r in report['results'] for p in r['chosen']]
        _echo(ctx, {'out': out, 'chosen': rows})
    _finish(ctx)


@cli.command('finetune')
@click.argument('model_source')
@_data
@click.option('--out', required=True, type=click.Path(file_okay=False))
@click.option('--epochs', type=int, default=None)
@click.option('--lr', type=float, default=None)
@click.option('--batch-size', type=int, default=None)
@click.option('--resolution', type=int, default=None, help='Input size (default: the model\'s).')
@click.option('--teacher', default=None, help='Distil from this model (same inputs).')
@click.option('--kd-ratio', type=float, default=1.0, show_default=True)
@click.option('--train-images', type=int, default=None)
@click.option('--resume', is_flag=True)
@click.option('--checkpoint-every', type=int, default=50, show_default=True)
@click.option('--no-amp', is_flag=True)
@_compile
@_seed
@_device
def finetune_cmd(model_source: str, data_source: str, out: str, epochs: int | None, lr: float | None,
                 batch_size: int | None, resolution: int | None, teacher: str | None, kd_ratio: float,
                 train_images: int | None, resume: bool, checkpoint_every: int, no_amp: bool,
                 compile_quantizer: bool, seed: int, device: str | None) -> None:
    """Finetune a static subnet or zoo model on a data set (any number of classes), bits kept."""
    _use_compile(compile_quantizer)
    from oqatnets.training.artifacts import export_model, load_model
    from oqatnets.training.finetune import finetune
    from oqatnets.training.prepare import prepare_data
    ctx = _ctx(device)
    prepared = prepare_data(data_source, holdout_images=0, calib_images=1, calib_batch_size=1,
                            train_images=train_images)
    data = prepared.data
    model = load_model(model_source, num_classes=data.num_classes)
    recipe = _recipe(model.space.name if model.space.name in ('small', 'imagenet') else 'imagenet',
                     batch_size=batch_size)
    resolution = resolution or model.spec.resolution
    result = finetune(model=model, train_set=prepared.train_set, recipe=recipe,
                      epochs=epochs or recipe.finetune_epochs, resolution=resolution, out_dir=out, ctx=ctx, lr=lr,
                      teacher=load_model(teacher, num_classes=data.num_classes) if teacher else None,
                      kd_ratio=kd_ratio, resume=resume, seed=seed, checkpoint_every=checkpoint_every,
                      amp=not no_amp, eval_batches=prepared.val_batches(batch_size=recipe.calib_batch_size),
                      run_info={'model': model_source, 'data': data_source, 'teacher': teacher})
    if ctx.is_main:
        last = result.summary['last_epoch'] or {}
        metrics = {'top1': last.get('val_top1'), 'top5': last.get('val_top5'),
                   'source': f'oqat finetune on {data.name}, val split'}
        export_model(model.cpu(), Path(out) / 'model', data=data, metrics=metrics,
                     extra_cfg={'input_size': [3, resolution, resolution]})
    _echo(ctx, result.summary)
    _finish(ctx)


@cli.command('demo')
@click.option('--preset', type=click.Choice(['tiny', 'default', 'full']), default='default', show_default=True,
              help='tiny: a test-sized run; default: 2 CPU cores in under 20 minutes; full: for a GPU.')
@click.option('--out', default='runs/demo', show_default=True, type=click.Path(file_okay=False))
@click.option('--overwrite', is_flag=True, help='Replace what an earlier run left in --out.')
@_seed
@_device
def demo_cmd(preset: str, out: str, overwrite: bool, seed: int, device: str | None) -> None:
    """Regenerate a mini OQAT zoo on Fashion-MNIST: train 4→3→2-bit supernets, search, publish, reload, test."""
    from oqatnets.training.demo import run_demo
    report = run_demo(out, preset=preset, seed=seed, device=device, overwrite=overwrite)
    click.echo(f"\nOQAT mini zoo on {report['data']} ({report['preset']['name']} preset, {report['device']}):\n")
    click.echo(report['table_markdown'])
    timing = report['timing']
    total = sum(stage['seconds'] for stage in timing.values())
    click.echo(f"\ntotal {total / 60:.1f} min; report: {Path(out) / 'report.json'}, "
               f"Pareto plot: {Path(out) / 'pareto.png'}, zoo table: {Path(out) / 'zoo.json'}")
