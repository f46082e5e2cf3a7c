"""The package's structure: one-way imports (no cycle, counting imports inside functions), function-level
imports only where allowed, and a core that installs nothing and changes no process-wide state."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {'oqatnets': REPO / 'oqatnets', 'oqatnets.training': REPO / 'training', 'oqatnets.zoo': REPO / 'zoo',
            'oqatnets.cli': REPO / 'cli'}
# Imports allowed inside functions: optional dependencies, and the CLI's heavy imports (start-up time).
OPTIONAL = ('onnx', 'onnxruntime', 'matplotlib', 'ofa', 'torch.utils.tensorboard', 'tensorboard',
            'timm')  # timm: registration is deferred until the user imports it (importing it costs ~1 s)
LAZY_OK_PACKAGES = ('oqatnets.cli',)


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob('*.py')):
            out[package if path.stem == '__init__' else f'{package}.{path.stem}'] = path
    return out


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ''
    base = module.split('.') if module in PACKAGES else module.split('.')[:-1]
    base = base[:len(base) - node.level + 1]
    return '.'.join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import of ``path``."""
    tree = ast.parse(path.read_text(encoding='utf-8'))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, child)
                found.append((target, nested))
                found.extend((f'{target}.{alias.name}', nested) for alias in child.names)
            visit(child, inner)
    visit(tree, False)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {t for t, _ in _imports(m, p) if t in modules and t != m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))
    for v in graph:
        if v not in index:
            strong(v)
    return out


def _package_import(module: str) -> bool:
    """A package's ``__init__`` importing its own submodules is not a cycle of concerns."""
    return module in PACKAGES


def test_no_import_cycle_counting_imports_inside_functions():
    graph = _graph()
    # A submodule importing its package's public name from __init__ would loop through __init__.
    graph = {m: {t for t in ts if not _package_import(t)} for m, ts in graph.items()}
    assert _cycles(graph) == []


def test_core_never_imports_training_zoo_or_cli():
    graph = _graph()
    for module, targets in graph.items():
        if module == 'oqatnets' or (module.startswith('oqatnets.') and module.count('.') == 1 \
                and module.split('.')[1] not in ('training', 'zoo', 'cli')):
            assert not {t for t in targets if t.startswith(('oqatnets.training', 'oqatnets.zoo', 'oqatnets.cli'))}, module


def test_imports_inside_functions_only_for_optional_dependencies():
    offenders = []
    for module, path in _modules().items():
        if module.startswith(LAZY_OK_PACKAGES):
            continue
        for target, nested in _imports(module, path):
            if nested and not target.startswith(OPTIONAL):
                offenders.append(f'{module} imports {target} inside a function')
    assert offenders == []


def test_import_oqatnets_loads_nothing_that_installs_data():
    code = ('import json, sys, oqatnets; '
            'print(json.dumps(sorted(m for m in sys.modules if m.startswith("oqatnets"))))')
    loaded = json.loads(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                                       cwd=REPO).stdout)
    assert not [m for m in loaded if m.startswith(('oqatnets.training', 'oqatnets.cli', 'oqatnets.zoo'))]
    modules = _modules()
    for module in loaded:
        source = modules[module].read_text(encoding='utf-8') if module in modules else ''
        for word in ('apt-get', 'dpkg', 'npm ', 'setdefaulttimeout', 'os.umask', 'matplotlib.use'):
            assert word not in source, f'{module} mentions {word}'


def test_no_library_module_changes_process_wide_state():
    patterns = ('torch.manual_seed(', 'os.environ[', 'os.environ.setdefault(', 'os.umask(', 'setdefaulttimeout(',
                'matplotlib.use(', 'torch.set_num_threads(', 'apt-get', 'dpkg -x')
    # the one seeding of torch's global generator happens inside torch.random.fork_rng, restored on exit
    allowed = {('oqatnets.training.checkpoint', 'torch.manual_seed(')}
    offenders = [f'{m}: {p}' for m, path in _modules().items() if not m.startswith(LAZY_OK_PACKAGES)
                 for p in patterns if p in path.read_text(encoding='utf-8') and (m, p) not in allowed]
    assert offenders == []
