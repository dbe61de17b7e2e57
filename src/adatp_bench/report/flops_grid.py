"""(b)-(d) FLOPs of the Table 1 grid from the real methods: `expected_video_tokens` on the full-size layouts.

(b) every (model, method, budget) cell of conf/experiment/table1.yaml: each method is built from its conf/method YAML,
    validated on the full-size model and asked for `expected_video_tokens` on the full-size layout; the counts are
    converted to the paper convention (docs/flops.md §3) and turned into TFLOPs and % of the same model's vanilla, or
    reported as invalid (the ConfigError) or data-dependent; cells with a FastVID row are compared with it;
(c) the AdaTP operating points of conf/experiment/table1_adatp.yaml next to AdaTP's published % FLOPs targets;
(d) FastVID's settings outside the budget grid (DyCoke 32.5%, PruneVID β = 11%, PDrop and SparseVLM schedules).

No weights are loaded. The printed values compared with come from `report.published`; `flops_table` renders the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from adatp_bench import flops
from adatp_bench.config import compose, method_defaults
from adatp_bench.core.layout import VideoLayout
from adatp_bench.errors import ConfigError
from adatp_bench.models.full_size import video_path
from adatp_bench.pruning import PruningMethod, build_method
from adatp_bench.report.flops_rows import compact_schedule, model_config, vanilla_tflops
from adatp_bench.report.grid import experiment_axes
from adatp_bench.report.published import PublishedRow, adatp_targets, load_published_rows

DATA_DEPENDENT = "data-dependent (recorded per sample at run time)"

#: Methods whose in-LLM stages rank LLaVA-OV's single trailing newline together with the grid tokens (upstream ranks the
#: whole image span: docs/methods/pdrop.md deviation 4, docs/methods/sparsevlm.md deviation 2). Whether it survives a
#: stage depends on the sample, so the paper count of a pruned layer is n − 1 (kept) or n (dropped): both are shown.
NEWLINE_RANKED = frozenset({"pdrop", "sparsevlm"})

#: Printed retentions of FastVID's pre-LLM rows per budget: int(196·r) on LLaVA-OV, int(169·r) on LLaVA-Video.
_OV_PRE = {"r25": "25%", "r20": "19.9%", "r15": "14.8%", "r10": "9.7%"}
_VIDEO_PRE = {"r25": "24.9%", "r10": "9.5%"}

#: Grid cells with a FastVID row to compare with: (model, method) → (FastVID row, {budget: printed retention}, note).
#: The printed TFLOPs are read from report/reference/*.csv.
FASTVID_EQUIVALENTS: dict[tuple[str, str], tuple[str, dict[str, str], str]] = {
    ("llava_ov_7b", "vanilla"): ("Vanilla", {"all": "100%"}, ""),
    ("llava_ov_7b", "fastv"): ("FastV", {b: f"100%/{b[1:]}%" for b in _OV_PRE}, ""),
    ("llava_ov_7b", "visionzip"): ("VisionZip*", _OV_PRE, ""),
    ("llava_ov_7b", "visionzip_pre"): ("VisionZip", _OV_PRE, ""),
    ("llava_ov_7b", "dycoke"): ("DyCoke", {"r25": "25%"}, ""),
    ("llava_ov_7b", "fastvid"): ("FastVID", _OV_PRE, ""),
    ("llava_ov_7b", "random"): ("VisionZip*", _OV_PRE, "same int(196·r) per frame"),
    ("llava_ov_7b", "uniform"): ("VisionZip*", _OV_PRE, "same int(196·r) budget"),
    ("llava_video_7b", "vanilla"): ("Vanilla", {"all": "100%"}, ""),
    ("llava_video_7b", "fastv"): ("FastV", {"r25": "100%/25%", "r10": "100%/10%"}, ""),
    ("llava_video_7b", "visionzip"): ("VisionZip*", _VIDEO_PRE, ""),
    ("llava_video_7b", "visionzip_pre"): ("VisionZip", _VIDEO_PRE, ""),
    ("llava_video_7b", "dycoke"): ("DyCoke", {"r25": "25%"}, ""),
    ("llava_video_7b", "fastvid"): ("FastVID", _VIDEO_PRE, ""),
}

_UNIFORM_GAP = "uniform keeps the largest near-square grid within int(196·r): {grid} per frame"
#: Compared cells that are not expected to match, and why: (model, method, budget) → reason.
KNOWN_GAPS: dict[tuple[str, str, str], str] = {
    ("llava_ov_7b", "uniform", "r20"): _UNIFORM_GAP.format(grid="6×6 = 36 of 39"),
    ("llava_ov_7b", "uniform", "r15"): _UNIFORM_GAP.format(grid="5×5 = 25 of 29"),
    ("llava_ov_7b", "uniform", "r10"): _UNIFORM_GAP.format(grid="4×4 = 16 of 19"),
}


def table1_grid(experiment: str = "table1") -> tuple[list[str], list[str], list[str]]:
    """(models, methods, budgets) swept by conf/experiment/<experiment>.yaml."""
    _, axes = experiment_axes(experiment)
    values = {axis[0].partition("=")[0]: [o.partition("=")[2] for o in axis] for axis in axes}
    return values["model"], values["method"], values["budget"]


def full_size_layout(model: str) -> VideoLayout:
    """The unpruned video layout of a full-size model, from its config alone (video_start = 0, no text)."""
    vp = video_path(model)
    return VideoLayout(
        video_start=0,
        num_frames=vp.frames,
        grid_h=vp.pooled_grid,
        grid_w=vp.pooled_grid,
        newline_layout=vp.newline_layout,
        seq_len=vp.visual_tokens + vp.newline_tokens,
    )


@dataclass(frozen=True)
class GridRow:
    """One (model, method, budget) cell: paper-convention video tokens per layer, TFLOPs and % of vanilla.

    `status` is "ok", "invalid" (`message` = the ConfigError) or "data-dependent" (`message` = what is fixed, if
    anything). `*_alt` is set for `NEWLINE_RANKED` methods on LLaVA-OV: the same cell with the newline dropped.
    """

    model: str
    method: str
    budget: str  # "r25", ..., or "all" when the settings do not depend on the budget
    status: str
    message: str = ""
    tokens_per_layer: tuple[float, ...] = ()
    tflops: float | None = None
    pct: float | None = None
    tokens_per_layer_alt: tuple[float, ...] | None = None
    tflops_alt: float | None = None
    pct_alt: float | None = None
    published: PublishedRow | None = None
    published_note: str = ""
    known_gap: str = ""

    @property
    def printed_schedule_differs(self) -> bool:
        """The printed row's token schedule (where the CSV gives one) differs from ours by a token or more."""
        if self.status != "ok" or self.published is None or not self.published.schedule:
            return False
        printed = flops.parse_schedule(self.published.schedule)
        return all(any(abs(a - b) >= 1 for a, b in zip(printed, ours, strict=True)) for ours in self._alternatives())

    def _alternatives(self) -> list[tuple[float, ...]]:
        return [t for t in (self.tokens_per_layer, self.tokens_per_layer_alt) if t is not None]

    @property
    def matches(self) -> bool | None:
        """Our TFLOPs (either alternative) equal the printed FastVID value at its precision; None if not comparable."""
        if self.status != "ok" or self.published is None:
            return None
        d = self.published.decimals
        ours = [t for t in (self.tflops, self.tflops_alt) if t is not None]
        return any(f"{t:.{d}f}" == f"{self.published.published:.{d}f}" for t in ours)


def _published_index() -> dict[tuple[str, str, str], PublishedRow]:
    return {(r.model, r.method, r.retention): r for r in load_published_rows()}


def evaluate_cell(
    model: str,
    method: str,
    settings: dict,
    budget: str,
    published: PublishedRow | None = None,
    published_note: str = "",
    known_gap: str = "",
    build_as: str | None = None,
) -> GridRow:
    """Build `method` with `settings` (as `build_as`, for presets), validate it on `model` and count its tokens."""
    layout, layers = full_size_layout(model), model_config(model).text_config.num_hidden_layers
    common = dict(model=model, method=method, budget=budget, published=published, published_note=published_note)
    try:
        instance = build_method(build_as or method, **settings)
        instance.validate(layout.tokens_per_frame, layout.num_frames, layers)
    except ConfigError as exc:
        return GridRow(status="invalid", message=str(exc), **common)
    counts = instance.expected_video_tokens(layout, layers)
    if counts is None:
        return GridRow(status="data-dependent", message=_fixed_part(instance, layout, layers), **common)
    newlines = 0 if getattr(instance, "newline_policy", None) == "none" else layout.num_newlines
    vanilla = vanilla_tflops(model)
    tokens = flops.paper_counts(layout, counts, newline_ranked=False, newlines=newlines)
    tflops = flops.paper_tflops(model_config(model), tokens, available=video_path(model).paper_video_tokens)
    alt = {}
    if (build_as or method) in NEWLINE_RANKED and layout.newline_layout == "per_video":
        alt_tokens = flops.paper_counts(layout, counts, newline_ranked=True, newlines=newlines)
        if alt_tokens != tokens:
            alt_tflops = flops.paper_tflops(model_config(model), alt_tokens)
            alt = dict(
                tokens_per_layer_alt=tuple(alt_tokens), tflops_alt=alt_tflops, pct_alt=100 * alt_tflops / vanilla
            )
    return GridRow(
        status="ok",
        tokens_per_layer=tuple(tokens),
        tflops=tflops,
        pct=100 * tflops / vanilla,
        known_gap=known_gap,
        **alt,
        **common,
    )


def _fixed_part(instance: PruningMethod, layout: VideoLayout, layers: int) -> str:
    """For a per-row (LLaVA-Video) cell whose newlines alone are data-dependent: the grid tokens per layer, read from
    the method's own count on the same grid with one trailing newline."""
    if layout.newline_layout != "per_row":
        return ""
    twin = replace(layout, newline_layout="per_video")
    counts = instance.expected_video_tokens(twin, layers)
    if counts is None:
        return ""
    grid = compact_schedule([n - twin.num_newlines for n in counts])
    return f"grid tokens {grid} + the newline of each row with a kept token"


def grid_rows(experiment: str = "table1") -> list[GridRow]:
    """Every cell of the Table 1 grid, with the FastVID row it can be compared with (if any)."""
    models, methods, budgets = table1_grid(experiment)
    index = _published_index()
    rows = []
    for model in models:
        for method in methods:
            configs = {b: method_defaults(method, b) for b in budgets}
            if all(c == configs[budgets[0]] for c in configs.values()):  # budget-independent (vanilla)
                configs = {"all": configs[budgets[0]]}
            csv_method, retentions, note = FASTVID_EQUIVALENTS.get((model, method), ("", {}, ""))
            for budget, settings in configs.items():
                published = index.get((model, csv_method, retentions[budget])) if budget in retentions else None
                gap = KNOWN_GAPS.get((model, method, budget), "")
                rows.append(evaluate_cell(model, method, settings, budget, published, note, gap))
    return rows


@dataclass(frozen=True)
class OperatingPoint:
    """An AdaTP preset paired with its model (conf/operating_point/<name>.yaml) and its published FLOPs target."""

    name: str
    model: str
    method: str  # conf/method/<method>.yaml, an AdaTP preset
    label: str  # setting_label, e.g. "27.30% FLOPs"
    target_pct: float  # AdaTP's published % of vanilla FLOPs (report/reference/adatp_headline.csv)


def operating_points(experiment: str = "table1_adatp") -> list[OperatingPoint]:
    """The AdaTP operating points swept by conf/experiment/<experiment>.yaml, with their published targets."""
    fixed, axes = experiment_axes(experiment)
    targets = adatp_targets()
    out = []
    for override in next(axis for axis in axes if axis[0].startswith("+operating_point=")):
        name = override.partition("=")[2]
        cfg = compose([*fixed, override], return_hydra_config=True)
        picks = cfg.hydra.runtime.choices
        label = str(cfg.setting_label)
        pct = float(label.partition("%")[0])
        match = [t for m, t in targets if m == picks["model"] and abs(t - pct) < 5e-3]
        if len(match) != 1:
            raise ConfigError(f"operating point {name!r} ({label}, {picks['model']}): no AdaTP headline row matches")
        out.append(OperatingPoint(name, picks["model"], picks["method"], label, match[0]))
    return out


def operating_point_rows(experiment: str = "table1_adatp") -> list[tuple[OperatingPoint, GridRow]]:
    """Each AdaTP operating point evaluated like a grid cell (the presets are `adatp` settings)."""
    return [
        (op, evaluate_cell(op.model, op.method, method_defaults(op.method), op.label, build_as="adatp"))
        for op in operating_points(experiment)
    ]


@dataclass(frozen=True)
class OutsideGrid:
    """A FastVID setting outside the budget grid: our method with `overrides` over its r25 config, and the printed row
    (`printed` = (CSV method, retention), or (printed TFLOPs, source) for rows not in report/reference/)."""

    label: str
    model: str
    method: str
    overrides: dict
    printed: tuple[str, str]
    known_gap: str = ""


OUTSIDE_GRID: list[OutsideGrid] = [
    OutsideGrid(
        "DyCoke 32.5% (K = 0.9)",
        "llava_ov_7b",
        "dycoke",
        {"retention": 0.325},
        ("DyCoke", "32.5%"),
        "FastVID counts the ideal 0.325·6272 = 2038 tokens; the TTM code keeps int(0.1·196) = 19 per pruned frame, "
        "8·196 + 24·19 = 2024 (docs/methods/dycoke.md deviation 8)",
    ),
    OutsideGrid("DyCoke 32.1% (K = 0.9)", "llava_video_7b", "dycoke", {"retention": 0.325}, ("DyCoke", "32.1%")),
    OutsideGrid(
        "PruneVID* 10.1% (β = 0.11)", "llava_ov_7b", "prunevid_stage1", {"retention": 0.11}, ("PruneVID*", "10.1%")
    ),
    OutsideGrid(
        "PruneVID 10.1%/3.9% (β = 0.11)", "llava_ov_7b", "prunevid", {"retention": 0.11}, ("PruneVID", "10.1%/3.9%")
    ),
    OutsideGrid(
        "PyramidDrop 100%/4.1%/2.0%/1.0%",
        "llava_ov_7b",
        "pdrop",
        {"retention": 0.041, "reference_ratios": [0.041, 0.020, 0.010]},
        ("14.7", "FastVID Table 11; docs/flops.md §4"),
    ),
    OutsideGrid(
        "SparseVLM 10.4/5.3/2.9%, no recycling",
        "llava_ov_7b",
        "sparsevlm",
        {"retention": 0.104, "recycle": False},
        ("7.06", "FastVID Table 11; docs/flops.md §4"),
    ),
]


def outside_grid_rows() -> list[tuple[str, GridRow]]:
    """`OUTSIDE_GRID` evaluated; printed values from the CSVs where they are there."""
    index = _published_index()
    out = []
    for o in OUTSIDE_GRID:
        published = index.get((o.model, *o.printed))
        if published is None:  # a printed value that is not in report/reference/ (FastVID Table 11)
            value, source = o.printed
            published = PublishedRow(source, o.model, o.method, o.label, "", value)
        settings = {**method_defaults(o.method), **o.overrides}
        out.append((o.label, evaluate_cell(o.model, o.method, settings, o.label, published, known_gap=o.known_gap)))
    return out
