"""Start-up: ``import oqatnets`` and ``oqat --version`` do not import torch; timm still finds the zoo."""
from __future__ import annotations

import subprocess
import sys

import oqatnets


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_version_does_not_import_torch():
    out = _run("import sys\nfrom click.testing import CliRunner\nfrom oqatnets.cli.main import cli\n"
               "result = CliRunner().invoke(cli, ['--version'])\n"
               "print(result.exit_code, result.output.strip(), 'torch' in sys.modules)")
    assert out.split('\n')[0] == f'0 oqat, version {oqatnets.__version__} False'


def test_the_cli_runs_as_a_module():
    """``python -m`` (torchrun's way) finds the CLI's code through the import hook's loader."""
    result = subprocess.run([sys.executable, '-m', 'oqatnets.cli.main', '--version'], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f'oqat, version {oqatnets.__version__}', result.stderr[-2000:]


def test_import_is_lazy_and_complete():
    assert _run("import oqatnets, sys; print('torch' in sys.modules)").strip() == 'False'
    assert set(oqatnets.__all__) <= set(dir(oqatnets))
    assert all(getattr(oqatnets, name) is not None for name in oqatnets.__all__)


def test_timm_registration_whatever_the_import_order():
    for code in ('import oqatnets, timm', 'import timm, oqatnets',
                 "import oqatnets; oqatnets.create_model('oqat_2bit_m'); import timm",
                 'from oqatnets.net import OQATNet; import timm', 'import timm.layers, oqatnets.quant'):
        assert _run(f"{code}\nprint('oqat_2bit_m' in timm.list_models('oqat*'))").strip() == 'True', code


def test_registering_with_timm_loads_no_module_twice():
    """Registration runs after an import completes, not while the next one is looked up: were that one a module
    registration also imports, Python would load a second copy (two ``OQATSupernet`` classes)."""
    census = ("import collections, gc, timm\n"
              "copies = collections.Counter(d['__name__'] for d in gc.get_objects() if isinstance(d, dict)\n"
              "                             and '__builtins__' in d and str(d.get('__name__')).startswith('oqatnets'))\n"
              "print(sorted(name for name, n in copies.items() if n > 1), 'oqat_2bit_m' in timm.list_models('oqat*'))")
    for code in ('from oqatnets.net import OQATNet\nfrom oqatnets.supernet import OQATSupernet',
                 'import oqatnets.net\nfrom oqatnets import hub',
                 'import oqatnets.quant, oqatnets.net, oqatnets.factory', 'import oqatnets.training'):
        assert _run(f'{code}\n{census}').strip() == '[] True', code
    out = _run("from oqatnets.net import OQATNet\nfrom oqatnets.supernet import OQATSupernet\nfrom oqatnets import create_model\n"
               "print(isinstance(create_model('oqat_supernet', space='small', num_classes=3), OQATSupernet))")
    assert out.strip() == 'True'


def test_a_missing_optional_dependency_prints_its_install_line(monkeypatch):
    import click
    from click.testing import CliRunner

    from oqatnets.cli.main import cli

    @click.command('needs-onnx')
    def needs_onnx() -> None:
        raise ModuleNotFoundError("No module named 'onnx'", name='onnx')

    cli.add_command(needs_onnx)
    try:
        result = CliRunner().invoke(cli, ['needs-onnx'])
    finally:
        cli.commands.pop('needs-onnx')
    assert result.exit_code == 1
    assert result.output.strip() == "Error: this needs the optional dependency onnx: pip install 'oqatnets[onnx]'"
