"""`make report`: one review page of a sweep — a W&B Report when online, a self-contained HTML file always.

    python -m adatp_bench.report.review --experiment demo --out results/report            # HTML only (offline)
    python -m adatp_bench.report.review --experiment table1,table1_adatp --wandb online   # + a W&B Report

Both are rendered from one :class:`ReviewSpec` built from the records (the same grid and numbers as Table 1,
``report/table1.py``): the Table 1 panel (measured, and beside the paper), accuracy-vs-FLOPs and latency-vs-FLOPs
plots, and the runs of each method. The W&B Report (wandb-workspaces) points at the cell runs that ``logger=wandb``
logged under the sweep's group (the experiment name) and at the table's summary run; building it needs no network,
saving it does. The HTML file embeds its figures (base64) and styles, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from adatp_bench.errors import ConfigError
from adatp_bench.loggers.wandb import CELL_JOB, METRIC_FLOPS_PCT, METRIC_PREFILL_MS, METRIC_SCORE, SUMMARY_JOB
from adatp_bench.report import table1
from adatp_bench.results import git_state

PanelKind = Literal["table", "scatter", "runs"]


@dataclass(frozen=True)
class Panel:
    """One panel. ``table``: a rendered table (``frame``) and, on W&B, the summary run's logged table ``wandb_table``;
    ``scatter``: our figure (``image``) and, on W&B, a scatter of the cell runs' ``y`` against ``x``; ``runs``: one
    method's cells (``frame``) and, on W&B, a run comparer over the runs matching ``filters``."""

    kind: PanelKind
    title: str
    frame: pd.DataFrame | None = None
    image: Path | None = None
    x: str | None = None
    y: str | None = None
    filters: str | None = None
    wandb_table: str | None = None


@dataclass(frozen=True)
class Section:
    title: str
    text: str
    panels: list[Panel] = field(default_factory=list)


@dataclass(frozen=True)
class ReviewSpec:
    """Everything the page shows, independent of where it is rendered."""

    title: str
    description: str
    project: str
    entity: str | None
    group: str
    sections: list[Section]


ACCURACY_TEXT = (
    "Average score and agreement with vanilla against % of vanilla FLOPs (paper convention), one panel per model; "
    "hollow markers are published rows, never measured here."
)
LATENCY_TEXT = "Measured prefill latency against % FLOPs; the dashed line is FLOPs-proportional through vanilla."


def runs_filter(group: str, job_type: str, method: str | None = None) -> str:
    """A W&B run-set filter (wandb-workspaces expression syntax) selecting the sweep's runs of one job type."""
    expr = f"Metric('Group') == {group!r} and Metric('JobType') == {job_type!r}"
    return expr + (f" and Config('method.name') == {method!r}" if method else "")


def build_spec(
    experiment: str, table: pd.DataFrame, long: pd.DataFrame, paths: dict[str, Path], project: str,
    entity: str | None = None,
) -> ReviewSpec:  # fmt: skip
    """The page for one rendered Table 1 (``table1.pivot`` / ``collect`` output and ``table1.render``'s files)."""
    group = experiment  # conf/logger/wandb.yaml: cell runs are grouped by experiment_name; the summary run too
    counts = ", ".join(f"{n} {s}" for s, n in long.status.value_counts().items())
    git = git_state()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    description = (
        f"Experiment {experiment}: {counts} cells. Rendered {stamp} from results/runs at commit "
        f"{git['git_sha'] or 'unknown'}{' (uncommitted changes)' if git['git_dirty'] else ''}."
    )
    measured = table1.measured_view(table).map(table1._fmt)
    beside, sources = table1.beside_view(table)
    cells = [Panel("table", "Measured", frame=measured, wandb_table="table1", filters=runs_filter(group, SUMMARY_JOB))]
    if not beside.empty:
        note = "; ".join(f"[{i}] {s}" for i, s in enumerate(sources, 1))
        cells.append(Panel("table", f"Beside the paper ({note})", frame=beside))
    cell_runs = runs_filter(group, CELL_JOB)
    accuracy = Panel("scatter", "Accuracy vs % FLOPs", image=paths["png"], x=METRIC_FLOPS_PCT, y=METRIC_SCORE,
                     filters=cell_runs)  # fmt: skip
    latency = Panel("scatter", "Prefill latency vs % FLOPs", image=paths["latency_png"], x=METRIC_FLOPS_PCT,
                    y=METRIC_PREFILL_MS, filters=cell_runs)  # fmt: skip
    per_method = [
        Panel("runs", method, frame=_method_cells(long, method), filters=runs_filter(group, CELL_JOB, method))
        for method in dict.fromkeys(long.method)
    ]
    sections = [
        Section("Table 1", table1.FOOTNOTE, cells),
        Section("Accuracy vs FLOPs", ACCURACY_TEXT, [accuracy]),
        Section("Latency vs FLOPs", LATENCY_TEXT, [latency]),
        Section("Runs per method", "Every cell of the grid, by method (run id = results/runs/<run id>).", per_method),
    ]
    return ReviewSpec(f"adatp-bench: {experiment}", description, project, entity, group, sections)


def _method_cells(long: pd.DataFrame, method: str) -> pd.DataFrame:
    rows = long[long.method == method]
    columns = ["model", "setting", "benchmark", "status", "score", "pct_flops", "prefill_ms", "agreement_pct", "run_id"]
    titles = {"pct_flops": "% FLOPs", "prefill_ms": "prefill ms", "agreement_pct": "agree %"}
    shown = rows[columns].rename(columns=titles)
    shown = shown.assign(note=rows.error.fillna(""))
    return shown.map(table1._fmt)


# -- HTML ---------------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1400px;color:#222}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}h3{font-size:1rem}
p.note{color:#555;font-size:.85rem}table{border-collapse:collapse;font-size:.78rem;margin:.5rem 0 1rem}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:right}th{background:#f4f4f4}
td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}img{max-width:100%;border:1px solid #eee}
details{margin:.4rem 0}summary{cursor:pointer;font-weight:600}
"""


def to_html(spec: ReviewSpec) -> str:
    """The page as one self-contained HTML document (figures inlined as data URIs; no external resource)."""
    title = html.escape(spec.title)
    out = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head><body>',
        f"<h1>{title}</h1>",
        f'<p class="note">{html.escape(spec.description)}</p>',
    ]
    for section in spec.sections:
        out += [f"<h2>{html.escape(section.title)}</h2>", f'<p class="note">{html.escape(section.text)}</p>']
        for panel in section.panels:
            body = _panel_html(panel)
            if panel.kind == "runs":
                out.append(f"<details><summary>{html.escape(panel.title)}</summary>{body}</details>")
            else:
                out += [f"<h3>{html.escape(panel.title)}</h3>", body]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _panel_html(panel: Panel) -> str:
    if panel.image is not None:
        data = base64.b64encode(panel.image.read_bytes()).decode()
        return f'<img alt="{html.escape(panel.title)}" src="data:image/png;base64,{data}">'
    if panel.frame is not None:
        return panel.frame.to_html(index=False, escape=True, border=0, na_rep="")
    return ""


# -- W&B ----------------------------------------------------------------------------------------------------------
def to_wandb_report(spec: ReviewSpec) -> Any:
    """The page as a wandb-workspaces Report (not saved: :func:`publish` does that, online)."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as err:  # pragma: no cover - installed from the lock
        raise ConfigError("the W&B report needs wandb-workspaces (`make install` installs it)") from err

    def grid(filters: str | None, name: str, panel: Any) -> Any:
        runset = wr.Runset(entity=spec.entity or "", project=spec.project, name=name, filters=filters or "")
        return wr.PanelGrid(runsets=[runset], panels=[panel])

    blocks: list[Any] = [wr.P(spec.description), wr.TableOfContents()]
    for section in spec.sections:
        blocks += [wr.H2(section.title), wr.P(section.text)]
        for panel in section.panels:
            if panel.kind == "table" and panel.wandb_table:  # the summary run's logged table, live in W&B
                live = wr.WeavePanelSummaryTable(table_name=panel.wandb_table)
                blocks.append(grid(panel.filters, "Table 1 summary run", live))
            elif panel.kind == "table":
                frame = panel.frame if panel.frame is not None else pd.DataFrame()
                blocks += [wr.H3(panel.title), wr.MarkdownBlock(frame.to_markdown(index=False))]
            elif panel.kind == "scatter":
                blocks.append(grid(panel.filters, "cells", wr.ScatterPlot(title=panel.title, x=panel.x, y=panel.y)))
            else:
                blocks += [wr.H3(panel.title), grid(panel.filters, panel.title, wr.RunComparer(diff_only="split"))]
    return wr.Report(
        project=spec.project, entity=spec.entity or "", title=spec.title, description=spec.description[:250],
        blocks=blocks, width="fluid",
    )


def publish(spec: ReviewSpec) -> str:
    """Save the W&B Report (needs `wandb login` and network) and return its URL."""
    report = to_wandb_report(spec)
    try:
        report.save()
    except Exception as err:
        raise ConfigError(
            f"could not save the W&B report to project {spec.project!r}: {type(err).__name__}: {err} "
            "(logged in? `wandb login`; the HTML page was written anyway)"
        ) from err
    return str(report.url)


def main(argv: list[str] | None = None) -> None:
    """CLI: Table 1's files, then the HTML page, then (``--wandb online``) the W&B Report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="table1,table1_adatp", help="one or more experiments, comma-separated")
    parser.add_argument("--results", type=Path, default=Path("results/runs"))
    parser.add_argument("--out", type=Path, default=Path("results/report"))
    parser.add_argument(
        "--wandb",
        choices=["offline", "online", "disabled"],
        default="offline",
        help="online: also save a W&B Report (offline/disabled: the HTML page only)",
    )
    parser.add_argument("--wandb-project", default="adatp-bench")
    parser.add_argument("--wandb-entity", default=None)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides the sweep used, e.g. model=llava_ov_7b")
    args = parser.parse_args(argv)
    table, long, paths = table1.build(args.experiment, args.results, args.out, args.overrides)
    spec = build_spec(args.experiment, table, long, paths, args.wandb_project, args.wandb_entity)
    page = args.out / f"report_{args.experiment.replace(',', '+')}.html"
    page.write_text(to_html(spec))
    print(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB, self-contained)")
    failed = int((long.status == "failed").sum())
    if args.wandb == "online":
        print("W&B report:", publish(spec))
    if failed:
        sys.exit(f"{failed} failed cell(s) in the report; their errors are listed in {paths['md']}")


if __name__ == "__main__":
    main()
