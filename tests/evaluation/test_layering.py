"""evaluation/ holds statistics and schemas; rendering is evaluation/render/, which imports them and
is imported by none of them (checked on the source, function-level imports included)."""

import ast
import subprocess
import sys
from pathlib import Path

EVALUATION = Path(__file__).resolve().parents[2] / "evaluation"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_outside_render_imports_render():
    offenders = {}
    for path in sorted(EVALUATION.rglob("*.py")):
        if "render" in path.relative_to(EVALUATION).parts:
            continue
        bad = sorted(n for n in imported_modules(path) if n == "evaluation.render" or n.startswith("evaluation.render."))
        if bad:
            offenders[str(path.relative_to(EVALUATION))] = bad
    assert offenders == {}


def test_old_module_names_are_gone():
    for name in ("html_report.py", "json_io.py"):
        assert not (EVALUATION / name).exists()


def test_reports_and_comparisons_import_without_matplotlib():
    code = (
        "import sys, evaluation, evaluation.report, evaluation.compare, evaluation.files, "
        "evaluation.render, evaluation.render.tables, evaluation.render.markdown; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
