"""Shell completion of model names (click's ``shell_complete``), without importing torch.

Completes the registered names of the builtin zoo table (and of ``$OQATNETS_ZOO_TABLE``),
read as JSON, plus the ``hf-hub:`` and ``local-dir:`` prefixes. Enable it as click documents,
e.g. ``eval "$(_OQAT_COMPLETE=bash_source oqat)"`` in ``~/.bashrc``.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import click
from click.shell_completion import CompletionItem

__all__ = ['complete_model_name', 'model_names']

_PREFIXES = ('hf-hub:', 'local-dir:')


def _tables() -> list[Path]:
    spec = importlib.util.find_spec('oqatnets.zoo')
    folders = list(spec.submodule_search_locations or []) if spec else []
    builtin = [Path(f) / 'models.json' for f in folders]
    extra = [Path(p) for p in os.environ.get('OQATNETS_ZOO_TABLE', '').split(os.pathsep) if p]
    return [p for p in (*builtin, *extra) if p.is_file()]


def model_names() -> list[str]:
    """Every ``arch`` and alias the zoo tables register (unreadable tables are skipped)."""
    names: set[str] = set()
    for path in _tables():
        try:
            rows = json.loads(path.read_text(encoding='utf-8')).get('models', [])
        except (OSError, ValueError, AttributeError):
            continue
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get('name'), str):
                names.add(row['name'].rsplit('.', 1)[0] if row['name'].count('.') == 1 else row['name'])
                names.update(a for a in row.get('aliases', ()) if isinstance(a, str))
    return sorted(names)


def complete_model_name(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Registered names and source prefixes starting with ``incomplete``; paths after ``local-dir:``."""
    if incomplete.startswith('local-dir:'):
        return [CompletionItem(incomplete, type='file')]
    return [CompletionItem(n) for n in (*_PREFIXES, *model_names()) if n.startswith(incomplete)]
