"""The layout holds: every module imports on its own, imports run down the layer order (no
cycles, no upward import, also none hidden inside a function), plugin packages use only the
public plugin API, and no module or function outgrows its size (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xaibench"

#: the layer order, lowest first; a module may import its own layer and those below it. The
#: longest matching prefix decides. ``runs.results`` (the tidy table) sits below ``report``,
#: which reads it, while the rest of ``runs`` composes a run's leaderboard and so sits above.
LAYERS = {
    "xaibench.errors": 0, "xaibench.util": 0, "xaibench.config": 0,
    "xaibench.registry": 1,
    "xaibench.registry.builtin": 2, "xaibench.engine": 2,
    "xaibench.explainers": 2, "xaibench.metrics": 2, "xaibench.models": 2, "xaibench.datasets": 2,
    "xaibench.runs.results": 3,
    "xaibench.report": 4,
    "xaibench.runs": 5,
    "xaibench": 6, "xaibench.api": 6, "xaibench.cli": 6, "xaibench.plugin": 6, "xaibench.testing": 6,
}
#: what the report must never import, whatever the layers say: it reads results, not the engine
REPORT_NEVER = ("xaibench.engine", "xaibench.explainers", "xaibench.metrics", "xaibench.models", "xaibench.datasets", "xaibench.registry.builtin")
#: what plugin packages may import of xaibench: their code, and their tests
PLUGIN_CODE_MAY = {"xaibench.plugin"}
PLUGIN_TESTS_MAY = {"xaibench", "xaibench.plugin", "xaibench.testing", "xaibench.cli"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)")
    return LAYERS[best]


def imports(path: Path, known: dict[str, Path] = MODULES) -> list[tuple[int, str, bool]]:
    """(line, imported xaibench module, at module level) for every import in ``path``; ``from X
    import Y`` counts as importing ``X.Y`` where that is a module. ``TYPE_CHECKING`` blocks skipped."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
        else:
            continue
        out += [(node.lineno, n, id(node) in top) for n in dict.fromkeys(names) if n == "xaibench" or n.startswith("xaibench.")]
    return out


def test_every_module_is_in_a_layer_and_imports_only_its_own_layer_and_below():
    wrong = []
    for name, path in MODULES.items():
        for line, target, _ in imports(path):
            if target == "xaibench":
                continue  # the package root (``__version__``, ``hookimpl``) is loaded before any module anyway
            if layer(target) > layer(name):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
            if name.startswith("xaibench.report") and target.startswith(REPORT_NEVER):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: the report imports {target}; it reads results, never the engine or the plugins")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycle_among_module_level_imports():
    graph = {name: {t for _, t, top in imports(path) if top and t in MODULES and t != "xaibench" and t != name} for name, path in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_every_module_imports_on_its_own_with_warnings_as_errors():
    """Each module imported first, in a fresh set of xaibench modules (torch stays loaded, so
    the whole check takes seconds): a cycle hidden by import order fails here."""
    code = (
        "import importlib, sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import torch, pandas, scipy.stats\n"
        f"names = {sorted(n for n in MODULES if not n.endswith('__main__'))!r}\n"
        "for n in names:\n"
        "    for k in [k for k in sys.modules if k == 'xaibench' or k.startswith('xaibench.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except Exception as exc:\n"
        "        print(f'{n}: {type(exc).__name__}: {exc}')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


PLUGIN_FILES = sorted(p for p in (ROOT / "plugins").glob("*/*/**/*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT / "plugins")))
def test_plugin_packages_import_only_the_public_surface(path: Path):
    is_test = "tests" in path.relative_to(ROOT / "plugins").parts
    allowed = PLUGIN_TESTS_MAY if is_test else PLUGIN_CODE_MAY
    wrong = [f"{path.relative_to(ROOT)}:{line}: {t}" for line, t, _ in imports(path) if t not in allowed]
    kind = "a plugin's tests import only" if is_test else "a plugin's code imports only"
    assert not wrong, f"{kind} {', '.join(sorted(allowed))}:\n" + "\n".join(wrong)


def _sizes(paths: list[Path]) -> list[str]:
    too_big = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_big.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} is {n} lines (at most {MAX_FUNCTION_LINES})")
    return too_big


def test_modules_and_functions_stay_small_in_the_core_and_the_plugin_packages():
    code = list(MODULES.values()) + [p for p in PLUGIN_FILES if "tests" not in p.relative_to(ROOT / "plugins").parts]
    too_big = _sizes(code)
    assert not too_big, "split these:\n" + "\n".join(too_big)


def test_the_checks_catch_what_they_are_for(tmp_path: Path):
    """The checks above fail on an upward import, a plugin reaching inside, and a long function."""
    low = tmp_path / "low.py"
    low.write_text("from xaibench.runs.runner import run_benchmark\nimport xaibench.engine.heatmaps\n")
    found = imports(low, {"xaibench.runs.runner": low})
    assert [t for _, t, _ in found] == ["xaibench.runs.runner", "xaibench.engine.heatmaps"]
    assert layer("xaibench.runs.runner") > layer("xaibench.engine.heatmaps") > layer("xaibench.config.parse")
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    saved = ROOT
    try:
        globals()["ROOT"] = tmp_path
        assert _sizes([long]) == [f"long.py:1: f is {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})"]
    finally:
        globals()["ROOT"] = saved
