"""The model registry: names, tags, aliases and pretrained cfgs, read from zoo tables (JSON data).

The builtin table is ``oqatnets/zoo/models.json``; it is read as data, never imported, so the
library does not depend on the ``oqatnets.zoo`` code. More tables (a regenerated zoo, a
finetune) register at run time with :func:`register_zoo_table` or through the environment
variable ``OQATNETS_ZOO_TABLE`` (``os.pathsep``-separated JSON files, read on first use).

Table schema (``schema: "oqatnets-zoo"``, ``schema_version: 1``)::

    {"schema": "oqatnets-zoo", "schema_version": 1,
     "defaults": {<row fields shared by every row>},
     "models": [{<row>}, ...]}

A row has ``name`` (``arch.tag``; the tag defaults to ``in1k``), ``aliases`` (other names of
the arch), either ``spec`` (a subnet, :class:`~oqatnets.spec.SubnetSpec` string form) or
``bits`` (a supernet), and any :class:`~oqatnets.pretrained.PretrainedCfg` field: ``space``
(a preset name or a SearchSpace dict), ``num_classes``, ``in_chans``, ``input_size`` (default
``[in_chans, r, r]``), ``crop_pct``, ``interpolation``, ``mean``, ``std`` (default ImageNet's, per
input channel), ``label_names``, ``license``, ``dataset``, ``top1``/``top5`` and ``metrics_source`` (what the source reported
and where), ``supernet`` (the parent), ``sha256`` (``{file name: hex or null}``) and
``hf_hub_id`` (null: ``$OQATNETS_HUB_ORG/<arch>.<tag>``, org ``oqatnets`` by default).
Keys starting with ``reported_`` are kept with the row for reference (e.g. the source's MACs).
"""
from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from .costs import profile
from .errors import FileMissingError, InvalidArgumentError, InvalidFileError, UnknownModelError
from .pretrained import PretrainedCfg, channel_stats, data_config_problems
from .spec import SearchSpace, SubnetSpec, get_space

__all__ = ['ZooEntry', 'register_zoo_table', 'list_models', 'list_pretrained', 'is_model', 'get_pretrained_cfg',
           'get_entry', 'split_model_name_tag', 'resolve_model_name', 'hub_org', 'zoo_data_file', 'on_register',
           'DEFAULT_TAG', 'HUB_ORG_ENV', 'ZOO_TABLE_ENV', 'UnknownModelError']

DEFAULT_TAG = 'in1k'
HUB_ORG_ENV = 'OQATNETS_HUB_ORG'
ZOO_TABLE_ENV = 'OQATNETS_ZOO_TABLE'
SCHEMA = 'oqatnets-zoo'
SCHEMA_VERSION = 1
_ROW_ONLY_KEYS = {'name', 'in_chans'}


@dataclass(frozen=True)
class ZooEntry:
    """One ``arch.tag`` of a zoo table: how to build the network and its pretrained cfg."""

    arch: str
    tag: str
    space: SearchSpace
    bits: int
    spec: SubnetSpec | None
    num_classes: int
    in_chans: int
    cfg: PretrainedCfg
    row: Mapping[str, Any]

    @property
    def identity(self) -> tuple[Any, ...]:
        """What the entry's network is, whatever its weights: another row may replace a built-in entry (``oqat zoo
        build``'s table adds files and hashes) only with the same one."""
        return self.space, self.bits, self.spec, self.num_classes, self.in_chans

    @property
    def name(self) -> str:
        return f'{self.arch}.{self.tag}'

    def model_args(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this network (what ``config.json`` stores as ``model_args``)."""
        args: dict[str, Any] = {'space': self.space.as_arg(), 'num_classes': self.num_classes, 'in_chans': self.in_chans}
        if self.spec is None:
            args['bits'] = self.bits
        else:
            args['spec'] = str(self.spec)
        return args


_entries: dict[str, dict[str, ZooEntry]] = {}  # arch -> tag -> entry, default tag first
_aliases: dict[str, str] = {}
_profiles: dict[str, dict[str, Any]] = {}
_listeners: list[Callable[[list[str]], None]] = []
_loaded = False
_builtin: dict[str, ZooEntry] = {}  # the package's own table, by arch.tag


def hub_org() -> str:
    """The Hub organisation of the builtin entries (``$OQATNETS_HUB_ORG``, default ``oqatnets``)."""
    return os.environ.get(HUB_ORG_ENV) or 'oqatnets'


def zoo_data_file(name: str) -> Path:
    """Path of a data file shipped in ``oqatnets.zoo`` (found without importing that package)."""
    spec = importlib.util.find_spec('oqatnets.zoo')
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / name
        if path.is_file():
            return path
    raise FileMissingError(f'oqatnets.zoo/{name} is missing; reinstall oqatnets (pip install -e .)')


def _read_table(source: 'str | os.PathLike | Mapping[str, Any]') -> tuple[dict[str, Any], str]:
    if isinstance(source, Mapping):
        return dict(source), '<dict>'
    path = Path(source)
    if path.is_dir():
        raise InvalidFileError(f'zoo table {path} is a folder; point at the zoo.json file in it')
    if not path.is_file():
        raise FileMissingError(f'zoo table {path} does not exist (check {ZOO_TABLE_ENV} or the path you passed)')
    try:
        return json.loads(path.read_text()), str(path)
    except json.JSONDecodeError as exc:
        raise InvalidFileError(f'zoo table {path} is not valid JSON: {exc}') from None


def _split_row_name(name: str) -> tuple[str, str]:
    arch, tag = name.rsplit('.', 1) if '.' in name else (name, '')
    return arch, tag or DEFAULT_TAG


def _entry_from_row(row: dict[str, Any], where: str) -> ZooEntry:
    if 'name' not in row or not isinstance(row['name'], str):
        raise InvalidArgumentError(f'{where}: every row needs a "name" ("arch.tag")')
    arch, tag = _split_row_name(row['name'])
    if not re.fullmatch(r'[A-Za-z][\w.]*', arch):
        raise InvalidArgumentError(f'{where}: model name {arch!r} must start with a letter and use letters, digits, _ or .')
    if not row.get('spec') and row.get('bits') is None:
        raise InvalidArgumentError(f'{where}: row {row["name"]!r} needs "spec" (a subnet) or "bits" (a supernet)')
    try:
        space = get_space(row.get('space', 'imagenet'))
        spec = space.check(SubnetSpec.of(row['spec'])) if row.get('spec') else None
        bits = spec.bits if spec is not None else int(row['bits'])
        in_chans = int(row.get('in_chans', 3))
    except (ValueError, TypeError) as exc:  # a bad spec, space, bits or in_chans: name the file and row
        raise InvalidArgumentError(f'{where}: row {row["name"]!r}: {exc}') from None
    resolution = spec.resolution if spec is not None else max(space.resolutions)
    fields = {k: v for k, v in row.items() if k not in _ROW_ONLY_KEYS and not k.startswith('reported_')}
    fields.pop('bits', None)
    fields.setdefault('input_size', [in_chans, resolution, resolution])
    fields.setdefault('hf_hub_id', None)
    try:
        cfg = PretrainedCfg.from_dict(fields)
    except TypeError as exc:
        raise InvalidArgumentError(f'{where}: row {row["name"]!r}: {exc}') from None
    unknown = set(fields) - set(cfg.to_dict(remove_null=False))
    if unknown:
        raise InvalidArgumentError(f'{where}: row {row["name"]!r} has unknown fields {sorted(unknown)}; '
                         'see oqatnets.registry for the schema')
    default_stats = {name: channel_stats(getattr(cfg, name), in_chans) for name in ('mean', 'std') if name not in fields}
    cfg = cfg.replace(architecture=arch, tag=tag, bits=bits, spec=str(spec) if spec else None,
                      space=fields.get('space', 'imagenet'), aliases=tuple(row.get('aliases', ())), **default_stats)
    problems = data_config_problems(cfg, num_classes=cfg.num_classes)
    if spec is not None and list(cfg.input_size) != [in_chans, spec.resolution, spec.resolution]:
        problems.append(f'input_size {list(cfg.input_size)} is not [in_chans, resolution, resolution] of its spec '
                        f'({[in_chans, spec.resolution, spec.resolution]})')
    if cfg.top1 is not None and cfg.top5 is not None and not problems and cfg.top5 < cfg.top1:
        problems.append(f'top5 {cfg.top5} is below top1 {cfg.top1}')
    if problems:
        raise InvalidArgumentError(f'{where}: row {row["name"]!r}: {"; ".join(problems)}')
    return ZooEntry(arch=arch, tag=tag, space=space, bits=bits, spec=spec, num_classes=cfg.num_classes,
                    in_chans=in_chans, cfg=cfg, row=copy.deepcopy(row))


def register_zoo_table(source: 'str | os.PathLike | Mapping[str, Any]', *, override: bool = True) -> list[str]:
    """Register every row of a zoo table (a JSON file or an equivalent dict); returns the ``arch.tag`` names.

    A row whose ``arch.tag`` is already registered replaces it when ``override`` (the default), as
    timm does on re-registration; otherwise it is an error.
    """
    _ensure_loaded()
    return _register(source, override=override)


def _register(source: 'str | os.PathLike | Mapping[str, Any]', *, override: bool, builtin: bool = False) -> list[str]:
    table, where = _read_table(source)
    if table.get('schema', SCHEMA) != SCHEMA or int(table.get('schema_version', SCHEMA_VERSION)) > SCHEMA_VERSION:
        raise InvalidArgumentError(f'{where}: not an {SCHEMA} table of version <= {SCHEMA_VERSION} '
                         f'(got schema={table.get("schema")!r}, version={table.get("schema_version")!r})')
    rows = table.get('models')
    if not isinstance(rows, list):
        raise InvalidArgumentError(f'{where}: expected a "models" list of rows')
    defaults = table.get('defaults', {})
    entries = [_entry_from_row({**copy.deepcopy(defaults), **row}, where) for row in rows]
    _check_names_are_unambiguous(entries, where)
    names = [entry.name for entry in entries]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InvalidArgumentError(f'{where}: {", ".join(twice)} named by more than one row; name each row once')
    for entry in entries:
        own = _builtin.get(entry.name)
        if own is not None and not builtin and own.identity != entry.identity:
            raise InvalidArgumentError(
                f'{where}: row {entry.name!r} would replace the built-in {entry.name} ({own.bits}-bit, '
                f'{own.num_classes} classes, {own.spec or "supernet"}) with another network; give the row a name of its own')
    added: list[str] = []
    for entry in entries:
        tags = _entries.setdefault(entry.arch, {})
        if entry.tag in tags and not override:
            raise InvalidArgumentError(f'{where}: {entry.name} is already registered; pass override=True to replace it')
        tags[entry.tag] = entry
        if builtin:
            _builtin[entry.name] = entry
        _profiles.pop(entry.name, None)
        for alias in entry.cfg.aliases:
            _aliases[alias] = entry.arch
        added.append(entry.name)
    for listener in list(_listeners):
        listener(added)
    return added


def _check_names_are_unambiguous(entries: list[ZooEntry], where: str) -> None:
    """Refuse a table (before registering any row) whose architecture names an alias of another one, or
    whose alias names another architecture: either would silently change what an existing name builds."""
    aliases, arches = dict(_aliases), set(_entries)
    for entry in entries:
        owner = aliases.get(entry.arch, entry.arch)
        if owner != entry.arch:
            raise InvalidArgumentError(f'{where}: {entry.name} would shadow {entry.arch}, an alias of {owner}; '
                                       'give the row another name')
        arches.add(entry.arch)
        for alias in entry.cfg.aliases:
            owner = aliases.get(alias, alias if alias in arches else entry.arch)
            if owner != entry.arch:
                raise InvalidArgumentError(f'{where}: alias {alias} of {entry.name} already names {owner}; '
                                           'give the row another alias')
            aliases[alias] = entry.arch


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    try:
        _register(zoo_data_file('models.json'), override=True, builtin=True)
        defined_by: dict[str, tuple[str, dict[str, Any]]] = {}
        for path in filter(None, os.environ.get(ZOO_TABLE_ENV, '').split(os.pathsep)):
            for name in _register(path, override=True):
                row = get_entry(name).row
                first, first_row = defined_by.setdefault(name, (path, row))
                if first_row != row:  # the tables are peers: neither may silently replace the other's weights
                    raise InvalidArgumentError(f'{ZOO_TABLE_ENV}: {first} and {path} both define {name}, differently; '
                                               'list only one of them')
    except Exception:
        _loaded = False
        _entries.clear()
        _aliases.clear()
        _builtin.clear()
        raise


def on_register(callback: Callable[[list[str]], None]) -> None:
    """Call ``callback(names)`` for every table registered from now on (and once for what is there)."""
    _ensure_loaded()
    _listeners.append(callback)
    callback([e.name for tags in _entries.values() for e in tags.values()])


def _known(name: str) -> str | None:
    if name in _entries:
        return name
    return _aliases.get(name)


def split_model_name_tag(model_name: str) -> tuple[str, str]:
    """``'arch.tag'`` → ``(arch, tag)``; names that themselves hold dots (``..._w1.0_b2``) stay whole."""
    _ensure_loaded()
    if _known(model_name):
        return model_name, ''
    if '.' in model_name:
        arch, tag = model_name.rsplit('.', 1)
        if not tag:  # 'arch.' names no tag; never read it as the default one
            raise _unknown(model_name)
        return arch, tag
    return model_name, ''


def _unknown(name: str) -> UnknownModelError:
    names = list(_entries) + list(_aliases)
    close = get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f'; did you mean {", ".join(close)}?' if close else '; run `oqat list` to see the registered names'
    return UnknownModelError(f'unknown model {name!r}{hint}')


def resolve_model_name(model_name: str) -> tuple[str, str]:
    """The canonical ``(arch, tag)`` of a name, alias or ``arch.tag``; UnknownModelError if none."""
    arch, tag = split_model_name_tag(model_name)
    canonical = _known(arch)
    if canonical is None:
        raise _unknown(arch)
    tags = _entries[canonical]
    if tag and tag not in tags:
        raise UnknownModelError(f'model {canonical!r} has no tag {tag!r}; tags: {", ".join(tags)}')
    return canonical, tag or next(iter(tags))


def get_entry(model_name: str) -> ZooEntry:
    arch, tag = resolve_model_name(model_name)
    return _entries[arch][tag]


def _profile_of(entry: ZooEntry) -> dict[str, Any] | None:
    if entry.spec is None:
        return None
    if entry.name not in _profiles:
        prof = profile(entry.spec, space=entry.space, num_classes=entry.num_classes, in_chans=entry.in_chans)
        _profiles[entry.name] = {k: round(v, 6) if isinstance(v, float) else v for k, v in prof.to_dict().items()}
    return dict(_profiles[entry.name])


def get_pretrained_cfg(model_name: str) -> PretrainedCfg:
    """A copy of the entry's pretrained cfg with its Hub id filled in and its profile computed by
    :func:`oqatnets.profile` (MACs, params, BitOPs, size), never numbers typed into the table."""
    entry = get_entry(model_name)
    cfg = copy.deepcopy(entry.cfg)
    hf_hub_id = cfg.hf_hub_id or f'{hub_org()}/{entry.name}'
    return cfg.replace(hf_hub_id=hf_hub_id, profile=_profile_of(entry))


def is_model(model_name: str) -> bool:
    """Whether ``model_name`` (an arch, alias or ``arch.tag``) is registered."""
    try:
        resolve_model_name(model_name)
    except UnknownModelError:
        return False
    return True


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', text)]


def _as_list(patterns: 'str | Iterable[str]') -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or ('.' not in p and fnmatch.fnmatchcase(name, p + '.*'))
               for p in patterns)


def list_models(filter: 'str | Iterable[str]' = '', pretrained: bool = False,
                exclude_filters: 'str | Iterable[str]' = '', include_tags: bool | None = None) -> list[str]:
    """Registered names matching fnmatch ``filter`` (timm semantics), natural-sorted.

    Without tags the result holds architectures and their aliases; ``include_tags`` (defaults to
    ``pretrained``) lists ``arch.tag`` names instead. ``pretrained=True`` keeps entries whose
    weights are published (the table records their sha256).
    """
    _ensure_loaded()
    include_tags = pretrained if include_tags is None else include_tags
    names: list[str] = []
    for arch, tags in _entries.items():
        kept = [t for t, e in tags.items() if not pretrained or e.cfg.is_published]
        if not kept:
            continue
        if include_tags:
            names.extend(f'{arch}.{t}' for t in kept)
        else:
            names.append(arch)
            names.extend(a for a in tags[kept[0]].cfg.aliases if _aliases.get(a) == arch)
    includes = [p for p in _as_list(filter) if p]
    excludes = [p for p in _as_list(exclude_filters) if p]
    if includes:
        names = [n for n in names if _matches(n, includes)]
    if excludes:
        names = [n for n in names if not _matches(n, excludes)]
    return sorted(set(names), key=_natural_key)


def list_pretrained(filter: 'str | Iterable[str]' = '', exclude_filters: 'str | Iterable[str]' = '') -> list[str]:
    """``arch.tag`` names whose weights are published."""
    return list_models(filter, pretrained=True, exclude_filters=exclude_filters, include_tags=True)
