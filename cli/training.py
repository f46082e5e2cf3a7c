"""Training-facing commands: train supernet, inherit, calibrate, search, finetune.

Each works alone or under ``torchrun --nproc_per_node N -m oqatnets.cli.main …``: training
commands run data-parallel, the others run on rank 0 while the other ranks wait. Only rank 0
writes files.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import BadUsage
from .options import calibration_mode_option, given, output_path, overwrite_option

# oqatnets.training.recipes' FLOAT_SAMPLINGS and RESOLUTION_SAMPLINGS and the spaces, spelled out so that `oqat --help`
# imports no torch (tests/test_training_recipe.py checks they agree).
FLOAT_SAMPLINGS = ('sandwich', 'largest')
SPACE_NAMES = ('imagenet', 'small', 'small_signed', 'small_signed_28')  # oqatnets.spec.list_spaces()
RESOLUTION_SAMPLINGS = ('per_subnet', 'per_step')


def _recipe(name: str, **overrides: Any):
    from oqatnets.training.recipes import get_recipe
    return get_recipe(name).override(**overrides)


def _recipe_for(space: str, **overrides: Any):
    """The recipe of a model's space (``imagenet``'s for a custom one), with CLI overrides."""
    from oqatnets.training.recipes import recipe_for_space
    return recipe_for_space(space).override(**overrides)


def _ctx(device: str | None, *, rank0_only: bool = False):
    """This process's place under torchrun; ``rank0_only`` work joins no process group (see init_distributed)."""
    from oqatnets.training.distributed import init_distributed
    ctx = init_distributed(device=device, join_group=not rank0_only)
    if rank0_only and not ctx.is_main:
        click.echo(f'rank {ctx.rank}: this command runs on rank 0 only; nothing to do here', err=True)
    return ctx


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
_seed = click.option('--seed', type=int, default=0, show_default=True,
                     help='Seed of the initial weights, subnet sampling and data order.')
_compile = click.option('--compile/--no-compile', 'compile_quantizer', default=None,
                        help='Train through the fused one-pass LSQ kernels (CPU: built with the C compiler at start, '
                             'same outputs, about 1.1x faster per step; CUDA: torch.compile) or the eager quantizer. '
                             'Default: fused on the CPU when a C compiler is found, eager elsewhere.')


_augment = click.option('--augment/--no-augment', default=None,
                        help="Random crop and flip of the training images (default: the recipe's; small: off).")
_resume = click.option('--resume', 'resume_from', is_flag=False, flag_value='.', default=None, metavar='[PATH]',
                       help='Continue a run exactly where it stopped: the one in --out, or the run folder (or its '
                            'checkpoint.pt) at PATH, copied into an empty --out first.')


def _run_options(f: Callable) -> Callable:
    """The options every training run takes: --resume, --checkpoint-every, --no-amp, --compile, --augment,
    the loop options, --seed and --device."""
    for option in (_device, _seed, _loop_options, _augment, _compile,
                   click.option('--no-amp', is_flag=True, help='Disable mixed precision on GPU.'),
                   click.option('--checkpoint-every', type=click.IntRange(min=0), default=50, show_default=True,
                                help='Steps between checkpoints.'),
                   _resume):
        f = option(f)
    return f


def _prepare_out(out: str, resume_from: str | None, *, final: str) -> tuple[bool, Path | None]:
    """Validate --out, the folder ``final`` the run writes into it when it ends, and --resume PATH, before anything
    is written: (whether the run resumes, the run folder to copy into --out first, if another)."""
    from oqatnets._io import check_output, occupied
    from oqatnets.training.checkpoint import CHECKPOINT_NAME
    check_output(out, folder=True)
    check_output(Path(out) / final, folder=True)  # a link or a file there is refused now, not after training
    if resume_from is None:
        if (Path(out) / CHECKPOINT_NAME).exists():
            raise BadUsage(f'{out} already holds a checkpoint; pass --resume to continue it or choose another --out')
        if occupied(Path(out) / final, folder=True):
            raise BadUsage(f'{Path(out) / final} already exists and a new run would replace it; choose another --out')
        return False, None
    source = Path(out) if resume_from == '.' else Path(resume_from)
    source = source.parent if source.name == CHECKPOINT_NAME else source
    if not (source / CHECKPOINT_NAME).is_file():
        raise BadUsage(f'{source} holds no checkpoint to resume; drop --resume to start a new run there')
    if source.resolve() != Path(out).resolve():
        if int(os.environ.get('WORLD_SIZE', '1')) > 1:
            raise BadUsage(f'--resume {resume_from} into another --out runs on one process; copy the run folder '
                           'to --out first, then pass --resume alone')
        if occupied(Path(out), folder=True):
            raise BadUsage(f'--resume {resume_from} copies that run into --out, but {out} is not empty; '
                           'choose an empty or new --out')
        return True, source
    return True, None


def _adopt_run(source: Path | None, out: str) -> None:
    """Copy the files of the run folder ``source`` into the (empty) --out, whole, so the run resumes there."""
    from oqatnets._io import atomic_dir
    if source is None:
        return
    with atomic_dir(out) as tmp:
        for entry in source.iterdir():
            if entry.is_file():
                (tmp / entry.name).write_bytes(entry.read_bytes())


def default_workers() -> int:
    """DataLoader workers for folder data sets: the CPUs of this process less one for the main loop, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
    return max(0, min(8, cpus - 1))


def _timm_optimizer(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--opt``: an optimizer name timm knows (``lookahead_`` prefix allowed), checked before anything runs."""
    if value == 'sgd':
        return value
    from timm.optim import list_optimizers
    if value.lower().split('_')[-1] not in list_optimizers():
        raise click.BadParameter(f'{value!r} is not an optimizer timm knows; pass sgd, adamw, lamb or another name '
                                 'of timm.optim.list_optimizers()')
    return value


def _loop_options(f: Callable) -> Callable:
    """--workers, --opt, --clip-grad, --model-ema and --tensorboard, shared by the training commands."""
    f = click.option('--model-ema', 'ema_decay', type=click.FloatRange(min=0, max=1, max_open=True), default=None,
                     help="Keep timm's ModelEmaV3 of the weights with this decay (e.g. 0.9998) and save it at the end.")(f)
    f = click.option('--opt', 'optimizer', default='sgd', show_default=True, callback=_timm_optimizer,
                     help="Optimizer: the recipe's SGD, or any name timm.optim.create_optimizer_v2 knows "
                          '(adamw, lamb …).')(f)
    f = click.option('--tensorboard', is_flag=True,
                     help="Also log each epoch to OUT/tensorboard (pip install 'oqatnets[tensorboard]').")(f)
    f = click.option('--clip-grad', type=click.FloatRange(min=0, min_open=True), default=None,
                     help='Clip the global gradient norm to this value (default: no clipping).')(f)
    f = click.option('--workers', type=click.IntRange(min=0), default=None,
                     help='DataLoader worker processes for folder data sets (default: CPUs - 1, at most 8; '
                          'in-memory data sets use none).')(f)
    return f


def _loop_settings(ctx, prepared, *, workers: int | None, clip_grad: float | None, tensorboard: bool,
                   ema_decay: float | None, optimizer: str) -> dict[str, Any]:
    workers = default_workers() if workers is None else workers
    return {'num_workers': 0 if prepared.in_memory else workers, 'pin_memory': ctx.device.type == 'cuda',
            'clip_grad': clip_grad, 'tensorboard': tensorboard, 'ema_decay': ema_decay, 'optimizer': optimizer}


def _console_logging(ctx) -> None:
    """One line per epoch on the console (rank 0), through logging instead of print."""
    if ctx.is_main:
        logging.basicConfig(level=logging.INFO, format='%(message)s')


def _split_of(source: str, holdout: int | None, recipe, *, within_run: bool = False) -> tuple[int, int]:
    """(holdout images, split seed): explicit, else the training run's, else the recipe's. ``within_run``: an
    explicit holdout larger than the run's is refused (its extra images were trained on)."""
    from oqatnets.training.artifacts import RUN_FILE, read_run_file
    from oqatnets.training.recipes import SPLIT_SEED
    run = read_run_file(source) if (Path(source) / RUN_FILE).is_file() else {}
    default = run.get('holdout_images', recipe.holdout_images)
    trained = run.get('holdout_images')
    if within_run and holdout is not None and trained is not None and holdout > trained:
        raise BadUsage(f'--holdout {holdout}: {source} held out {trained} images in training, so '
                       f'{holdout - trained} of these were trained on; pass at most {trained} (or drop --holdout)')
    return (default if holdout is None else holdout), run.get('split_seed', SPLIT_SEED)


@click.group('train')
def train_group() -> None:
    """Joint training of quantized supernets."""


@click.command('supernet')
@_data
@click.option('--space', type=click.Choice(SPACE_NAMES), default='small', show_default=True,
              help="Search space of the supernet (small: 24-32 px data sets; small_signed: the same with signed "
                   "block inputs; small_signed_28: that at 20-28 px, the demo's; imagenet: the paper's).")
@click.option('--recipe', 'recipe_name', default=None, help='Recipe preset (default: the space name).')
@click.option('--bits', type=int, default=4, show_default=True, help='Bit-width (32 = float).')
@click.option('--epochs', type=click.IntRange(min=0), default=None,
              help="Quantized epochs, after the --float-epochs (default: the recipe's).")
@click.option('--float-epochs', type=click.IntRange(min=0), default=None,
              help="Float epochs before quantization starts (default: the recipe's; 0: none).")
@click.option('--float-sampling', type=click.Choice(FLOAT_SAMPLINGS), default=None,
              help="What the float epochs train: the sandwich, or the largest subnet alone (progressive "
                   "shrinking's first stage; default: the recipe's).")
@click.option('--resolution-sampling', type=click.Choice(RESOLUTION_SAMPLINGS), default=None,
              help="The sandwich's resolutions: largest at max, smallest at min, random ones their own "
                   "(per_subnet), or one drawn per step for all (per_step, OFA's; default: the recipe's).")
@click.option('--quant-lr-factor', type=click.FloatRange(min=0, min_open=True), default=None,
              help='Peak LR of the quantized phase after the float one, relative to --lr.')
@click.option('--step-lr-factor', type=click.FloatRange(min=0, min_open=True), default=None,
              help="LR of the LSQ step sizes relative to the other parameters' (default: the recipe's).")
@click.option('--batch-size', type=click.IntRange(min=1), default=None, help='Global batch size (all ranks).')
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate (default: the recipe's).")
@click.option('--num-random', type=click.IntRange(min=0), default=None, help='Random subnets per sandwich step.')
@click.option('--holdout', type=click.IntRange(min=0), default=None, help='Training images held out for the search.')
@click.option('--train-images', type=click.IntRange(min=1), default=None,
              help='Train on only the first N training images.')
@click.option('--eval-images', type=click.IntRange(min=0), default=2000, show_default=True,
              help='Validation images for the per-epoch check of the largest/smallest subnet (0: none).')
@click.option('--init', 'init_source', default=None,
              help='Start from this model (local-dir:PATH, a run folder, or ofa:PATH for the float OFA supernet).')
@click.option('--out', required=True, type=click.Path(file_okay=False),
              help='Run folder (checkpoint, metrics, the saved supernet).')
@_run_options
def train_supernet_cmd(data_source: str, space: str, recipe_name: str | None, bits: int, epochs: int | None,
                       float_epochs: int | None, float_sampling: str | None, resolution_sampling: str | None,
                       quant_lr_factor: float | None, step_lr_factor: float | None, batch_size: int | None,
                       lr: float | None, num_random: int | None,
                       holdout: int | None, train_images: int | None, eval_images: int, init_source: str | None,
                       out: str, resume_from: str | None, checkpoint_every: int, no_amp: bool, compile_quantizer: bool | None,
                       augment: bool | None, workers: int | None, clip_grad: float | None, tensorboard: bool, ema_decay: float | None,
                       optimizer: str, seed: int,
                       device: str | None) -> None:
    """Jointly train a quantized supernet with the sandwich rule; saves OUT/supernet at the end."""
    import torch

    from oqatnets.quant import FLOAT_BITS, get_bits, set_bits, validate_bits
    from oqatnets.supernet import OQATSupernet
    from oqatnets.training.artifacts import SUPERNET_DIR, load_supernet, read_run_file, save_trained_supernet, write_run_file
    from oqatnets.training.datasets import check_channels, prepare_data
    from oqatnets.training.joint import train_supernet
    from oqatnets.training.loop import LoopSettings, resolve_fused_quantizer
    from oqatnets.training.recipes import SPLIT_SEED

    validate_bits(bits)
    if init_source and init_source.startswith('ofa:') and space != 'imagenet':
        raise BadUsage('--init ofa:PATH is the OFA MobileNetV3 supernet: pass --space imagenet')
    initial = None
    if init_source and not init_source.startswith('ofa:'):
        initial = load_supernet(init_source)
        check_channels(initial, name=f'--init {init_source}')
        if given('space') and initial.space.name != space:
            raise BadUsage(f'--init {init_source} is a supernet of the {initial.space.name!r} space but --space is '
                           f'{space!r}; drop --space (the supernet\'s space is used)')
        space = initial.space.name
        source_bits = get_bits(initial)
        if source_bits not in (bits, FLOAT_BITS):
            how = (f'run `oqat inherit {init_source} DST --bits {bits}` first and --init from DST' if bits < source_bits
                   else f'bit inheritance goes down (4 → 3 → 2); start a {bits}-bit supernet from float or {bits}-bit weights')
            raise BadUsage(f'--init {init_source} is {source_bits}-bit but --bits is {bits}; {how}')
    recipe = (_recipe(recipe_name) if recipe_name else _recipe_for(space)).override(
        batch_size=batch_size, lr=lr, num_random_subnets=num_random, holdout_images=holdout,
        float_epochs=float_epochs, float_sampling=float_sampling, resolution_sampling=resolution_sampling,
        quant_lr_factor=quant_lr_factor, step_lr_factor=step_lr_factor, augment=augment)
    epochs = recipe.epochs if epochs is None else epochs
    if epochs + recipe.float_epochs < 1:
        raise BadUsage(f'nothing to train: --epochs {epochs} and --float-epochs {recipe.float_epochs}; '
                       'give at least one epoch')
    resume, adopt = _prepare_out(out, resume_from, final=SUPERNET_DIR)  # validate everything before run.json is written
    ctx = _ctx(device)
    _console_logging(ctx)
    prepared = prepare_data(data_source, holdout_images=recipe.holdout_images, calib_images=recipe.calib_images,
                            calib_batch_size=recipe.calib_batch_size, train_images=train_images,
                            num_workers=default_workers() if workers is None else workers)
    data = prepared.data
    if resume:  # search and calibrate read it later: a missing or broken one is refused now, not after training
        read_run_file(adopt or Path(out))
    if init_source and init_source.startswith('ofa:'):
        from oqatnets.training.ofa_init import load_ofa_supernet
        supernet = load_ofa_supernet(init_source[len('ofa:'):], bits=bits, num_classes=data.num_classes)
    elif initial is not None:
        supernet = initial
        if supernet.num_classes != data.num_classes:
            supernet.reset_classifier(data.num_classes)
        set_bits(supernet, bits)
    else:
        with torch.random.fork_rng(devices=[]):  # --seed fixes the initial weights; the global stream is left as it was
            torch.manual_seed(seed)
            supernet = OQATSupernet(space=space, bits=bits, num_classes=data.num_classes)
    fused = resolve_fused_quantizer(compile_quantizer, ctx.device)  # refused here, before anything is written
    LoopSettings(epochs=epochs, batch_size=recipe.batch_size // ctx.world_size).steps_per_epoch(
        len(prepared.train_set), ctx.world_size)  # a set too small for one batch: refused before run.json
    run_info = {'data': data_source, 'init': init_source, 'holdout_images': recipe.holdout_images,
                'split_seed': SPLIT_SEED, 'train_images_limit': train_images}
    out_dir = Path(out)
    _adopt_run(adopt, out)
    if ctx.is_main and not resume:
        write_run_file(out_dir, supernet, data=data, run_info=run_info)
    val = prepared.val_batches(batch_size=recipe.calib_batch_size, limit=eval_images) if eval_images else None
    result = train_supernet(supernet=supernet, train_set=prepared.training_set(augment=recipe.augment), recipe=recipe,
                            bits=bits, epochs=epochs, float_epochs=recipe.float_epochs, out_dir=out_dir, ctx=ctx,
                            resume=resume, seed=seed, checkpoint_every=checkpoint_every, amp=not no_amp,
                            fused_quantizer=fused,
                            calib_batches=prepared.calib if val is not None else None, eval_batches=val,
                            run_info=run_info,
                            loop_options=_loop_settings(ctx, prepared, workers=workers, clip_grad=clip_grad,
                                                        tensorboard=tensorboard, ema_decay=ema_decay,
                                                        optimizer=optimizer))
    if ctx.is_main:
        save_trained_supernet(supernet, out_dir, data=data, bits=bits, last_epoch=result.summary['last_epoch'],
                              eval_images=eval_images or 0)
    _echo(ctx, result.summary)
    _finish(ctx)


@click.command('inherit')
@click.argument('src')
@click.argument('dst', type=click.Path(file_okay=False))
@click.option('--bits', type=int, required=True, help='Target bit-width, below the source\'s.')
@click.option('--json', 'as_json', is_flag=True, help='Print the result as JSON.')
@overwrite_option
def inherit_cmd(src: str, dst: str, bits: int, as_json: bool, overwrite: bool) -> None:
    """Bit inheritance: write DST, the supernet SRC at --bits with every step size doubled per bit dropped."""
    from oqatnets.quant import get_bits
    from oqatnets.supernet import OQATSupernet
    from oqatnets.training.artifacts import load_model, recorded_source, save_model_folder
    from oqatnets.training.inherit import inherit_bits
    output_path(dst, folder=True, overwrite=overwrite)
    model = load_model(src)
    child = inherit_bits(model, bits)
    save_model_folder(child, dst, description=f'{bits}-bit OQAT model inherited from the {get_bits(model)}-bit {src}',
                      extra_cfg={'supernet': recorded_source(src)} if isinstance(model, OQATSupernet) else None)
    scale = 2 ** (get_bits(model) - bits)
    if as_json:
        click.echo(json.dumps({'folder': str(dst), 'bits': bits, 'source_bits': get_bits(model), 'step_scale': scale}))
    else:
        click.echo(f'wrote {dst}: {bits}-bit, step sizes x{scale}')


@click.command('calibrate')
@click.argument('model_source')
@_data
@click.option('--out', required=True, type=click.Path(file_okay=False), help='Folder of the calibrated model.')
@click.option('--spec', default=None, help='Subnet of a supernet to extract (default: the largest).')
@click.option('--calib-images', type=click.IntRange(min=1), default=2000, show_default=True,
              help='Training images used to recalibrate BN statistics.')
@click.option('--batch-size', type=click.IntRange(min=1), default=250, show_default=True, help='Images per batch.')
@calibration_mode_option
@click.option('--holdout', type=click.IntRange(min=0), default=None,
              help='Held-out images to exclude (default: the recipe\'s).')
@click.option('--eval/--no-eval', 'do_eval', default=True, help='Evaluate on the validation split afterwards.')
@overwrite_option
@_device
def calibrate_cmd(model_source: str, data_source: str, out: str, spec: str | None, calib_images: int,
                  batch_size: int, calibration_mode: str | None, holdout: int | None, do_eval: bool, overwrite: bool,
                  device: str | None) -> None:
    """Recalibrate BN statistics of MODEL (or of one subnet of a supernet) and save it to OUT."""
    from oqatnets.spec import SubnetSpec
    from oqatnets.supernet import OQATSupernet
    from oqatnets.training.artifacts import RUN_FILE, load_model, measured_metrics, recorded_source, save_model_folder
    from oqatnets.training.calibrate import calibrate_model, calibrated_subnet
    from oqatnets.training.datasets import (
        calibration_batches,
        cfg_view,
        check_channels,
        check_classes,
        evaluate_as_files,
        prepare_data,
    )
    output_path(out, folder=True, overwrite=overwrite)
    ctx = _ctx(device, rank0_only=True)
    if ctx.is_main:
        model = load_model(model_source)
        check_channels(model, name=model_source)
        recipe = _recipe_for(model.space.name)
        holdout_images, split_seed = _split_of(model_source, holdout, recipe)
        from_run = (Path(model_source) / RUN_FILE).is_file()  # a training run's split is a fact, not a default
        prepared = prepare_data(data_source, holdout_images=holdout_images, calib_images=calib_images,
                                calib_batch_size=batch_size, split_seed=split_seed,
                                holdout_adapts=holdout is None and not from_run)
        check_classes(model, prepared.data, name=model_source)
        available = len(prepared.train_set)
        if calib_images > available and given('calib_images'):
            raise BadUsage(f'--calib-images {calib_images}: {data_source} has {available} training images outside the '
                           f'held-out split; pass at most that (or a lower --holdout)')
        calib_images = min(calib_images, available)
        model.to(ctx.device)
        mode = calibration_mode or recipe.bn_calibration
        if spec and not isinstance(model, OQATSupernet):
            raise BadUsage(f'{model_source} is a static network; --spec only applies to supernets')
        chosen = (SubnetSpec.parse(spec) if spec else model.space.largest(model.bits)) \
            if isinstance(model, OQATSupernet) else model.spec
        # BN only: the model keeps its data config, and calibration and test images go through its transform
        cfg = {**model.pretrained_cfg, 'input_size': [model.in_chans, chosen.resolution, chosen.resolution]}
        calib = calibration_batches(cfg_view(prepared.train_set, cfg), num_images=calib_images, batch_size=batch_size,
                                    in_memory=prepared.in_memory)
        if isinstance(model, OQATSupernet):
            net = calibrated_subnet(model, chosen, calib_batches=calib, mode=mode)
        else:
            net = calibrate_model(model, calib_batches=calib, resolution=chosen.resolution, mode=mode).eval()
        metrics = None
        if do_eval:
            result = evaluate_as_files(net, prepared.data.val, cfg=cfg, batch_size=batch_size)
            metrics = measured_metrics(result, prepared.data, source=f'oqat calibrate on {prepared.data.name} '
                                                                     f'({calib_images} training images, {mode} mode)')
        local = Path(model_source.removeprefix('local-dir:')).exists()  # else the subnet names its parent's hub id
        parent = {'supernet': recorded_source(model_source)} if isinstance(model, OQATSupernet) and local else {}
        save_model_folder(net.cpu(), out, metrics=metrics, extra_cfg={'dataset': prepared.data.name, **parent})
        _echo(ctx, {'out': out, 'spec': str(net.spec), 'holdout': len(prepared.split.holdout), **(metrics or {})})
    _finish(ctx)


@click.command('search')
@click.argument('supernets', nargs=-1, required=True)
@_data
@click.option('--budgets', default='auto:3', show_default=True,
              help='Comma-separated budgets (G BitOPs or M MACs), or auto:N spread over each space\'s range.')
@click.option('--budget-metric', type=click.Choice(['bitops', 'macs']), default='bitops', show_default=True,
              help='What the budgets limit: BitOPs (G) or MACs (M).')
@click.option('--out', required=True, type=click.Path(file_okay=False), help='Folder of the search report and the chosen entries.')
@click.option('--population', type=click.IntRange(min=2), default=None,
              help="Subnets per generation (default: the recipe's).")
@click.option('--generations', type=click.IntRange(min=0), default=None,
              help="Evolution rounds (default: the recipe's).")
@click.option('--holdout', type=click.IntRange(min=1), default=None,
              help='Held-out images (default: the training run\'s).')
@click.option('--holdout-eval', type=click.IntRange(min=1), default=None,
              help='Use only the first N held-out images as fitness.')
@click.option('--calib-images', type=click.IntRange(min=1), default=None,
              help="BN-calibration images per candidate (default: the recipe's).")
@click.option('--save-entries/--no-save-entries', 'save_entries', default=True, help='Save each chosen subnet as a zoo-entry folder.')
@click.option('--test-eval/--no-test-eval', default=True, help='Evaluate chosen subnets on the val/test split.')
@overwrite_option
@click.option('--compile/--no-compile', 'compile_quantizer', default=None,
              help='Evaluate the candidates through the fused one-pass LSQ kernel (CPU only; built with the C compiler '
                   'at start; the same values, at most a few percent faster) or the eager quantizer. '
                   'Default: fused on the CPU when a C compiler is found.')
@_seed
@_device
def search_cmd(supernets: tuple[str, ...], data_source: str, budgets: str, budget_metric: str, out: str,
               population: int | None, generations: int | None, holdout: int | None, holdout_eval: int | None,
               calib_images: int | None, save_entries: bool, test_eval: bool, overwrite: bool, compile_quantizer: bool | None,
               seed: int, device: str | None) -> None:
    """Evolutionary search of one or more SUPERNETS (one per bit-width) under several budgets."""
    from torch.utils.data import Subset

    from oqatnets.quant import set_fused_quantizer
    from oqatnets.training.artifacts import load_supernet, recorded_source
    from oqatnets.training.datasets import check_channels, check_classes, prepare_data
    from oqatnets.training.evolution import resolve_budgets
    from oqatnets.training.loop import resolve_fused_quantizer
    from oqatnets.training.search import run_search
    output_path(out, folder=True, overwrite=overwrite)
    ctx = _ctx(device, rank0_only=True)
    if compile_quantizer and ctx.device.type != 'cpu':
        raise BadUsage('--compile: evaluation runs the fused kernel on the CPU only; drop --compile or use --device cpu')
    fused = ctx.device.type == 'cpu' and resolve_fused_quantizer(compile_quantizer, ctx.device)
    if ctx.is_main:
        models = [set_fused_quantizer(load_supernet(s).to(ctx.device), fused) for s in supernets]
        for source, model in zip(supernets, models):
            check_channels(model, name=source)
        bits = [m.bits for m in models]
        if len(set(bits)) != len(bits):
            raise BadUsage(f'give one supernet per bit-width; got bit-widths {bits}')
        for model in models:  # --budgets checked before the data is read
            resolve_budgets(budgets, space=model.space, bits=model.bits, metric=budget_metric, num_classes=model.num_classes)
        recipe = _recipe_for(models[0].space.name,
                         population=population, generations=generations, calib_images=calib_images)
        holdout_images, split_seed = _split_of(supernets[0], holdout, recipe, within_run=True)
        prepared = prepare_data(data_source, holdout_images=holdout_images, calib_images=recipe.calib_images,
                                calib_batch_size=recipe.calib_batch_size, split_seed=split_seed)
        for source, model in zip(supernets, models):
            check_classes(model, prepared.data, name=source)
        if holdout_eval and holdout_eval > len(prepared.holdout_set):
            raise BadUsage(f'--holdout-eval {holdout_eval}: there are {len(prepared.holdout_set)} held-out images; '
                           'pass at most that (or drop it)')
        if calib_images and calib_images > len(prepared.train_set):
            raise BadUsage(f'--calib-images {calib_images}: {data_source} has {len(prepared.train_set)} training images '
                           'outside the held-out ones; pass at most that')
        if holdout_eval:
            prepared.holdout_set = Subset(prepared.holdout_set, range(holdout_eval))
        report = run_search(
            supernets=models, data=prepared.data, budgets=budgets, metric=budget_metric, recipe=recipe,
            out_dir=out, calib_batches=prepared.calib,
            holdout_batches=prepared.holdout_batches(batch_size=recipe.calib_batch_size),
            test_set=prepared.data.val if test_eval else None, seed=seed, save_entries=save_entries,
            run_info={'supernets': {str(m.bits): recorded_source(s) for m, s in zip(models, supernets)},
                      'holdout_images': len(prepared.holdout_set)})
        rows = [{k: p.get(k) for k in ('entry', 'bits', 'budget', 'resolution', 'macs', 'bitops', 'top1', 'test_top1')}
                for r in report['results'] for p in r['chosen']]
        _echo(ctx, {'out': out, 'chosen': rows})
    _finish(ctx)


@click.command('finetune')
@click.argument('model_source')
@_data
@click.option('--out', required=True, type=click.Path(file_okay=False),
              help='Run folder (checkpoint, metrics, OUT/model).')
@click.option('--epochs', type=click.IntRange(min=1), default=None, help="Finetuning epochs (default: the recipe's).")
@click.option('--lr', type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate (default: the recipe's finetune LR).")
@click.option('--batch-size', type=click.IntRange(min=1), default=None,
              help="Global batch size, all ranks (default: the recipe's).")
@click.option('--resolution', type=click.IntRange(min=8), default=None, help='Input size (default: the model\'s).')
@click.option('--teacher', default=None, help='Distil from this model (same inputs).')
@click.option('--kd-ratio', type=click.FloatRange(min=0), default=1.0, show_default=True,
              help='Weight of the distillation loss.')
@click.option('--train-images', type=click.IntRange(min=1), default=None,
              help='Train on only the first N training images.')
@_run_options
def finetune_cmd(model_source: str, data_source: str, out: str, epochs: int | None, lr: float | None,
                 batch_size: int | None, resolution: int | None, teacher: str | None, kd_ratio: float,
                 train_images: int | None, resume_from: str | None, checkpoint_every: int, no_amp: bool,
                 compile_quantizer: bool | None, augment: bool | None, workers: int | None, clip_grad: float | None,
                 tensorboard: bool, ema_decay: float | None, optimizer: str, seed: int, device: str | None) -> None:
    """Finetune a static subnet or zoo model on a data set (any number of classes), bits kept."""
    from oqatnets.supernet import OQATSupernet
    from oqatnets.training.artifacts import folder_cfg, load_model, measured_metrics, save_model_folder
    from oqatnets.training.datasets import check_channels, check_class_order, check_classes, evaluate_as_files, prepare_data
    from oqatnets.training.finetune import finetune
    from oqatnets.training.loop import resolve_fused_quantizer
    resume, adopt = _prepare_out(out, resume_from, final='model')
    ctx = _ctx(device)
    _console_logging(ctx)
    prepared = prepare_data(data_source, holdout_images=0, calib_images=1, calib_batch_size=1,
                            train_images=train_images, num_workers=default_workers() if workers is None else workers)
    data = prepared.data
    model = load_model(model_source, num_classes=data.num_classes)
    check_channels(model, name=model_source)
    check_class_order(model, data, name=model_source)
    if isinstance(model, OQATSupernet):
        raise BadUsage(f'{model_source} is a supernet; finetune takes a static subnet: pick one with `oqat search` '
                       'or `oqat calibrate --spec SPEC`, and finetune its folder')
    teacher_model = load_model(teacher) if teacher else None
    if teacher_model is not None:  # re-headed, a teacher would teach from a random classifier
        check_channels(teacher_model, name=f'--teacher {teacher}')
        check_classes(teacher_model, data, name=f'--teacher {teacher}')
    fused = resolve_fused_quantizer(compile_quantizer, ctx.device)  # refused here, before anything is written
    recipe = _recipe_for(model.space.name, batch_size=batch_size, augment=augment)
    resolution = resolution or model.spec.resolution
    _adopt_run(adopt, out)
    result = finetune(model=model, train_set=prepared.training_set(augment=recipe.augment), recipe=recipe,
                      epochs=recipe.finetune_epochs if epochs is None else epochs, resolution=resolution, out_dir=out, ctx=ctx, lr=lr,
                      teacher=teacher_model,
                      kd_ratio=kd_ratio, resume=resume, seed=seed, checkpoint_every=checkpoint_every,
                      amp=not no_amp, fused_quantizer=fused,
                      eval_batches=prepared.val_batches(batch_size=recipe.calib_batch_size),
                      run_info={'model': model_source, 'data': data_source, 'teacher': teacher},
                      loop_options=_loop_settings(ctx, prepared, workers=workers, clip_grad=clip_grad,
                                                  tensorboard=tensorboard, ema_decay=ema_decay, optimizer=optimizer))
    saved: dict[str, Any] = {}
    if ctx.is_main:  # the folder's figure is measured through the transform its cfg will describe
        test = evaluate_as_files(model.eval(), data.val, cfg=folder_cfg(model, data), batch_size=recipe.calib_batch_size)
        metrics = measured_metrics(test, data, source=f'oqat finetune on {data.name}')
        folder = save_model_folder(model.cpu(), Path(out) / 'model', data=data, metrics=metrics)
        # the card's figures beside the summary's per-epoch check (batches resized in memory, not image files)
        saved = {'model': str(folder), **{k: metrics[k] for k in ('top1', 'top5', 'images', 'split') if k in metrics}}
    _echo(ctx, {**result.summary, **saved})
    _finish(ctx)


@click.command('demo')
@click.option('--preset', type=click.Choice(['tiny', 'quick', 'default', 'finetuned', 'full']), default='default',
              show_default=True,
              help='tiny: a test-sized run; quick: half the training images, 11 minutes on 2 CPU cores and 3-8 '
                   'points lower per entry; default: 2 CPU cores, 16-24 minutes; finetuned: default, then each entry trained '
                   'alone for two epochs (not in the paper); full: for a GPU.')
@click.option('--out', default='runs/demo', show_default=True, type=click.Path(file_okay=False),
              help='Folder of the demo runs, zoo and report.')
@click.option('--overwrite', is_flag=True, help='Replace what an earlier run left in --out.')
@_compile
@_seed
@_device
def demo_cmd(preset: str, out: str, overwrite: bool, compile_quantizer: bool | None, seed: int,
             device: str | None) -> None:
    """Regenerate a mini OQAT zoo on Fashion-MNIST: train 4→3→2-bit supernets, search, publish, reload, test."""
    from oqatnets.training.demo import run_demo
    report = run_demo(out, preset=preset, seed=seed, device=device, overwrite=overwrite,
                      fused_quantizer=compile_quantizer)
    click.echo(f"\nOQAT mini zoo on {report['data']} ({report['preset']['name']} preset, {report['device']}):\n")
    click.echo(report['table_markdown'])
    timing = report['timing']
    total = sum(stage['seconds'] for stage in timing.values())
    click.echo(f"\ntotal {total / 60:.1f} min; report: {Path(out) / 'report.json'}, "
               f"Pareto plot: {Path(out) / 'pareto.png'}, zoo table: {Path(out) / 'zoo.json'}")


train_group.add_command(train_supernet_cmd)

COMMANDS = (train_group, inherit_cmd, calibrate_cmd, search_cmd, finetune_cmd, demo_cmd)
