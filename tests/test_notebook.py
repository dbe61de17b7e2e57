"""Static checks of notebooks/explore_results.ipynb, without executing it (executed on the demo's records in
tests/test_make.py): a valid notebook with a papermill-style parameters cell, plain-Python code cells that parse, tidy
lines, no absolute machine paths, no stored errors, and package names it imports that exist."""

from __future__ import annotations

import ast
import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_results.ipynb"
MAX_COLUMNS = 120
#: Paths that only exist on one machine: home folders, scratch/work/tmp mounts, a Windows drive.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:home|Users|work|tmp|mnt|scratch|root|data|private|var/folders)/|\b[A-Z]:\\")
PARAMETERS = {"RESULTS": "ADATP_RESULTS", "EXPERIMENT": "ADATP_EXPERIMENT"}
PLOT_CELLS = 6  # score, latency, agreement vs FLOPs; tokens per layer; per-sample latency; heatmap


def _tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def notebook_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Everything wrong with ``nb`` as a committed analysis notebook (empty when it is fine)."""
    problems: list[str] = []
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        problems.append(f"invalid nbformat: {exc.message}")
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"kernelspec is {kernel!r}, not 'python3'")
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [i for i, c in enumerate(code) if "parameters" in _tags(c)]
    if params != [0]:
        problems.append(f"the first code cell, and only it, must be tagged 'parameters' (tagged: {params})")
    else:
        source = _text(code[0].source)
        try:
            assigned = {t.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Assign)
                        for t in n.targets if isinstance(t, ast.Name)}
        except SyntaxError:
            assigned = set()
        for name, env in PARAMETERS.items():
            if name not in assigned or env not in source:
                problems.append(f"parameters cell must assign {name} from the environment variable {env}")
    plots = [c for c in code if "plot" in _tags(c)]
    if len(plots) < PLOT_CELLS:
        problems.append(f"{len(plots)} code cells tagged 'plot', expected at least {PLOT_CELLS}")
    for i, cell in enumerate(nb.cells):
        source = _text(cell.source)
        if cell.cell_type == "code":
            try:
                ast.parse(source)
            except SyntaxError as exc:
                problems.append(f"cell {i}: does not parse as Python (no magics): {exc.msg} at line {exc.lineno}")
            for n, line in enumerate(source.splitlines(), 1):
                if len(line) > MAX_COLUMNS:
                    problems.append(f"cell {i} line {n}: {len(line)} > {MAX_COLUMNS} columns")
        stored = json.dumps(cell.get("outputs", [])) + json.dumps(cell.get("metadata", {}))
        for where, text in (("source", source), ("outputs/metadata", stored)):
            if match := ABSOLUTE_PATH.search(text):
                problems.append(f"cell {i}: absolute machine path in its {where}: {match.group(0)!r}")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"cell {i}: stored error output {output.get('ename')}: {output.get('evalue')}")
            elif output.get("name") == "stderr" and "Traceback" in _text(output.get("text", "")):
                problems.append(f"cell {i}: stored traceback on stderr")
    return problems


def package_imports(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(module, name) of every ``from adatp_bench... import name`` in the code cells."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(_text(cell.source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adatp_bench"):
                found += [(node.module, alias.name) for alias in node.names]
    return found


@pytest.fixture(scope="module")
def notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_clean(notebook: nbformat.NotebookNode) -> None:
    assert notebook_problems(notebook) == []


def test_notebook_imports_exist_in_the_package(notebook: nbformat.NotebookNode) -> None:
    imports = package_imports(notebook)
    assert imports, "the notebook should build on package functions (adatp_bench.results, report.table1, ...)"
    missing = [f"{m}.{n}" for m, n in imports if not hasattr(importlib.import_module(m), n)]
    assert missing == []


def _broken(nb: nbformat.NotebookNode, how: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` with one defect."""
    nb = copy.deepcopy(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if how == "syntax":
        code[-1].source += "\n%matplotlib inline"
    elif how == "error output":
        code[1].outputs = [nbformat.v4.new_output("error", ename="KeyError", evalue="'score'", traceback=[])]
    elif how == "absolute path":
        code[0].source = code[0].source.replace('str(CHECKOUT / "results" / "runs")', '"/home/me/results/runs"')
    elif how == "no parameters tag":
        code[0].metadata["tags"] = []
    elif how == "long line":
        code[2].source += "\n# " + "x" * MAX_COLUMNS
    elif how == "invalid":
        nb.cells[0]["cell_type"] = "cod"
    return nb


@pytest.mark.parametrize(
    "how, expected",
    [
        ("syntax", "does not parse"),
        ("error output", "stored error output KeyError"),
        ("absolute path", "absolute machine path"),
        ("no parameters tag", "tagged 'parameters'"),
        ("long line", "columns"),
        ("invalid", "invalid nbformat"),
    ],
)
def test_the_checks_catch_each_defect(notebook: nbformat.NotebookNode, how: str, expected: str) -> None:
    problems = notebook_problems(_broken(notebook, how))
    assert any(expected in p for p in problems), problems
