"""The package rules of DESIGN.md, checked on the source (function-level imports included, nothing is
imported): no import cycle among the project's modules; ebm_core imports only torch, numpy,
safetensors and the standard library; evaluation never imports flows, prefect or mlflow; mlflow is
imported only under flows/guard/ (the registry adapter, the pyfunc, serving); great_expectations only
under flows/data/."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ebm_core", "evaluation", "flows")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Absolute module names imported anywhere in the file (relative imports resolved)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def project_files() -> dict[str, Path]:
    return {
        module_name(p): p
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def import_graph() -> dict[str, set[str]]:
    files = project_files()
    graph: dict[str, set[str]] = defaultdict(set)
    for source, path in files.items():
        for target, _ in imports_of(path):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != source:
                graph[source].add(target)
                # importing P.M runs P/__init__ first, unless the importer is inside P
                parent = target.rpartition(".")[0]
                while parent:
                    if parent in files and parent != source and not source.startswith(parent + "."):
                        graph[source].add(parent)
                    parent = parent.rpartition(".")[0]
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def offenders(package_prefix: str, is_forbidden) -> dict[str, list[str]]:
    bad = {}
    for module, path in project_files().items():
        if not (module == package_prefix or module.startswith(package_prefix + ".")):
            continue
        hits = sorted({f"{name} (line {line})" for name, line in imports_of(path) if is_forbidden(module, name)})
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_among_project_modules():
    assert find_cycle(import_graph()) is None


def test_ebm_core_imports_only_torch_numpy_safetensors_and_the_standard_library():
    allowed = {"torch", "numpy", "safetensors", "ebm_core", "__future__"}
    stdlib = set(sys.stdlib_module_names)
    assert offenders("ebm_core", lambda _, name: top(name) not in allowed | stdlib) == {}


def test_evaluation_never_imports_flows_prefect_or_mlflow():
    assert offenders("evaluation", lambda _, name: top(name) in {"flows", "prefect", "mlflow", "great_expectations"}) == {}


def test_mlflow_is_imported_only_under_flows_guard():
    assert offenders("flows", lambda module, name: top(name) == "mlflow" and not module.startswith("flows.guard")) == {}


def test_great_expectations_is_imported_only_under_flows_data():
    assert offenders(
        "flows", lambda module, name: top(name) == "great_expectations" and not module.startswith("flows.data")
    ) == {}
