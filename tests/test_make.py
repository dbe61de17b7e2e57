"""The Makefile's user-facing commands, run as users run them: `make demo` finishes every cell of its grid without a
failure, and exits non-zero (after rendering the table) when a cell fails."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from adatp_bench.report.grid import experiment_cells

ROOT = Path(__file__).resolve().parents[1]


def _make(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """`make -C <repo> <args>` as a user types it: nothing inherited from a `make test` that may be running us."""
    record = json.loads((Path(sys.prefix) / "adatp-install.json").read_text())
    stamp = f".venv/.installed-{record['flavour']}"  # never reinstall from inside the test suite
    cmd = ["make", "-C", str(ROOT), "-o", stamp, f"TORCH={record['flavour']}", "ARGS=", *args]
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _summary(workdir: Path) -> str:
    (path,) = workdir.glob("outputs/multiruns/*/summary.txt")
    return path.read_text()


def _check_notebook(workdir: Path, records: list[dict], n_cells: int) -> None:
    """Execute notebooks/explore_results.ipynb on ``workdir``'s records (scripts/run_notebook.py, kernel python3 in
    the notebooks folder) and check it: no cell raised, the kernel ran this interpreter, every plot cell drew a figure,
    and the status counts it printed are those of the records on disk (every grid cell's record found)."""
    import nbformat

    out = workdir / "explore_results.executed.ipynb"
    cmd = [sys.executable, str(ROOT / "scripts" / "run_notebook.py"), str(ROOT / "notebooks" / "explore_results.ipynb"),
           "--results", str(workdir / "results" / "runs"), "--experiment", "demo", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    plots = [c for c in code if "plot" in c.metadata.get("tags", [])]
    assert len(plots) >= 6
    blank = [c.source.splitlines()[0] for c in plots if not any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert not blank, f"plot cells without a figure: {blank}"
    stdout = "".join(o.text for c in code for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
    printed = dict(re.findall(r"^(python|status counts|grid cells): (.*)$", stdout, re.MULTILINE))
    assert os.path.normpath(printed["python"]) == os.path.normpath(sys.executable)  # the venv's, not a system one
    assert json.loads(printed["status counts"]) == dict(Counter(r["status"] for r in records))
    grid = json.loads(printed["grid cells"])  # every record found through the grid, none missing or failed
    assert grid.get("ok") == sum(r["status"] == "ok" for r in records) and sum(grid.values()) == n_cells, grid
    assert not {"missing", "failed"} & set(grid), grid


@pytest.mark.slow
def test_make_demo_finishes_every_cell_without_a_failure(tmp_path: Path) -> None:
    proc = _make("demo", f"WORKDIR={tmp_path}", timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = _summary(tmp_path)
    assert "failed" not in summary and "busy" not in summary and "unknown" not in summary, summary
    cells = experiment_cells("demo", [f"paths.root={tmp_path}"])
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*/record.json")]
    assert len(records) == len(cells) > 50
    assert {r["status"] for r in records} == {"ok"}
    assert {r["run_id"] for r in records} == {c.run_id for c in cells}
    table = (tmp_path / "results" / "demo" / "table1.md").read_text()
    assert "failed" not in table.split("_Scores", 1)[0]
    # The analysis notebook runs on these records (WORKDIR's results/runs, its grid found through paths.root).
    _check_notebook(tmp_path, records, n_cells=len(cells))


@pytest.mark.slow
def test_make_demo_exits_non_zero_after_rendering_when_a_cell_fails(tmp_path: Path) -> None:
    args = "method=fastv budget=r25 benchmark=videomme_synth method.retention=0.5,1.5"
    proc = _make("demo", f"WORKDIR={tmp_path}", f"ARGS={args}", timeout=600)
    assert proc.returncode != 0
    assert "1 failed" in _summary(tmp_path)  # 50% ran; 150% cannot
    records = (tmp_path / "results" / "runs").glob("*/record.json")
    statuses = sorted(json.loads(p.read_text())["status"] for p in records)
    assert statuses == ["failed", "ok"]
    table = (tmp_path / "results" / "demo" / "table1.md").read_text()  # rendered despite the failure
    assert "retention=1.5 is impossible" in table
