"""`make report`: the offline HTML page read back, and the W&B Report that would be sent, checked against what the
cell runs really log."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from adatp_bench.config import compose
from adatp_bench.errors import ConfigError
from adatp_bench.report import review
from adatp_bench.run import run_cell
from wandb_reader import read_run

GRID = ["method=vanilla,fastv,dycoke", "budget=r10", "benchmark=videomme_synth"]


class Page(HTMLParser):
    """The parts of the page the tests read: headings, images, table rows, collapsible sections, external links."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self.summaries: list[str] = []
        self.external: list[str] = []
        self._tag: str | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("src", "href"):
            if (values.get(key) or "").startswith(("http:", "https:", "//")):
                self.external.append(values[key] or "")
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "tr":
            self._row = []
        if tag in {"td", "th"} and self._row is not None:
            self._row.append("")  # an empty cell is a cell too
        self._tag = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        self._tag = None

    def handle_data(self, data: str) -> None:
        if self._tag in {"h1", "h2", "h3"}:
            self.headings.append(data.strip())
        elif self._tag == "summary":
            self.summaries.append(data.strip())
        elif self._tag in {"td", "th"} and self._row is not None:
            self._row[-1] += data.strip()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Vanilla and FastV at 10% on the tiny model, logged to W&B offline; DyCoke cannot go below 25% (n/a)."""
    root = tmp_path_factory.mktemp("review")
    for method in ("vanilla", "fastv", "dycoke"):
        cfg = compose([f"paths.root={root}", "experiment=demo", "logger=wandb", f"method={method}", *GRID[1:]])
        assert run_cell(cfg).status == ("n/a" if method == "dycoke" else "done")
    return root


def _main(root: Path, *extra: str) -> Path:
    out = root / "report"
    review.main(["--experiment", "demo", "--results", str(root / "results" / "runs"), "--out", str(out), *extra,
                 *GRID, f"paths.root={root}"])  # fmt: skip
    return out / "report_demo.html"


def test_offline_page_is_self_contained_and_holds_every_panel(sweep: Path) -> None:
    page = Page()
    page.feed(_main(sweep).read_text())
    assert page.headings[:1] == ["adatp-bench: demo"]
    for section in ("Table 1", "Accuracy vs FLOPs", "Latency vs FLOPs", "Runs per method"):
        assert section in page.headings
    assert len(page.images) == 2 and not page.external
    for src in page.images:  # the figures themselves, not links to them
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.partition(",")[2])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.summaries == ["vanilla", "fastv", "dycoke"]
    settings = {"100%", "100%/10%", "10%"}
    measured = {row[1]: row for row in page.rows if len(row) > 3 and row[0] == "tiny" and row[2] in settings}
    assert set(measured) == {"vanilla", "fastv", "dycoke"}
    assert measured["dycoke"][3] == "n/a"  # never "missing": it cannot be run
    records = {json.loads(p.read_text())["method"]: json.loads(p.read_text())
               for p in (sweep / "results" / "runs").glob("*/record.json")}  # fmt: skip
    assert float(measured["fastv"][3]) == pytest.approx(records["fastv"]["score"], abs=0.01)
    header = next(row for row in page.rows if row[-2:] == ["run_id", "note"])
    run_ids = {row[-2] for row in page.rows if len(row) == len(header) and row[0] == "tiny"}
    assert {r["run_id"] for r in records.values()} <= run_ids  # per-method runs name their results folders


def test_wandb_report_spec_points_at_what_the_cell_runs_log(sweep: Path) -> None:
    """Built offline (saving needs a login): its panels name metrics the offline cell runs really hold, and its run
    sets select the sweep's group and job types."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.expr import expr_to_filters

    from adatp_bench.report import table1

    table, long, paths = table1.build("demo", sweep / "results" / "runs", sweep / "t", [*GRID, f"paths.root={sweep}"])
    report = review.to_wandb_report(review.build_spec("demo", table, long, paths, "adatp-bench", "me"))
    assert isinstance(report, wr.Report) and report.project == "adatp-bench" and report.title == "adatp-bench: demo"
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    panels = [p for g in grids for p in g.panels]
    scatters = [p for p in panels if isinstance(p, wr.ScatterPlot)]
    assert {(p.x, p.y) for p in scatters} == {("flops/pct_of_vanilla", "score"),
                                              ("flops/pct_of_vanilla", "latency/prefill_ms")}  # fmt: skip
    assert [p.table_name for p in panels if isinstance(p, wr.WeavePanelSummaryTable)] == ["table1"]
    assert sum(isinstance(p, wr.RunComparer) for p in panels) == 3  # one per method
    filters = [expr_to_filters(g.runsets[0].filters) for g in grids]
    leaves = [{(f.key.name, f.value) for f in tree.filters} for tree in filters]
    assert all(("group", "demo") in leaf for leaf in leaves)
    assert {("method.name", "fastv"), ("jobType", "cell")} <= set().union(*leaves)
    assert all(g.runsets[0].entity == "me" for g in grids)
    logged: set[str] = set()
    for path in (sweep / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"):
        logged |= {k for row in read_run(path).history for k in row}
    assert {p.y for p in scatters} | {p.x for p in scatters} <= logged


def test_online_saves_the_report_and_a_failed_save_keeps_the_page(
    sweep: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import wandb_workspaces.reports.v2 as wr

    saved: list[wr.Report] = []
    monkeypatch.setattr(wr.Report, "save", lambda self, **kw: saved.append(self) or self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: "https://wandb.ai/me/adatp-bench/reports/x"))
    _main(sweep, "--wandb", "online", "--wandb-entity", "me")
    assert len(saved) == 1 and "W&B report: https://wandb.ai/me/adatp-bench/reports/x" in capsys.readouterr().out

    def refuse(self: wr.Report, **kw: object) -> None:
        raise RuntimeError("not logged in")

    monkeypatch.setattr(wr.Report, "save", refuse)
    page = sweep / "report" / "report_demo.html"
    page.unlink()
    with pytest.raises(ConfigError, match="wandb login"):
        _main(sweep, "--wandb", "online")
    assert page.stat().st_size > 10_000  # written before the save was tried
