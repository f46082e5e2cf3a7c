"""Shared fixtures: offline Hub, the authors' reference folder, small deterministic models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny models run fastest on one thread, and torchrun tests start two processes on two cores.
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get('OQAT_REFERENCE_DIR', REPO_ROOT.parent / 'shared' / 'reference' / 'oqa-official'))
PARETO_TABLE = REPO_ROOT.parent / 'shared' / 'research' / 'paper.md'
OFFICIAL_B2 = REFERENCE_DIR / 'oqa_mbv3_d234_e346_k357_w1.0_b2'


@pytest.fixture(scope='session')
def reference_dir() -> Path:
    if not OFFICIAL_B2.is_file():
        pytest.skip(f'authors\' reference outputs not found at {REFERENCE_DIR} (set OQAT_REFERENCE_DIR)')
    return REFERENCE_DIR


@pytest.fixture(scope='session')
def official_b2(reference_dir):
    import oqatnets
    return oqatnets.load_official_supernet(reference_dir / OFFICIAL_B2.name)
