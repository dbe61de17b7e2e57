"""``make bias``: the global and local attention-bias statistics (report/bias.py), checked on planted maps, on the tiny
model through the row probe, and end to end (CSVs, figures, provenance, clear errors)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from adatp_bench.config import compose
from adatp_bench.errors import ConfigError
from adatp_bench.pruning import build_method
from adatp_bench.report import bias
from adatp_bench.report.published import published_bias

ROOT = Path(__file__).resolve().parents[1]


def planted_map(frames: int = 8, h: int = 4, w: int = 4) -> torch.Tensor:
    """Attention piled on the last frame and, within every frame, on cell (0, 0): both biases planted."""
    attention = torch.ones(frames, h, w)
    attention[-1] *= 10.0
    attention[:, 0, 0] *= 5.0
    return bias.normalised(attention)


def test_statistics_find_planted_biases_and_none_in_uniform_attention() -> None:
    stats = bias.layer_stats(planted_map(), top_q=0.1, last_k=1)
    assert stats["top_share_last_k"] == 1.0  # the 13 top tokens of 128 all lie in the last frame
    assert stats["uniform_share_last_k"] == 1 / 8
    assert stats["mass_last_k"] == pytest.approx(10 * 20 / (10 * 20 + 7 * 20))  # frame weights 10 vs 1 (20 per frame)
    assert stats["local_max_over_mean"] == pytest.approx(5 / (20 / 16))  # cell (0, 0) holds 5 of every frame's 20

    flat = bias.layer_stats(bias.normalised(torch.ones(8, 4, 4)), top_q=0.1, last_k=1)
    assert flat["top_share_last_k"] == 0.0  # ties go to the earlier token: a tie never counts as end-of-video bias
    assert flat["mass_last_k"] == pytest.approx(1 / 8)
    assert flat["local_max_over_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sums to 0"):
        bias.normalised(torch.zeros(2, 2, 2))


def test_selection_statistics_count_where_the_kept_tokens_lie() -> None:
    # 4 kept tokens of a (4, 2, 2) grid: three in the last frame, two of them at cell (0, 0).
    frame, row, col = torch.tensor([3, 3, 3, 0]), torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 0])
    stats = bias.selection_stats(frame, row, col, (4, 2, 2), last_k=1)
    assert stats["kept"] == 4 and stats["share_last_k"] == 0.75
    assert stats["position_max_over_mean"] == pytest.approx(2 / 1)  # per cell [2, 0, 1, 1]: max 2, mean 1
    assert stats["frames_covered"] == 0.5
    assert bias.top_count(128, 0.1) == 13 and bias.top_count(5, 0.01) == 1


def test_before_after_puts_plain_ranking_beside_the_debiased_selection() -> None:
    """On planted maps, plain top-r by attention keeps only the last frame; a selection spread over all frames (what a
    debiased pruner keeps) scores as uniform, and the table says which is which."""
    maps = torch.stack([planted_map() for _ in range(4)])  # 4 layers
    cells = torch.cartesian_prod(torch.arange(8), torch.arange(2), torch.arange(2))  # 2×2 of every frame: 25%
    spread = ("layer2", cells[:, 0], cells[:, 1], cells[:, 2])
    samples = [bias.SampleBias(f"s{i}", maps, [{"visual": 1.0, "newline": 0.0, "text": 0.0}] * 4, [spread])
               for i in range(2)]  # fmt: skip
    settings = bias.check_settings({"top_q": 0.1, "last_k": None, "rank_layer": 1, "plot_layers": None}, 8, 4,
                                   {"retention": 0.25, "prune_layers": [0, 2]})  # fmt: skip
    tables = bias.summarise(samples, settings)
    ba = tables["before_after"].set_index("selection")
    assert list(ba.index) == ["uniform", "attention_top_r", "adatp"]
    assert ba.loc["attention_top_r", "share_last_k"] == pytest.approx(16 / 32)  # the whole last frame, then ties
    assert ba.loc["adatp", "share_last_k"] == pytest.approx(1 / 8)
    assert ba.loc["adatp", "position_max_over_mean"] == pytest.approx(4.0)  # only the 2×2 corner of a 4×4 grid
    assert ba.loc["uniform", "kept"] == 32 and (ba.retention == 0.25).all()
    per_layer = tables["per_layer"]
    assert list(per_layer.layer) == [0, 1, 2, 3] and (per_layer.n_samples == 2).all()
    frames = tables["frames"].groupby("layer")["mass"].sum()
    assert frames.to_numpy() == pytest.approx([1.0] * 4)
    assert tables["positions"].groupby("layer")["share"].sum().to_numpy() == pytest.approx([1.0] * 4)


def test_recorder_probes_without_pruning_and_observed_adatp_prunes_as_adatp(tiny_llm, scene_frames) -> None:
    """The recorder keeps every token (the prefill's output is vanilla's) and records one (F, h, w) row per layer
    whose shares of grid tokens, newlines and text add to 1; the observed AdaTP prunes exactly as AdaTP does."""
    question = "What happens in the video?"
    state, ctx, _, _ = tiny_llm.prepare(scene_frames, question)
    vanilla = tiny_llm.runner.prefill(state, None, ctx)
    recorder = bias.AttentionRecorder()
    with recorder(tiny_llm):
        state, ctx, _, _ = tiny_llm.prepare(scene_frames, question)
        recorded = tiny_llm.runner.prefill(state, recorder, ctx)
    assert torch.allclose(recorded.last_hidden, vanilla.last_hidden, atol=1e-5)
    layout = ctx.layout
    assert sorted(recorder.maps) == list(range(tiny_llm.runner.num_layers))
    for layer, grid in recorder.maps.items():
        assert grid.shape == (layout.num_frames, layout.grid_h, layout.grid_w) and (grid > 0).all()
        masses = recorder.masses[layer]
        assert sum(masses.values()) == pytest.approx(1.0, abs=1e-4)
        assert float(grid.sum()) == pytest.approx(masses["visual"], rel=1e-5)

    adatp = build_method("adatp", retention=0.25, prune_layers=[0, 2])
    watched = bias.observed(adatp)
    results = []
    for method in (adatp, watched):
        with method(tiny_llm):
            state, ctx, _, _ = tiny_llm.prepare(scene_frames, question)
            results.append(tiny_llm.runner.prefill(state, method, ctx))
    assert torch.equal(results[0].last_hidden, results[1].last_hidden)
    assert results[0].video_tokens_per_layer == results[1].video_tokens_per_layer
    stages = [stage for stage, *_ in watched.selections]
    assert stages == ["pre_llm", "layer2"]
    _, frame, row, col = watched.selections[-1]
    assert len(frame) == results[1].video_tokens_per_layer[2] - results[1].newline_tokens_per_layer[2]
    assert len({(int(f), int(r), int(c)) for f, r, c in zip(frame, row, col, strict=True)}) == len(frame)


@pytest.fixture(scope="module")
def bias_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bias")
    return bias.run_bias(["model=tiny", "benchmark=videomme_synth", "limit=2", f"paths.root={root}"], progress=False)


def test_make_bias_writes_the_tables_figures_and_a_reproducible_summary(bias_run: dict[str, Path]) -> None:
    out = bias_run["summary"].parent
    assert out.name == "tiny_videomme_synth"
    per_layer = pd.read_csv(bias_run["per_layer"])
    assert list(per_layer.layer) == [0, 1, 2, 3] and (per_layer.n_samples == 2).all()
    assert per_layer.top_share_last_k.between(0, 1).all() and (per_layer.local_max_over_mean >= 1).all()
    assert (per_layer.uniform_share_last_k == 1 / 8).all()  # 8 frames, last_k = 8 // 8
    attention = per_layer.visual_attention_mass + per_layer.newline_attention_mass + per_layer.text_attention_mass
    assert attention.to_numpy() == pytest.approx([1.0] * 4, abs=1e-4)
    assert set(pd.read_csv(bias_run["before_after"]).selection) == {"uniform", "attention_top_r", "adatp"}
    assert len(pd.read_csv(bias_run["samples"])) == 2 * 4
    for key in ("fig_frames_layers", "fig_global", "fig_local", "fig_before_after"):
        assert bias_run[key].read_bytes()[:4] == b"\x89PNG" and bias_run[key].stat().st_size > 5000
    summary = json.loads(bias_run["summary"].read_text())
    assert summary["n_samples"] == 2 and summary["settings"]["rank_layer"] == 1  # AdaTP's last stage: layer 2 - 1
    assert summary["settings"]["retention"] == 0.25 and summary["published"] == []
    assert len(summary["headline"]["global_share_last_k_by_layer"]) == 4
    provenance = summary["provenance"]
    assert {"packages", "hardware", "environment"} <= set(provenance) and summary["config"]["seed"] == summary["seed"]
    assert "torch" in provenance["packages"]


def test_bias_runs_on_your_own_videos(tmp_path: Path) -> None:
    data = tmp_path / "custom"
    shutil.copytree(ROOT / "examples" / "custom", data)
    paths = bias.run_bias(["model=tiny", "benchmark=custom", f"benchmark.videos={data / 'videos'}",
                           f"benchmark.questions={data / 'questions.jsonl'}", "limit=1", f"paths.root={tmp_path}"],
                          progress=False)  # fmt: skip
    assert json.loads(paths["summary"].read_text())["n_samples"] == 1
    assert paths["summary"].parent == tmp_path / "results" / "bias" / "tiny_custom"


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("bias.top_q=0", "bias.top_q=0"),
        ("bias.last_k=8", "bias.last_k=8"),
        ("bias.rank_layer=9", "bias.rank_layer=9"),
        ("bias.plot_layers=[7]", "bias.plot_layers"),
        ("method=fastv", "method=fastv"),
        ("budget=r100", "retention"),
        ("limit=0", "limit=0"),
        ("method=adatp method.prune_layers=[0,7]", "4 LLM layers"),
    ],
)
def test_impossible_settings_are_named_before_any_weight_loads(override: str, phrase: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from adatp_bench.models import adapter

    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights loaded before the settings were checked")

    monkeypatch.setattr(adapter.VideoLLM, "from_spec", no_weights)
    with pytest.raises(ConfigError, match=phrase.replace("[", r"\[")):
        bias.run_bias(["model=tiny", "benchmark=videomme_synth", *override.split(), f"paths.root={tmp_path}"],
                      progress=False)  # fmt: skip


def test_a_missing_video_is_named_and_the_cli_exits_non_zero(tmp_path: Path) -> None:
    data = tmp_path / "custom"
    shutil.copytree(ROOT / "examples" / "custom", data)
    first = json.loads((data / "questions.jsonl").read_text().splitlines()[0])
    (data / "videos" / first["video"]).unlink()
    with pytest.raises(SystemExit) as exc:
        bias.main(["model=tiny", "benchmark=custom", f"benchmark.videos={data / 'videos'}",
                   f"benchmark.questions={data / 'questions.jsonl'}", f"paths.root={tmp_path}"])  # fmt: skip
    assert first["video"] in str(exc.value) and str(exc.value).startswith("bias:")


def test_the_published_statistic_is_matched_only_under_its_own_settings() -> None:
    (row,) = published_bias("llava_ov_7b", 32, 0.1, 4)
    assert row["layer"] == 1 and math.isclose(float(row["value"]), 0.868) and "2505.20100" in str(row["source"])
    assert published_bias("llava_ov_7b", 16, 0.1, 2) == [] and published_bias("tiny", 32, 0.1, 4) == []


def test_the_bias_keys_never_enter_a_cell_config() -> None:
    assert "bias" not in compose(["model=tiny"])
    assert bias.compose_bias(["model=tiny"]).bias.top_q == 0.1


def test_bias_reads_mvbench_sub_tasks_and_their_video_folders(tmp_path: Path) -> None:
    paths = bias.run_bias(["model=tiny", "benchmark=mvbench_synth", "limit=1", f"paths.root={tmp_path}"],
                          progress=False)  # fmt: skip
    summary = json.loads(paths["summary"].read_text())
    subtasks = compose(["benchmark=mvbench_synth"]).benchmark.get("subtasks")
    assert summary["n_samples"] == (len(subtasks) if subtasks else 3)  # the first document of every sub-task
