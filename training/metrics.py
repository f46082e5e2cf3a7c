"""Observability: progress bars, per-epoch JSON lines, images/s per stage, an end-of-run summary.

Only the main rank writes; the other ranks get no-op logs so callers need no ``if rank == 0``.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from oqatnets._io import atomic_path, check_output, write_json

__all__ = ['write_json', 'MetricsLog', 'StageTimer', 'progress']


def progress(iterable: Iterable, *, enabled: bool, total: int | None = None, desc: str = '',
             initial: int = 0) -> Iterator:
    """A tqdm bar over ``iterable`` on the main rank, the bare iterable elsewhere."""
    if not enabled:
        return iter(iterable)
    return iter(tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True, leave=False))


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line (epoch ends, evaluations), each with its ``step``."""

    def __init__(self, path: 'str | Path', *, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def append(self, **record: Any) -> None:
        if not self.enabled:
            return
        check_output(self.path)  # appending would follow a link, block on a FIFO, write onto a device
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a resumed run rewrites them), atomically."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in self.records() if r.get('step', 0) <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text(''.join(json.dumps(r) + '\n' for r in kept))


class StageTimer:
    """Wall time and images per named stage (``train``, ``calibrate``, ``eval`` …), for images/s."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.images: dict[str, int] = defaultdict(int)

    def stage(self, name: str, images: int = 0) -> '_Stage':
        return _Stage(self, name, images)

    def add(self, name: str, *, seconds: float, images: int) -> None:
        self.seconds[name] += seconds
        self.images[name] += images

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: {'seconds': round(self.seconds[name], 3), 'images': self.images[name],
                       'images_per_s': round(self.images[name] / self.seconds[name], 1) if self.seconds[name] else 0.0}
                for name in self.seconds}


class _Stage:
    def __init__(self, timer: StageTimer, name: str, images: int):
        self.timer, self.name, self.images = timer, name, images

    def __enter__(self) -> '_Stage':
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.add(self.name, seconds=time.perf_counter() - self.start, images=self.images)
