"""What a saved model says about itself: ``config.json`` (timm's schema) and the model card.

``config.json`` holds ``architecture`` (``oqatnet`` or ``oqat_supernet``: generic names that
:func:`oqatnets.create_model` and timm build from ``model_args`` alone; the registry entry the
weights came from stays in ``pretrained_cfg``), ``num_classes``, ``num_features``,
``model_args`` (the arguments that rebuild the
model), ``pretrained_cfg`` and a ``quantization`` block. The model card ``README.md`` has Hub
front matter, the profile computed by :func:`oqatnets.profile` and only accuracies that were
measured (or reported by a named source, labelled as such); it is built with huggingface_hub's
``ModelCard``/``ModelCardData``/``EvalResult``, so measured accuracy reaches the Hub's model-index.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from string import Template
from typing import Any

import torch.nn as nn
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .costs import profile
from .errors import InvalidArgumentError, InvalidFileError
from .net import OQATNet
from .pretrained import ACCURACY_FIELDS, PretrainedCfg, changes_transform, data_config_problems
from .quant import FLOAT_BITS, iter_quant_convs, quant_range
from .registry import DEFAULT_TAG, get_pretrained_cfg, hub_org, is_model, zoo_data_file
from .spec import SubnetSpec
from .supernet import OQATSupernet

__all__ = ['model_config', 'parse_model_config', 'read_model_config', 'render_model_card', 'card_data', 'eval_results',
           'base_model_id', 'BITOPS_CONVENTION']

BITOPS_CONVENTION = ('bitops = sum over quantized convs of MACs*b_w*b_a (G); float layers (stem, SE, classifier) '
                     'are reported apart as float_macs (M); macs_8bit_equiv = float MACs + quantized MACs*b^2/64 '
                     "(the authors' profile_quant)")


def _signed_input_layers(model: nn.Module) -> list[str]:
    """Names of the quantized convs whose input is on the signed grid (the space's ``signed_inputs``)."""
    return [name for name, conv in iter_quant_convs(model) if conv.signed_input]


def _quantization_block(model: nn.Module) -> dict[str, Any]:
    """config.json's ``quantization``: grids, step convention and which layers take signed inputs."""
    bits = model.bits
    block: dict[str, Any] = {'method': 'lsq', 'bits': bits, 'weight_bits': bits, 'activation_bits': bits,
                             'granularity': 'per_tensor', 'step_parameters': ['weight_step', 'act_step'],
                             'shared_step_size': True, 'bitops_convention': BITOPS_CONVENTION}
    if bits < FLOAT_BITS:
        block['weight'] = dict(zip(('qmin', 'qmax'), quant_range(bits, signed=True)), signed=True)
        block['activation'] = dict(zip(('qmin', 'qmax'), quant_range(bits, signed=False)), signed=False)
        signed_layers = _signed_input_layers(model)
        if signed_layers:  # the space's signed_inputs: block inputs on the signed grid
            block['block_input_activation'] = dict(zip(('qmin', 'qmax'), quant_range(bits, signed=True)), signed=True,
                                                   layers=signed_layers)
    block['float_layers'] = ['conv_stem', 'bn', 'se', 'classifier']
    block['rounding'] = 'half_to_even'
    block['dequantize'] = 'code * abs(step)'
    return block


def model_config(model: nn.Module, overrides: 'PretrainedCfg | dict[str, Any] | None' = None, *,
                 own: dict[str, Any] | None = None) -> dict[str, Any]:
    """``config.json`` content of ``model``; ``overrides`` replace fields of its ``pretrained_cfg`` (or of
    ``own``, a cfg of the model such as its derived one).

    The model's own facts (architecture, bits, spec, space, classes, input size) always come from
    the model, whatever ``overrides`` say.
    """
    if isinstance(overrides, PretrainedCfg):
        overrides = overrides.to_dict()
    own = model.pretrained_cfg if own is None else own
    overrides = dict(overrides or {})
    if changes_transform(own, overrides):  # measured through another transform: only new figures may stand
        own = {k: v for k, v in own.items() if k not in ACCURACY_FIELDS}
    cfg = {**own, **overrides}
    for key in ('architecture', 'bits', 'spec', 'space', 'num_classes', 'input_size'):
        cfg.pop(key, None)
        if own.get(key) is not None:
            cfg[key] = own[key]
    merged = PretrainedCfg.from_dict(cfg)
    clean = merged.to_dict(remove_source=True)
    problems = data_config_problems(merged, num_classes=model.num_classes)
    if problems:
        raise InvalidArgumentError(f'pretrained_cfg {"; ".join(problems)}; pass values that describe this model')
    return {
        'architecture': model.architecture,  # generic: timm and oqatnets build it from model_args alone
        'num_classes': model.num_classes,
        'num_features': model.num_features,
        'global_pool': 'avg',
        'label_names': clean.get('label_names'),
        'model_args': model.model_args(),
        'pretrained_cfg': clean,
        'quantization': _quantization_block(model),
    }


def parse_model_config(config: Any, *, where: str) -> tuple[PretrainedCfg, dict[str, Any]]:
    """(pretrained cfg, model_args) of a ``config.json`` dict; ``where`` names the file in errors."""
    if not isinstance(config, dict) or not isinstance(config.get('model_args'), dict) \
            or not isinstance(config.get('architecture'), str):
        raise InvalidFileError(f'{where} is not an oqatnets config.json (no architecture/model_args); '
                               'write the folder with oqatnets.save_pretrained')
    pretrained = config.get('pretrained_cfg') or {}
    if not isinstance(pretrained, dict):
        raise InvalidFileError(f'{where}: pretrained_cfg must be a JSON object')
    try:
        cfg = PretrainedCfg.from_dict({'architecture': config['architecture'], **pretrained})
    except TypeError as exc:
        raise InvalidFileError(f'{where}: pretrained_cfg is malformed ({exc})') from None
    name = cfg.hf_hub_filename
    if name is not None and not (isinstance(name, str) and name.endswith('.safetensors') and Path(name).name == name):
        raise InvalidFileError(f'{where}: pretrained_cfg.hf_hub_filename {name!r} is not a safetensors file name in the '
                               'folder or repo (no path); write the folder with oqatnets.save_pretrained')
    args = dict(config['model_args'])
    if args.get('spec') is None and args.get('bits') is None:  # else a None-bit supernet would be built
        raise InvalidFileError(f'{where}: model_args has neither a spec (a subnet) nor bits (a supernet); '
                               'write the folder with oqatnets.save_pretrained')
    args.setdefault('num_classes', config.get('num_classes', cfg.num_classes))
    problems = data_config_problems(cfg, num_classes=args.get('num_classes'))  # malformed values first
    if problems:
        raise InvalidFileError(f'{where}: pretrained_cfg {"; ".join(problems)}; write the folder with oqatnets.save_pretrained')
    _check_consistent(cfg, args, where=where, config=config)
    return cfg, args


def _check_consistent(cfg: PretrainedCfg, args: dict[str, Any], *, where: str, config: dict[str, Any]) -> None:
    """Refuse a config whose ``pretrained_cfg`` or top-level fields (what timm and other Hub tools read)
    describe another model than its ``model_args`` build."""
    spec = args.get('spec')
    try:
        parsed = SubnetSpec.parse(spec) if isinstance(spec, str) else None
    except ValueError:
        raise InvalidFileError(f'{where}: model_args.spec {spec!r} is not a subnet spec') from None
    bits = parsed.bits if parsed is not None else args.get('bits')
    facts = {'bits': bits, 'spec': spec, 'num_classes': args.get('num_classes')}
    wrong = [f'pretrained_cfg.{key} is {getattr(cfg, key)!r} but model_args build {value!r}'
             for key, value in facts.items() if getattr(cfg, key) is not None and value is not None and getattr(cfg, key) != value]
    stated = (config.get('pretrained_cfg') or {}).get('input_size')  # as written, not the dataclass default
    if parsed is not None and isinstance(stated, list):  # a static net's input size is its spec's resolution
        built = [args.get('in_chans', 3), parsed.resolution, parsed.resolution]
        if stated != built:
            wrong.append(f'pretrained_cfg.input_size is {stated!r} but model_args build {built!r}')
    quantization = config.get('quantization') if isinstance(config.get('quantization'), dict) else {}
    top = {'num_classes': (config.get('num_classes'), facts['num_classes']), 'quantization.bits': (quantization.get('bits'), bits),
           'architecture': (config['architecture'], OQATNet.architecture if spec is not None else OQATSupernet.architecture)}
    wrong += [f'{key} is {said!r} but model_args build {built!r}' for key, (said, built) in top.items()
              if said is not None and built is not None and said != built]
    names = list(cfg.label_names) if isinstance(cfg.label_names, (list, tuple)) else None
    if config.get('label_names') is not None and names is not None and config['label_names'] != names:
        wrong.append(f'label_names is {config["label_names"]!r} but pretrained_cfg.label_names is {names!r}')
    if wrong:
        raise InvalidFileError(f'{where} contradicts itself: {"; ".join(wrong)}; write the folder with oqatnets.save_pretrained')


def read_model_config(path: 'str | Path') -> tuple[PretrainedCfg, dict[str, Any]]:
    """:func:`parse_model_config` of the JSON file at ``path``."""
    try:
        config = json.loads(Path(path).read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidFileError(f'{path} is not valid JSON ({exc}); write the folder with oqatnets.save_pretrained') \
            from None
    return parse_model_config(config, where=str(path))


_HUB_ID = re.compile(r'[A-Za-z0-9][\w.-]*/[\w.-]+')
# license: other with no name: the authors' checkpoints, published without a license
_OQA_LICENSE = {'license_name': 'oqa-authors-no-license', 'license_link': 'https://github.com/LaVieEnRoseSMZ/OQA'}
UNNAMED_TAG = 'custom'  # a card's name for a model without a zoo tag: ``{architecture}.custom``
_MEASURE_NAMES = {'top1': 'Top-1 accuracy (%)', 'top5': 'Top-5 accuracy (%)'}
_NOT_MEASURES = {'source', 'images', 'split', 'dataset'}


def _hub_id_of(arch: str) -> str:
    return f'{hub_org()}/{arch}.{DEFAULT_TAG}' if '.' not in arch else f'{hub_org()}/{arch}'


def base_model_id(parent: str | None) -> str | None:
    """The Hub id of the parent supernet, or None when it is not one (a local path, an unpublished entry)."""
    if not parent:
        return None
    if is_model(parent):
        cfg = get_pretrained_cfg(parent)
        return cfg.hf_hub_id.partition('@')[0] if cfg.is_published and cfg.hf_hub_id else None
    repo = parent.partition('@')[0]
    return repo if _HUB_ID.fullmatch(repo) and not Path(repo).exists() else None


def eval_results(metrics: dict[str, Any] | None, *, dataset: str | None) -> list[EvalResult]:
    """One model-index result per measured number (top-1, top-5, any other numeric metric), with the data
    set, split and image count they were measured on (the free-text source is in the card's body). A
    ``holdout_`` figure (a search's fitness on held-out training images) was measured on other images than
    that split: it stays in the body's table only."""
    if not metrics:
        return []
    dataset = metrics.get('dataset') or dataset or 'unknown'
    args = {'num_images': int(metrics['images'])} if metrics.get('images') else None
    out = []
    for key, value in metrics.items():
        if key in _NOT_MEASURES or key.startswith('holdout_') or isinstance(value, bool) \
                or not isinstance(value, (int, float)):
            continue
        out.append(EvalResult(task_type='image-classification', dataset_type=dataset, dataset_name=dataset,
                              dataset_split=metrics.get('split'), dataset_args=args,
                              metric_type='accuracy' if key in _MEASURE_NAMES else key,
                              metric_name=_MEASURE_NAMES.get(key, key), metric_value=round(float(value), 4)))
    return out


def card_data(cfg: dict[str, Any], *, name: str, bits: int, metrics: dict[str, Any] | None,
              overrides: dict[str, Any] | None = None) -> ModelCardData:
    """The card's Hub metadata (huggingface_hub's ``ModelCardData``): license (with name and link for
    ``other``), tags, data set, ``base_model`` only when the parent is a Hub id, and a model-index with
    every measured metric."""
    license = cfg.get('license') or 'apache-2.0'
    extra = dict(_OQA_LICENSE) if license == 'other' else {}
    extra.update({k: v for k, v in (overrides or {}).items() if k in ('license_name', 'license_link')})
    results = eval_results(metrics, dataset=cfg.get('dataset'))
    return ModelCardData(
        license=license, library_name='oqatnets', pipeline_tag='image-classification',
        tags=['image-classification', 'oqatnets', 'timm', 'quantization', f'{bits}-bit', 'lsq', 'mobilenetv3',
              'once-for-all'],
        datasets=[cfg['dataset']] if cfg.get('dataset') else None, metrics=['accuracy'] if results else None,
        base_model=base_model_id(cfg.get('supernet')), model_name=name, eval_results=results or None, **extra)


def _rows(items: dict[str, Any]) -> str:
    return '\n'.join(f'| {k} | {v} |' for k, v in items.items() if v is not None and v != '')


def _profile_rows(model: nn.Module) -> dict[str, Any]:
    if isinstance(model, OQATSupernet):
        largest = profile(model.space.largest(model.bits), space=model.space, num_classes=model.num_classes)
        return {'Largest subnet MACs (M)': f'{largest.macs:.3f}'}
    p = profile(model)
    return {'MACs (M)': f'{p.macs:.3f}', 'Params (M)': f'{p.params:.3f}', 'BitOPs (G)': f'{p.bitops:.3f}',
            'Float MACs (M)': f'{p.float_macs:.3f}', '8-bit-equivalent MACs (M)': f'{p.macs_8bit_equiv:.3f}',
            'Size (Mbit)': f'{p.size_mbit:.3f}', 'Resolution': p.resolution}


def render_model_card(model: nn.Module, config: dict[str, Any], *, metrics: dict[str, Any] | None = None,
                      model_card: dict[str, Any] | None = None) -> ModelCard:
    """The model card ``README.md`` (a ``huggingface_hub.ModelCard``): :func:`card_data` metadata, the
    details, the profile and the accuracy in the body. ``model_card`` may set ``name``,
    ``description``, ``details``, ``load_name``, ``license_name`` and ``license_link``."""
    cfg = config['pretrained_cfg']
    card = dict(model_card or {})
    name = card.pop('name', None) or f'{cfg["architecture"]}.{cfg.get("tag") or UNNAMED_TAG}'
    details = {'Architecture': cfg['architecture'], 'Bits (W/A)': f'{model.bits}/{model.bits}',
               'Spec': f'`{cfg["spec"]}`' if cfg.get('spec') else 'elastic supernet',
               'Search space': cfg['space'] if isinstance(cfg['space'], str) else 'custom (see config.json)',
               'Input size': 'x'.join(map(str, cfg['input_size'])), 'Eval crop': cfg.get('crop_pct'),
               'Interpolation': cfg.get('interpolation'), 'Classes': model.num_classes,
               'Dataset': cfg.get('dataset'), 'Parent supernet': cfg.get('supernet'), 'License': cfg.get('license'),
               'Paper': 'arXiv:2010.04354'}
    details.update(card.pop('details', {}))
    if metrics:
        source = metrics.get('source') or cfg.get('metrics_source') or 'measured'
        shown = {_MEASURE_NAMES.get(k, k): (f'{v:.3f}' if isinstance(v, float) else v) for k, v in metrics.items()
                 if k != 'source'}
        metrics_text = '| metric | value |\n|---|---|\n' + _rows(shown) + f'\n\nSource: {source}.'
    elif cfg.get('top1') is not None:
        metrics_text = f'Top-1: {cfg["top1"]:.3f} % ({cfg.get("metrics_source") or "source not given"}).'
    else:
        metrics_text = 'Not evaluated.'
    data = card_data(cfg, name=name, bits=model.bits, metrics=metrics, overrides=card)
    template = Template(zoo_data_file('model_card.md').read_text(encoding='utf-8'))
    return ModelCard(template.substitute(
        front_matter=data.to_yaml(), name=name,
        description=card.pop('description', None) or cfg.get('description') or '',
        bits=model.bits, details=_rows(details), profile=_rows(_profile_rows(model)), metrics=metrics_text,
        what=('OQAT supernet: the weight-sharing MobileNetV3 space whose subnets are extracted with their '
              'quantized weights as they are,' if isinstance(model, OQATSupernet) else 'OQATNet: a MobileNetV3 subnet'),
        activations=('signed block inputs and otherwise unsigned (the `signed_inputs` space, not the authors\' '
                     'quantizer)' if _signed_input_layers(model) else 'unsigned'),
        load_name=card.pop('load_name', None) or f'hf-hub:{cfg.get("hf_hub_id") or _hub_id_of(name)}'))
