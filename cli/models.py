"""Zoo-facing commands: list, info, profile, eval, predict, export, push, convert-official, zoo build."""
from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .completion import complete_model_name
from .errors import BadUsage
from .options import calibration_mode_option, given, output_path, overwrite_option


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _echo_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """A markdown table of ``rows`` (one line per row, stable columns)."""
    def cell(value: Any) -> str:
        if value is None:
            return '-'
        return f'{value:.3f}' if isinstance(value, float) else str(value)
    click.echo('| ' + ' | '.join(columns) + ' |')
    click.echo('|' + '---|' * len(columns))
    for row in rows:
        click.echo('| ' + ' | '.join(cell(row.get(c)) for c in columns) + ' |')


def _emit(rows: list[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    _echo_json(rows) if as_json else _echo_table(rows, columns)


def _model_row(name: str) -> dict[str, Any]:
    from oqatnets import registry
    arch, tag = registry.resolve_model_name(name)
    cfg = registry.get_pretrained_cfg(name)
    prof = cfg.profile or {}
    return {'name': name, 'model': f'{arch}.{tag}', 'bits': cfg.bits, 'space': cfg.space if isinstance(cfg.space, str)
            else 'custom', 'resolution': cfg.input_size[-1], 'macs_m': prof.get('macs'), 'bitops_g': prof.get('bitops'),
            'size_mbit': prof.get('size_mbit'), 'reported_top1': cfg.top1, 'published': cfg.is_published}


@click.command('list')
@click.argument('pattern', required=False, default='')
@click.option('--pretrained', is_flag=True, help='Only entries whose weights are published.')
@click.option('--json', 'as_json', is_flag=True, help='Print JSON instead of a table.')
def list_cmd(pattern: str, pretrained: bool, as_json: bool) -> None:
    """List registered models (fnmatch PATTERN, e.g. 'oqat_2bit_*')."""
    import oqatnets
    rows = [_model_row(n) for n in oqatnets.list_models(pattern, pretrained=pretrained)]
    _emit(rows, ['name', 'model', 'bits', 'resolution', 'macs_m', 'bitops_g', 'size_mbit', 'reported_top1',
                 'published'], as_json)


@click.command('info')
@click.argument('name', shell_complete=complete_model_name)
@click.option('--json', 'as_json', is_flag=True, help='Print the cfg as JSON.')
def info_cmd(name: str, as_json: bool) -> None:
    """Show the pretrained cfg of a registered model, hf-hub:ID or local-dir:PATH: spec, transform, profile,
    accuracy, hub id, sha256."""
    import oqatnets
    from oqatnets.factory import parse_model_name
    source, _ = parse_model_name(name)
    cfg = _load(name).pretrained_cfg if source else oqatnets.get_pretrained_cfg(name).to_dict()
    if as_json:
        _echo_json(cfg)
        return
    for key, value in cfg.items():
        click.echo(f'{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}')


@click.command('profile')
@click.argument('target', shell_complete=complete_model_name)
@click.option('--space', default=None, help="Search space of a SPEC (default 'imagenet').")
@click.option('--num-classes', type=click.IntRange(min=0), default=None,
              help="Classifier outputs of a SPEC (default 1000); a NAME has its own.")
@click.option('--json', 'as_json', is_flag=True, help='Print JSON instead of a table.')
def profile_cmd(target: str, space: str | None, num_classes: int | None, as_json: bool) -> None:
    """MACs, params, BitOPs and size of a model NAME (registered, hf-hub:ID or local-dir:PATH) or a SPEC
    (r<res>_k<20>_e<20>_d<5>_b<bits>)."""
    from oqatnets import registry
    from oqatnets.costs import profile
    from oqatnets.factory import parse_model_name
    from oqatnets.spec import SubnetSpec
    is_spec = target.startswith('r') and '_k' in target
    if not is_spec and (space is not None or num_classes is not None):
        raise BadUsage(f'--space and --num-classes describe a SPEC; {target} has its own: profile its spec instead')
    if is_spec:
        result = profile(SubnetSpec.parse(target), space=space or 'imagenet', num_classes=num_classes)
    elif parse_model_name(target)[0]:
        model = _load(target)
        if getattr(model, 'spec', None) is None:
            raise BadUsage(f'{target} is a supernet; profile one of its subnets by SPEC')
        result = profile(model)
    else:
        entry = registry.get_entry(target)
        if entry.spec is None:
            raise BadUsage(f'{target} is a supernet; profile one of its subnets by SPEC')
        result = profile(entry.spec, space=entry.space, num_classes=entry.num_classes)
    row = {'target': target, **result.to_dict()}
    _emit([row], ['target', 'bits', 'resolution', 'macs', 'params', 'bitops', 'float_macs', 'macs_8bit_equiv',
                  'size_mbit'], as_json)


def _load(name: str, cache_dir: str | None = None):
    import oqatnets
    return oqatnets.create_model(name, pretrained=True, cache_dir=cache_dir).eval()


@click.command('eval')
@click.argument('name', shell_complete=complete_model_name)
@click.option('--data', required=True,
              help='fashion-mnist, mnist, or an ImageFolder root with train/ and val/ (test split of a builtin set).')
@click.option('--recalibrate-bn', 'recalibrate', type=click.IntRange(min=0), default=0, show_default=True,
              help='Recalibrate BN on this many training images first (0: no).')
@calibration_mode_option
@click.option('--batch-size', type=click.IntRange(min=1), default=100, show_default=True,
              help='Images per evaluation batch.')
@click.option('--workers', type=click.IntRange(min=0), default=0, show_default=True, help='DataLoader worker processes.')
@click.option('--cache-dir', default=None, help='Hugging Face cache folder.')
@click.option('--json', 'as_json', is_flag=True, help='Print JSON instead of a table.')
def eval_cmd(name: str, data: str, recalibrate: int, calibration_mode: str | None, batch_size: int, workers: int,
             cache_dir: str | None, as_json: bool) -> None:
    """Top-1/top-5 of NAME's weights on the validation split of a data set, through its cfg's transform."""
    from oqatnets.evaluation import recalibrate_bn
    from oqatnets.training.datasets import calibration_batches, cfg_view, check_channels, check_classes, evaluate_as_files
    from oqatnets.training.recipes import recipe_for_space
    from oqatnets.training.sources import load_image_data
    if calibration_mode and not recalibrate:
        raise BadUsage('--calibration-mode chooses how --recalibrate-bn N recalibrates; pass N > 0 or drop it')
    model = _load(name, cache_dir)
    check_channels(model, name=name)
    images = load_image_data(data)
    check_classes(model, images, name=name)
    mode = calibration_mode or recipe_for_space(model.space.name).bn_calibration
    if recalibrate > len(images.train):
        raise BadUsage(f'--recalibrate-bn {recalibrate}: {data} has {len(images.train)} training images; pass at most that')
    if recalibrate:  # every image goes through the model's own transform, as a user's files would
        recalibrate_bn(model, calibration_batches(cfg_view(images.train, model.pretrained_cfg), num_images=recalibrate,
                                                  batch_size=batch_size, in_memory=False, num_workers=workers), mode=mode)
    metrics = evaluate_as_files(model, images.val, batch_size=batch_size, num_workers=workers, progress=not as_json,
                                desc=name)
    top5 = metrics['top5'] if model.num_classes > 5 else None  # as on a card: with ≤ 5 classes it is always 100 %
    row = {'model': name, 'top1': metrics['top1'], 'top5': top5, 'loss': metrics['loss'],
           'images': metrics['images'], 'split': images.val_split, 'recalibrated_on': recalibrate,
           'calibration_mode': mode if recalibrate else None}
    _emit([row], list(row), as_json)


def _label_names(model) -> list[str]:
    names = model.pretrained_cfg.get('label_names')
    if names:
        return list(names)
    if model.num_classes == 1000:  # ImageNet-1k: torchvision's public weights metadata
        from torchvision.models import MobileNet_V3_Large_Weights
        return list(MobileNet_V3_Large_Weights.IMAGENET1K_V1.meta['categories'])
    return [str(i) for i in range(model.num_classes)]


@click.command('predict')
@click.argument('name', shell_complete=complete_model_name)
@click.argument('images', nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option('--top', type=click.IntRange(min=1), default=5, show_default=True, help='Classes shown per image.')
@click.option('--cache-dir', default=None, help='Hugging Face cache folder.')
@click.option('--json', 'as_json', is_flag=True, help='Print JSON instead of a table.')
def predict_cmd(name: str, images: tuple[str, ...], top: int, cache_dir: str | None, as_json: bool) -> None:
    """Top-k classes of each IMAGE (ImageNet class names, or the model's own label names)."""
    import torch

    from oqatnets.data import cfg_transform
    from oqatnets.training.sources import load_image
    for path in images:  # before loading anything: a FIFO or device would block the read
        if not Path(path).is_file():
            raise BadUsage(f'{path} is not a regular file; pass image files')
    model = _load(name, cache_dir)
    if model.num_classes == 0:
        raise BadUsage(f'{name} has no classifier (num_classes 0: it gives pre-logits); predict needs one')
    if top > model.num_classes and given('top'):
        raise BadUsage(f'--top {top}: {name} has {model.num_classes} classes; pass at most that')
    transform = cfg_transform(model.pretrained_cfg)
    labels = _label_names(model)
    rows = []
    for path in images:
        x = transform(load_image(path))[None]
        if model.in_chans != x.shape[1]:
            x = x.mean(1, keepdim=True).expand(-1, model.in_chans, -1, -1)
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        values, indices = probs.topk(min(top, probs.numel()))
        for rank, (p, i) in enumerate(zip(values.tolist(), indices.tolist()), 1):
            rows.append({'image': path, 'rank': rank, 'class': i, 'label': labels[i], 'probability': p})
    _emit(rows, ['image', 'rank', 'class', 'label', 'probability'], as_json)


EXPORT_FORMATS = ('onnx', 'qcdq', 'packed')
_FORMAT_BY_SUFFIX = {'.onnx': 'onnx', '.safetensors': 'packed'}


def _format_from_suffix(out: str) -> str:
    """The export format OUT's suffix names; without ``--format`` any other suffix is a usage error."""
    suffix = Path(out).suffix.lower()
    if suffix not in _FORMAT_BY_SUFFIX:
        raise click.BadParameter(f'cannot tell the format from {out!r} (suffix {suffix or "none"!r}); pass --format '
                                 f'{", ".join(EXPORT_FORMATS)}, or name the file *{" or *".join(_FORMAT_BY_SUFFIX)}',
                                 param_hint='--format')
    return _FORMAT_BY_SUFFIX[suffix]


@click.command('export')
@click.argument('name', shell_complete=complete_model_name)
@click.argument('out', type=click.Path(dir_okay=False))
@click.option('--format', 'fmt', type=click.Choice(EXPORT_FORMATS), default=None,
              help='onnx: fast exact ONNX (plain ops, runs at float speed in onnxruntime); qcdq: ONNX in '
                   'QuantizeLinear/Clip/DequantizeLinear form for QDQ toolchains; packed: low-bit safetensors. '
                   'Default: from OUT\'s suffix (.onnx: onnx, .safetensors: packed).')
@click.option('--int4', is_flag=True, help='With --format onnx: store the weight codes as INT4 (opset 21).')
@click.option('--check/--no-check', default=True, show_default=True, help='Compare onnxruntime with PyTorch (onnx, qcdq).')
@click.option('--cache-dir', default=None, help='Hugging Face cache folder.')
@click.option('--json', 'as_json', is_flag=True, help='Print the written file and check as JSON.')
@overwrite_option
def export_cmd(name: str, out: str, fmt: str, int4: bool, check: bool, cache_dir: str | None, as_json: bool,
               overwrite: bool) -> None:
    """Write NAME's weights as ONNX (fast exact or QCDQ) or as the packed low-bit safetensors file."""
    from oqatnets._io import atomic_path
    if out == '-':
        raise click.BadParameter("export writes a file, not standard output; name OUT (e.g. model.onnx)",
                                 param_hint="'OUT'")
    fmt = fmt or _format_from_suffix(out)
    suffix = Path(out).suffix.lower()
    if suffix in _FORMAT_BY_SUFFIX and _FORMAT_BY_SUFFIX[suffix] != {'qcdq': 'onnx'}.get(fmt, fmt):
        raise click.BadParameter(f'--format {fmt} does not write a {suffix} file; name OUT for its format, or drop --format',
                                 param_hint='--format')
    if int4 and fmt != 'onnx':
        raise click.BadParameter('--int4 goes with --format onnx', param_hint='--int4')
    if fmt == 'packed' and check and given('check'):
        raise click.BadParameter('--check compares an ONNX file with PyTorch; it goes with --format onnx or qcdq',
                                 param_hint='--check')
    path = output_path(out, folder=False, overwrite=overwrite)  # before loading anything
    model = _load(name, cache_dir)
    source = model.pretrained_cfg.get('file')
    if source and path.exists() and Path(source).resolve().parent == path.resolve().parent:
        raise BadUsage(f'{out} is a file of the folder {name} was loaded from, which it would break; '
                       'write the export elsewhere')
    result: dict[str, Any] = {}
    if fmt == 'packed':
        from oqatnets.weights import save_packed
        path = save_packed(model, out)
    else:
        from oqatnets.errors import ExportMismatchError
        from oqatnets.export import check_onnx, export_onnx
        with atomic_path(path) as tmp:  # a file that fails --check never replaces OUT
            export_onnx(model, tmp, format=fmt, int4=int4)
            if check:
                try:
                    result = check_onnx(model, tmp)
                except ExportMismatchError as exc:
                    raise ExportMismatchError(path, f'not written: {exc.details}') from None
        if result and not as_json:
            click.echo(f'onnxruntime check: max |diff| {result["max_abs_diff"]:.3g}, '
                       f'top-1 agreement {result["top1_agreement"]:.0%}')
    size = Path(path).stat().st_size
    if as_json:
        _echo_json({'model': name, 'format': fmt, 'path': str(path), 'bytes': size, 'check': result or None})
    else:
        click.echo(f'wrote {path} ({size / 1e6:.3f} MB)')


@click.command('push')
@click.argument('source', shell_complete=complete_model_name)
@click.argument('repo_id')
@click.option('--cache-dir', default=None, help='Publish into this local Hugging Face cache instead of the network.')
@click.option('--revision', default=None, help='Branch to push to (default: main).')
@click.option('--private', is_flag=True, help='Create the repo as private.')
@click.option('--token', default=None, envvar='HF_TOKEN', help='Hugging Face token (default: $HF_TOKEN or the login).')
@click.option('--json', 'as_json', is_flag=True, help='Print the result as JSON.')
def push_cmd(source: str, repo_id: str, cache_dir: str | None, revision: str | None, private: bool,
             token: str | None, as_json: bool) -> None:
    """Publish a saved folder (or a model NAME's weights) to the Hub as REPO_ID."""
    import oqatnets
    if cache_dir and private:
        raise click.BadParameter('a local cache has no private repos; drop --private or --cache-dir',
                                 param_hint="'--private'")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(source)
        if not folder.is_dir():  # publishing rewrites the card's usage line to REPO_ID; the title is set here
            folder = oqatnets.save_pretrained(_load(source), Path(tmp) / 'model',
                                              model_card={'name': repo_id.rpartition('/')[2]})
        if cache_dir:
            snapshot = oqatnets.publish_to_cache(folder, repo_id, cache_dir=cache_dir, revision=revision or 'main')
            row = {'repo_id': repo_id, 'revision': revision or 'main', 'snapshot': str(snapshot), 'url': None}
            message = f'published {repo_id} into the local Hub cache: {snapshot}'
        else:
            url = oqatnets.push_to_hub(folder, repo_id, token=token, revision=revision, private=private)
            row = {'repo_id': repo_id, 'revision': revision, 'snapshot': None, 'url': url}
            message = f'pushed {repo_id}: {url}'
    _echo_json(row) if as_json else click.echo(message)


@click.command('convert-official')
@click.argument('src', type=click.Path(exists=True, dir_okay=False))
@click.argument('dst', type=click.Path(file_okay=False))
@click.option('--bits', type=int, default=None, help='Bit-width (default: read from the file name, ..._b2).')
@click.option('--json', 'as_json', is_flag=True, help='Print the result as JSON.')
@overwrite_option
def convert_official_cmd(src: str, dst: str, bits: int | None, as_json: bool, overwrite: bool) -> None:
    """Convert an authors' OQA supernet checkpoint to a safetensors folder (config.json + weights)."""
    import oqatnets
    output_path(dst, folder=True, overwrite=overwrite)
    supernet = oqatnets.load_official_supernet(src, bits=bits)
    folder = oqatnets.save_pretrained(supernet, dst, packed=False)
    if as_json:
        _echo_json({'folder': str(folder), 'bits': supernet.bits, 'load_name': f'local-dir:{folder}'})
        return
    click.echo(f'wrote {folder} ({supernet.bits}-bit supernet); load it with '
               f"oqatnets.create_model('local-dir:{folder}', pretrained=True)")


@click.group('zoo')
def zoo_group() -> None:
    """Build the named zoo from supernet weights."""


@click.command('build')
@click.argument('supernet', shell_complete=complete_model_name)
@click.argument('out', type=click.Path(file_okay=False))
@click.option('--data', required=True,
              help='fashion-mnist, mnist, or an ImageFolder root with train/ and val/ (test split of a builtin set).')
@click.option('--calib-images', type=click.IntRange(min=1), default=None,
              help='Training images used to recalibrate BN statistics of each subnet (default: 2000, or all if fewer).')
@click.option('--calib-batch', type=click.IntRange(min=1), default=100, show_default=True,
              help='Images per BN-calibration batch.')
@calibration_mode_option
@click.option('--batch-size', type=click.IntRange(min=1), default=100, show_default=True,
              help='Images per evaluation batch.')
@click.option('--workers', type=click.IntRange(min=0), default=0, show_default=True, help='DataLoader worker processes.')
@click.option('--cache-dir', default=None, help='Hugging Face cache folder.')
@click.option('--json', 'as_json', is_flag=True, help='Print JSON instead of a table.')
@overwrite_option
def zoo_build_cmd(supernet: str, out: str, data: str, calib_images: int | None, calib_batch: int,
                  calibration_mode: str | None, batch_size: int, workers: int, cache_dir: str | None,
                  as_json: bool, overwrite: bool) -> None:
    """For every registered entry of SUPERNET's bit-width: extract, recalibrate BN, evaluate, save to OUT."""
    from oqatnets.zoo.build import build_zoo
    output_path(out, folder=True, overwrite=overwrite)
    results = build_zoo(supernet, data=data, out=out, calib_images=calib_images, calib_batch=calib_batch,
                        batch_size=batch_size, workers=workers, progress=not as_json, cache_dir=cache_dir,
                        mode=calibration_mode, log=(lambda _: None) if as_json else click.echo)
    rows = [{'name': r.name, 'top1': r.top1, 'top5': r.top5, 'images': r.images, 'folder': str(r.folder)}
            for r in results]
    _emit(rows, ['name', 'top1', 'top5', 'images', 'folder'], as_json)
    if not as_json:
        click.echo(f'publish each folder with `oqat push FOLDER REPO_ID`; {Path(out) / "zoo.json"} registers them')


zoo_group.add_command(zoo_build_cmd)

COMMANDS = (list_cmd, info_cmd, profile_cmd, eval_cmd, predict_cmd, export_cmd, push_cmd, convert_official_cmd,
            zoo_group)
