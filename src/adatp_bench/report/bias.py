"""``make bias``: where the unpruned model's attention goes, and what AdaTP's debiasing changes (docs/bias.md).

    python -m adatp_bench.report.bias model=tiny benchmark=videomme_synth limit=4 method=adatp method.prune_layers=[0,1]
    python -m adatp_bench.report.bias model=llava_ov_7b model.num_frames=32 benchmark=videomme

AdaTP (arXiv 2505.20100, §1 and Figure 1) motivates its two debiasing modules with two observations on the attention
scores that attention-based pruners rank by: a *global* bias (attention piles up at the end of the video: 86.8% of the
top-10% tokens in the last 4 of 32 frames at LLM layer 1 of LLaVA-OneVision-7B) and a *local* bias (attention piles up
at the same spatial positions in every frame). The paper does not publish its measurement protocol; ours (a
reconstruction, docs/bias.md) is, for every sample and every decoder layer ``l`` (0-based):

- ``a_l``: the attention of the final prompt token to every grid token (FastV's row), head-averaged, fp32 softmax,
  from the attention-row probe (``models/attention.py``: SDPA stays on, no S×S matrix), renormalised over the grid
  tokens (newlines and text excluded; the layout's newlines are skipped by token kind, never by counting);
- global: the share of the top ``⌈q·N⌋`` tokens of ``a_l`` that lie in the last ``k`` frames, against ``k/F`` for
  uniform attention, and the attention mass per frame;
- local: ``a_l`` summed over frames per cell (h, w), normalised, and ``max / mean`` over cells (1 = no spatial bias).

Before/after debiasing, at AdaTP's retention r: the tokens a plain top-r selection by ``a_{rank_layer}`` keeps (FastV's
ranking) against the tokens AdaTP's last stage keeps, observed through :func:`observed` (a subclass that records the
selections of the unchanged AdaTP): share of kept tokens in the last ``k`` frames and ``max / mean`` kept tokens per
cell. Nothing here is a pruning method of the registry: sweeps never see these classes.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from adatp_bench.config import compose, method_defaults, method_settings
from adatp_bench.core.context import SampleContext
from adatp_bench.core.layout import VisualTokens
from adatp_bench.core.sequence import TEXT, VISUAL, SequenceState
from adatp_bench.errors import AdatpBenchError, ConfigError
from adatp_bench.pruning import PruningMethod, build_method
from adatp_bench.report.published import published_bias

#: One selection of grid tokens: (stage, frame, row, col).
Selection = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------------
# The statistics (pure functions of one attention map or one selection)
# ---------------------------------------------------------------------------------------------------------------------


def normalised(attention: torch.Tensor) -> torch.Tensor:
    """``attention`` (F, h, w) divided by its sum, in fp32 (the share of the grid tokens' attention each one gets)."""
    attention = attention.float()
    total = float(attention.sum())
    if not total > 0:
        raise ValueError("the attention over the grid tokens sums to 0")
    return attention / total


def top_count(num_tokens: int, share: float) -> int:
    """How many tokens a top-``share`` selection keeps: ``round(share·N)`` (FastV's rounding), at least 1."""
    return max(1, min(num_tokens, round(num_tokens * share)))


def top_cells(attention: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frame, row, col) of the top ``share`` of the (F, h, w) map; ties go to the earlier token (stable sort), so a
    tie never counts towards the last frames."""
    f, h, w = attention.shape
    order = torch.sort(-attention.reshape(-1).double(), stable=True).indices[: top_count(f * h * w, share)]
    return order // (h * w), (order // w) % h, order % w


def frame_mass(attention: torch.Tensor) -> torch.Tensor:
    """(F,) attention mass per frame of a normalised (F, h, w) map (sums to 1)."""
    return attention.sum(dim=(1, 2))


def position_map(attention: torch.Tensor) -> torch.Tensor:
    """(h, w) attention per spatial cell summed over frames, normalised to sum to 1 (the local bias map)."""
    cells = attention.float().sum(0)
    return cells / cells.sum()


def max_over_mean(values: torch.Tensor) -> float:
    """``max / mean`` of a map: 1 when uniform, h·w when everything sits in one cell (our local-bias statistic)."""
    mean = float(values.float().mean())
    return float(values.max()) / mean if mean > 0 else math.nan


def selection_stats(
    frame: torch.Tensor, row: torch.Tensor, col: torch.Tensor, shape: tuple[int, int, int], last_k: int
) -> dict[str, float]:
    """Where the kept grid tokens of one selection lie: ``share_last_k`` (their share in the last ``k`` frames),
    ``position_max_over_mean`` (``max / mean`` over the h×w cells of kept tokens per cell, frames pooled; 1 = as many
    kept at every cell) and ``frames_covered`` (share of frames keeping at least one token)."""
    f, h, w = shape
    n = len(frame)
    if n == 0:
        return {"kept": 0, "share_last_k": math.nan, "position_max_over_mean": math.nan, "frames_covered": 0.0}
    per_cell = torch.bincount(row.long() * w + col.long(), minlength=h * w)
    return {
        "kept": n,
        "share_last_k": float((frame >= f - last_k).sum()) / n,
        "position_max_over_mean": max_over_mean(per_cell),
        "frames_covered": float(torch.unique(frame).numel()) / f,
    }


def layer_stats(attention: torch.Tensor, top_q: float, last_k: int) -> dict[str, float]:
    """The global and local statistics of one normalised (F, h, w) attention map (module docstring)."""
    f = attention.shape[0]
    frame, _row, _col = top_cells(attention, top_q)
    return {
        "top_share_last_k": float((frame >= f - last_k).sum()) / len(frame),
        "uniform_share_last_k": last_k / f,
        "mass_last_k": float(frame_mass(attention)[f - last_k :].sum()),
        "local_max_over_mean": max_over_mean(position_map(attention)),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Observing the model: a probe-only hook set, and AdaTP with its selections recorded
# ---------------------------------------------------------------------------------------------------------------------


class AttentionRecorder(PruningMethod):
    """Probe only, keeps every token: before every decoder layer, the final prompt token's head-averaged attention to
    every grid token, laid out on the (F, h, w) grid by each position's recorded cell (newlines excluded by kind).

    Not registered (``name`` is only a label). ``maps[l]`` is layer ``l``'s raw map (fp32, not renormalised);
    ``masses[l]`` its share of the row's attention on grid tokens, newlines and text. Reset by every sample's
    :meth:`select_visual`, the hook that runs first.
    """

    name = "attention_recorder"

    def __init__(self) -> None:
        self.maps: dict[int, torch.Tensor] = {}
        self.masses: dict[int, dict[str, float]] = {}

    def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
        self.maps, self.masses = {}, {}
        return tokens

    def llm_layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(range(num_layers))

    def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
        last = torch.tensor([len(state) - 1])
        row = ctx.probe(state, last)[:, 0].mean(0).float().cpu()  # (L,): head mean of the last row (FastV)
        visual = state.visual_positions
        layout = ctx.layout
        grid = torch.zeros(layout.num_frames, layout.grid_h, layout.grid_w)
        grid[state.frame[visual], state.row[visual], state.col[visual]] = row[visual]
        self.maps[state.layer_idx] = grid
        video = state.kind != TEXT
        self.masses[state.layer_idx] = {
            "visual": float(row[visual].sum()),
            "newline": float(row[video].sum()) - float(row[visual].sum()),
            "text": float(row[~video].sum()),
        }
        return None


def observed(method: PruningMethod) -> PruningMethod:
    """A copy of ``method`` (same class, same settings) whose selections are recorded in ``.selections``: for the
    pre-LLM stage and every in-LLM stage that prunes, the (frame, row, col) of the grid tokens kept. The copy is an
    unregistered subclass that calls the original hooks unchanged, so it prunes exactly as ``method`` does."""
    base = type(method)

    class Observed(base):  # type: ignore[misc, valid-type]
        selections: list[Selection]

        def select_visual(self, tokens: VisualTokens, ctx: SampleContext) -> VisualTokens:
            kept = super().select_visual(tokens, ctx)
            self.selections = [("pre_llm", kept.frame.cpu(), kept.row.cpu(), kept.col.cpu())]
            return kept

        def before_layer(self, state: SequenceState, ctx: SampleContext) -> torch.Tensor | None:
            keep = super().before_layer(state, ctx)
            if keep is not None:
                index = torch.as_tensor(keep, dtype=torch.long).cpu()
                index = index[state.kind[index] == VISUAL]
                stage = f"layer{state.layer_idx}"
                self.selections.append((stage, state.frame[index], state.row[index], state.col[index]))
            return keep

    Observed.__name__ = Observed.__qualname__ = f"Observed{base.__name__}"
    copy = Observed(**method.settings())
    copy.selections = []
    return copy


def adatp_rank_layer(settings: dict[str, Any]) -> int:
    """The layer whose attention AdaTP's last in-LLM stage ranks by: K−1 (``score_layer=previous``, FastV) or K."""
    last = max(int(k) for k in settings["prune_layers"])
    return last - 1 if settings.get("score_layer", "previous") == "previous" else last


# ---------------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BiasSettings:
    """The resolved ``bias:`` node (conf/bias/default.yaml) for one model, and AdaTP's settings."""

    top_q: float
    last_k: int
    rank_layer: int
    plot_layers: tuple[int, ...]
    num_frames: int
    num_layers: int
    adatp: dict[str, Any] = field(default_factory=dict)

    @property
    def retention(self) -> float:
        return float(self.adatp["retention"])


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_settings(
    node: DictConfig | dict[str, Any], num_frames: int, num_layers: int, adatp: dict[str, Any]
) -> BiasSettings:
    """Validate the ``bias:`` keys against the model's frames and depth; :class:`ConfigError` names the key."""
    if num_frames < 2:
        raise ConfigError(
            f"model.num_frames={num_frames}: the global bias compares the last k frames with the others, which needs "
            "at least 2 frames"
        )
    q = node.get("top_q")
    if not (_number(q) and 0 < q <= 1):
        raise ConfigError(f"bias.top_q={q!r} must be a share in (0, 1] (0.1 = the top 10% of visual tokens)")
    k = node.get("last_k")
    k = max(1, num_frames // 8) if k is None else k
    if not (_integer(k) and 1 <= k < num_frames):
        raise ConfigError(
            f"bias.last_k={k!r} must be an integer in [1, {num_frames}) for {num_frames} frames (or null)"
        )
    rank = node.get("rank_layer")
    rank = adatp_rank_layer(adatp) if rank is None else rank
    if not (_integer(rank) and 0 <= rank < num_layers):
        raise ConfigError(f"bias.rank_layer={rank!r} must be a layer in [0, {num_layers - 1}] (0-based) or null")
    plot = node.get("plot_layers")
    layers = sorted({0, num_layers // 2, num_layers - 1}) if plot is None else list(plot)
    bad = [x for x in layers if not (_integer(x) and 0 <= x < num_layers)]
    if bad or not layers:
        raise ConfigError(f"bias.plot_layers={layers!r} must be a non-empty list of layers in [0, {num_layers - 1}]")
    retention = adatp.get("retention")
    if not (_number(retention) and 0 < retention < 1):
        raise ConfigError(
            f"AdaTP retention={retention!r} (from budget= or method.retention) must lie in (0, 1) for a before/after "
            "comparison (1.0 prunes nothing)"
        )
    return BiasSettings(float(q), int(k), int(rank), tuple(int(x) for x in layers), num_frames, num_layers, adatp)


def adatp_settings(cfg: DictConfig) -> dict[str, Any]:
    """AdaTP's settings: the composed ``method`` node when ``method=`` names AdaTP or a preset of it; with the default
    ``method=vanilla``, conf/method/adatp.yaml at the composed budget's retention."""
    name = str(cfg.method.name)
    if name == "adatp":
        return method_settings(cfg.method)
    if name == "vanilla":
        return {**method_defaults("adatp"), "retention": cfg.budget.retention}
    raise ConfigError(
        f"method={name}: the bias analysis compares plain attention ranking with AdaTP; leave method= at vanilla "
        "(AdaTP's defaults at budget=) or name adatp or an AdaTP preset (e.g. method=adatp_ov7b_f27)"
    )


def compose_bias(overrides: list[str]) -> DictConfig:
    """The command's config: the cell config plus the ``bias`` group (``+bias=default`` unless one is chosen)."""
    chosen = any(o.lstrip("+").startswith("bias=") for o in overrides)
    return compose([*overrides] if chosen else [*overrides, "+bias=default"])


# ---------------------------------------------------------------------------------------------------------------------
# One sample, and the run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SampleBias:
    """What one sample leaves: per-layer normalised maps (layers, F, h, w), per-layer masses, AdaTP's selections."""

    sample_id: str
    maps: torch.Tensor
    masses: list[dict[str, float]]
    adatp: list[Selection]


def analyse_sample(
    llm: Any, recorder: AttentionRecorder, adatp: PruningMethod, frames: Any, question: str, sample_id: str, seed: int
) -> SampleBias:
    """The unpruned prefill with the recorder, then AdaTP's prefill with its selections observed (no decoding)."""
    with recorder(llm):
        state, ctx, _, _ = llm.prepare(frames, question, sample_id, seed)
        llm.runner.prefill(state, recorder, ctx)
    layers = sorted(recorder.maps)
    maps = torch.stack([normalised(recorder.maps[i]) for i in layers])
    with adatp(llm):
        state, ctx, _, _ = llm.prepare(frames, question, sample_id, seed)
        llm.runner.prefill(state, adatp, ctx)
    return SampleBias(sample_id, maps, [recorder.masses[i] for i in layers], list(adatp.selections))


def question_text(benchmark: str, row: dict[str, Any], prompt_style: str) -> str:
    """The question as the benchmark's lmms-eval task asks it: its template's ``doc_to_text`` with the
    ``lmms_eval_specific_kwargs`` entry of the model's prompt style (lmms-eval's rule: that entry, else ``default``)."""
    from adatp_bench.eval.tasks import load_template

    template = load_template(benchmark)
    module, _, attr = str(template["doc_to_text"]).rpartition(".")
    doc_to_text = getattr(importlib.import_module(module), attr)
    entries = template.get("lmms_eval_specific_kwargs") or {}
    kwargs = dict(entries.get(prompt_style) or entries.get("default") or {})
    return str(doc_to_text(row, kwargs))


def _documents(ref: Any, limit: int | None) -> list[dict[str, Any]]:
    """The first ``limit`` documents as the task sees them (custom rows normalised, ``process_docs`` applied); on
    MVBench the first ``limit`` of every selected sub-task (as the data check counts them), each tagged with it."""
    from adatp_bench.eval.dataset import load_rows
    from adatp_bench.eval.tasks import load_template

    if ref.benchmark == "mvbench":
        from adatp_bench.eval.tasks.mvbench import read_subtask

        return [{**row, SUB_TASK: sub_task}
                for sub_task, path in zip(ref.subtasks, ref.annotation_files(), strict=True)
                for row in read_subtask(path)[:limit]]  # fmt: skip
    rows = load_rows(ref.annotation)[:limit]
    if ref.benchmark == "custom":
        from adatp_bench.eval.custom import normalise

        return normalise(rows, ref.freeform)
    process = load_template(ref.benchmark).get("process_docs")
    if process is None:
        return rows
    import datasets

    module, _, attr = str(process).rpartition(".")
    return list(getattr(importlib.import_module(module), attr)(datasets.Dataset.from_list(rows)))


#: The key under which an MVBench document carries its sub-task (which names its video folder).
SUB_TASK = "_sub_task"


def _video_file(ref: Any, doc: dict[str, Any]) -> Path:
    """The video file of one document, found as the benchmark's task finds it."""
    from adatp_bench.eval.check_data import VIDEO_KEY
    from adatp_bench.eval.video import resolve_video

    if ref.benchmark == "mvbench":
        from adatp_bench.eval.tasks.mvbench import video_path

        return video_path(ref.video_dir, doc[SUB_TASK], str(doc["video"]))
    return resolve_video(ref.video_dir, str(doc[VIDEO_KEY[ref.benchmark]]))


def run_bias(overrides: list[str], progress: bool = True) -> dict[str, Path]:
    """The whole command: settings and data checked before any weight loads, then every sample, then the files."""
    from tqdm import tqdm

    from adatp_bench.eval.check_data import check_dataset, require_usable
    from adatp_bench.eval.dataset import ensure_data
    from adatp_bench.eval.video import read_sampled
    from adatp_bench.models.dims import model_dims, validate_on_model
    from adatp_bench.models.specs import get_spec

    started = time.time()
    cfg = compose_bias(overrides)
    m = cfg.model
    spec = get_spec(m.name)
    frames = m.num_frames if m.num_frames is not None else spec.num_frames
    if not (_integer(frames) and frames >= 1):
        raise ConfigError(f"model.num_frames={frames!r} must be a positive integer or null (the model's default)")
    if cfg.limit is not None and not (_integer(cfg.limit) and cfg.limit >= 1):
        raise ConfigError(f"limit={cfg.limit!r} must be a positive integer (documents to analyse) or null (all)")
    dims = model_dims(spec, m.source)
    if dims.tokens_per_frame == 0 or dims.num_layers == 0:
        raise ConfigError(f"model={m.name} has no video frames or no LLM layers: there is no attention to analyse")
    adatp_cfg = adatp_settings(cfg)
    adatp = build_method("adatp", **adatp_cfg)
    try:  # AdaTP's own layers first: the default rank layer is derived from them
        validate_on_model(adatp, spec, m.source, frames)
    except ConfigError as err:
        raise ConfigError(
            f"AdaTP's settings do not fit model={m.name} ({dims.num_layers} LLM layers): {err}. Override them with "
            "method=adatp method.<key>=..., e.g. method.prune_layers=[0,1] on a 2-layer LLM"
        ) from err
    settings = check_settings(cfg.bias, frames, dims.num_layers, adatp_cfg)
    ref = ensure_data(cfg.benchmark)
    require_usable(check_dataset(ref, frames, limit=cfg.limit, progress=progress))  # pre-flight, before any weight
    docs = _documents(ref, cfg.limit)

    from adatp_bench.models.adapter import VideoLLM

    device = m.device or ("cuda" if torch.cuda.is_available() else "cpu")
    llm = VideoLLM.from_spec(
        spec, source=m.source, dtype=m.dtype, device=device, attn_implementation=m.attn_implementation,
        relevance_encoder=m.relevance_encoder,
    )  # fmt: skip
    recorder, observed_adatp = AttentionRecorder(), observed(adatp)
    samples = []
    for i, doc in enumerate(tqdm(docs, desc="bias samples", disable=not progress)):
        video = read_sampled(_video_file(ref, doc), frames)
        question = question_text(ref.benchmark, doc, spec.prompt_style)
        samples.append(
            analyse_sample(llm, recorder, observed_adatp, video.frames, question, f"{cfg.benchmark.task}/{i}", cfg.seed)
        )
    tables = summarise(samples, settings)
    tables["published"] = published_bias(m.name, frames, settings.top_q, settings.last_k)  # shown beside, never mixed
    return write_outputs(Path(str(cfg.bias.out_dir)), tables, settings, _summary(cfg, settings, samples, started))


# ---------------------------------------------------------------------------------------------------------------------
# Tables (means over samples) and files
# ---------------------------------------------------------------------------------------------------------------------


def summarise(samples: list[SampleBias], settings: BiasSettings) -> dict[str, Any]:
    """The tables, as pandas frames: ``per_layer``, ``frames`` (layer, frame, mass), ``positions`` (layer, h, w,
    share), ``before_after`` and ``samples`` (per sample and layer). Statistics are computed per sample and then
    averaged over samples; maps are averaged over samples (each sums to 1 per layer)."""
    import pandas as pd

    if not samples:
        raise ConfigError("no sample to analyse: the benchmark's first `limit` documents are empty")
    q, k = settings.top_q, settings.last_k
    per_sample = []
    for s in samples:
        for layer, attention in enumerate(s.maps):
            per_sample.append({"sample": s.sample_id, "layer": layer, **layer_stats(attention, q, k),
                               **{f"{key}_attention_mass": v for key, v in s.masses[layer].items()}})  # fmt: skip
    by_sample = pd.DataFrame(per_sample)
    per_layer = by_sample.drop(columns="sample").groupby("layer", as_index=False).mean()
    per_layer.insert(1, "n_samples", len(samples))
    per_layer["top_q"], per_layer["last_k"] = q, k
    maps = torch.stack([s.maps for s in samples]).mean(0)  # (layers, F, h, w)
    _, f, h, w = maps.shape
    frames = pd.DataFrame(
        [{"layer": i, "frame": j, "mass": float(v)} for i, m in enumerate(maps) for j, v in enumerate(frame_mass(m))]
    )
    positions = pd.DataFrame(
        [
            {"layer": i, "h": r, "w": c, "share": float(cells[r, c])}
            for i, cells in enumerate(position_map(m) for m in maps)
            for r in range(h)
            for c in range(w)
        ]
    )
    return {
        "per_layer": per_layer,
        "frames": frames,
        "positions": positions,
        "before_after": before_after(samples, settings, (f, h, w)),
        "samples": by_sample,
    }


def before_after(samples: list[SampleBias], settings: BiasSettings, shape: tuple[int, int, int]) -> Any:
    """One row per selection at retention r, means over samples: uniform (the unbiased reference: r of every frame
    and cell), the plain top-r by ``a_{rank_layer}`` (before debiasing) and AdaTP's last stage (after)."""
    import pandas as pd

    f, h, w = shape
    k, r = settings.last_k, settings.retention
    rows: list[dict[str, Any]] = []
    for s in samples:
        plain = selection_stats(*top_cells(s.maps[settings.rank_layer], r), shape, k)
        stage, *cells = s.adatp[-1]
        ours = selection_stats(*cells, shape, k)
        rows.append({"selection": "attention_top_r", "ranked_by": f"layer {settings.rank_layer} attention", **plain})
        rows.append({"selection": "adatp", "ranked_by": f"AdaTP stage {stage}", **ours})
    table = pd.DataFrame(rows).groupby(["selection", "ranked_by"], as_index=False, sort=False).mean()
    uniform = {"selection": "uniform", "ranked_by": "none (reference)", "kept": top_count(f * h * w, r),
               "share_last_k": k / f, "position_max_over_mean": 1.0, "frames_covered": 1.0}  # fmt: skip
    table = pd.concat([pd.DataFrame([uniform]), table], ignore_index=True)
    table.insert(2, "retention", r)
    table.insert(3, "last_k", k)
    return table


def write_outputs(
    out: Path, tables: dict[str, Any], settings: BiasSettings, summary: dict[str, Any]
) -> dict[str, Path]:
    """Write the CSVs, the figures and ``summary.json`` (last, atomically) into ``out``; return the paths by name."""
    from adatp_bench.report.bias_plots import plot_all
    from adatp_bench.results import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for key, name in (("per_layer", "bias_per_layer"), ("frames", "bias_frames"), ("positions", "bias_positions"),
                      ("before_after", "before_after"), ("samples", "bias_samples")):  # fmt: skip
        paths[key] = out / f"{name}.csv"
        atomic_write_text(paths[key], tables[key].to_csv(index=False, float_format="%.6g"))
    paths.update(plot_all(out, tables, settings))
    per_layer, ba = tables["per_layer"].set_index("layer"), tables["before_after"].set_index("selection")
    summary["headline"] = {
        "global_share_last_k_by_layer": [round(float(v), 4) for v in per_layer.top_share_last_k],
        "uniform_share_last_k": round(settings.last_k / settings.num_frames, 4),
        "local_max_over_mean_by_layer": [round(float(v), 4) for v in per_layer.local_max_over_mean],
        "before_after": {
            sel: {c: round(float(ba.loc[sel, c]), 4) for c in ("share_last_k", "position_max_over_mean")}
            for sel in ba.index
        },
    }
    summary["published"] = tables.get("published", [])  # the paper's statistic under these settings, labelled
    summary["files"] = {key: p.name for key, p in paths.items()}
    paths["summary"] = out / "summary.json"
    atomic_write_text(paths["summary"], json.dumps(summary, indent=2, default=str) + "\n")
    return paths


def _summary(cfg: DictConfig, settings: BiasSettings, samples: list[SampleBias], started: float) -> dict[str, Any]:
    """summary.json's header: the resolved config and settings, the samples, and the run's provenance."""
    from adatp_bench.results import environment, git_state, hardware, package_versions

    return {
        "command": "adatp_bench.report.bias",
        "model": cfg.model.name,
        "benchmark": cfg.benchmark.name,
        "seed": cfg.seed,
        "n_samples": len(samples),
        "samples": [s.sample_id for s in samples],
        "settings": {
            "top_q": settings.top_q,
            "last_k": settings.last_k,
            "num_frames": settings.num_frames,
            "num_layers": settings.num_layers,
            "rank_layer": settings.rank_layer,
            "retention": settings.retention,
            "plot_layers": list(settings.plot_layers),
            "layer_index": "0-based decoder layer (layer l = the attention of decoder layer l on its input)",
            "adatp": settings.adatp,
        },
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": {
            **git_state(),
            "packages": package_versions(),
            "environment": environment(),
            "hardware": hardware(),
            "started": started,
            "wall_s": time.time() - started,
        },
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: Hydra overrides as for a cell; ``bias.*`` keys from conf/bias/default.yaml."""
    overrides = sys.argv[1:] if argv is None else argv
    if any(a in {"-h", "--help"} for a in overrides):
        print(__doc__)
        return
    try:
        paths = run_bias(list(overrides))
    except AdatpBenchError as err:
        sys.exit(f"bias: {type(err).__name__}: {err}")
    summary = json.loads(paths["summary"].read_text())
    print(json.dumps(summary["headline"], indent=2))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
