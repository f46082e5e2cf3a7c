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


def test_import_is_lazy_and_complete():
    assert _run("import oqatnets, sys; print('torch' in sys.modules)").strip() == 'False'
    assert set(oqatnets.__all__) <= set(dir(oqatnets))
    assert all(getattr(oqatnets, name) is not None for name in oqatnets.__all__)


def test_timm_registration_whatever_the_import_order():
    for code in ('import oqatnets, timm', 'import timm, oqatnets',
                 "import oqatnets; oqatnets.create_model('oqat_2bit_m'); import timm"):
        assert _run(f"{code}\nprint('oqat_2bit_m' in timm.list_models('oqat*'))").strip() == 'True', code


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
