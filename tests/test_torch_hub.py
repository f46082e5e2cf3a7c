"""torch.hub from a checkout that was never pip-installed (the top-level training/ zoo/ cli/ layout)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import REPO_ROOT

_SCRIPT = r'''
import importlib.util, json, sys
# Forget the editable install of the checkout under test: only the copy torch.hub is given may be used.
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]
sys.path_hooks[:] = [h for h in sys.path_hooks if 'editable' not in getattr(h, '__module__', '')]
sys.path_importer_cache.clear()
assert importlib.util.find_spec('oqatnets') is None, 'oqatnets is still importable without the checkout'
import torch
repo = sys.argv[1]
model = torch.hub.load(repo, 'oqat_2bit_m', source='local', num_classes=10)
import oqatnets, oqatnets.training, oqatnets.zoo
from oqatnets.registry import zoo_data_file
hubconf = torch.hub._import_module('hubconf', repo + '/hubconf.py')  # what torch.hub.list reads
names = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith('_')]
torch.hub.load(repo, 'oqat_2bit_s', source='local')  # each load runs hubconf again: still one finder
finders = sum(getattr(f, 'checkout', None) is not None for f in sys.meta_path)
print(json.dumps({'names': names, 'type': type(model).__name__, 'classes': model.num_classes, 'finders': finders,
                  'oqatnets': oqatnets.__file__, 'training': oqatnets.training.__file__,
                  'table': str(zoo_data_file('models.json'))}))
'''


def _checkout_copy(dest):
    files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = REPO_ROOT / name
        if source.is_file() and not name.startswith(('tests/', 'docs/', 'benchmarks/')):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_torch_hub_loads_from_an_uninstalled_checkout(tmp_path):
    repo = _checkout_copy(tmp_path / 'oqatnets-checkout')
    result = subprocess.run([sys.executable, '-c', _SCRIPT, str(repo)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert 'oqat_2bit_m' in out['names'] and not {'Path', 'dependencies'} & set(out['names'])
    assert (out['type'], out['classes'], out['finders']) == ('OQATNet', 10, 1)
    for key in ('oqatnets', 'training', 'table'):
        assert out[key].startswith(str(repo)), (key, out[key])
    assert out['table'] == str(repo / 'zoo' / 'models.json')
