"""Tuning at a fixed FLOPs budget: the retention solver, trials as ordinary cells, and `make tune` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adatp_bench.config import compose, group_options, method_defaults, method_settings
from adatp_bench.errors import ConfigError
from adatp_bench.fixed_flops import cell_layout, flops_pct, hold_cell_flops, solve_retention
from adatp_bench.identity import cell_settings_id
from adatp_bench.models.specs import get_spec
from adatp_bench.pruning import build_method
from adatp_bench.run import check_run_settings, objective, run_cell
from adatp_bench.tune import search_space


def _layout(model: str = "tiny"):
    return cell_layout(get_spec(model), None, None)


@pytest.mark.parametrize("model", ["tiny", "tiny_video", "llava_ov_7b"])
@pytest.mark.parametrize(("p", "target"), [(0.4, 15.0), (0.5, 30.0), (0.9, 60.0)])
def test_solved_adatp_retention_costs_the_target(model: str, p: float, target: float) -> None:
    layout, arch = _layout(model)
    settings = {**method_defaults("adatp"), "p": p}
    held = solve_retention("adatp", settings, layout, arch, target)
    # The solver's own claim, recomputed independently from the method's schedule at the solved retention.
    method = build_method("adatp", **{**settings, "retention": held.retention})
    pct, tokens = flops_pct(method, layout, arch)
    assert pct == pytest.approx(held.pct) and tuple(tokens) == held.tokens_per_layer
    # Whole tokens: the tiny grids (200 tokens) move a few tenths of a percent per token, the full-size one far less.
    assert abs(held.pct - target) < (1.0 if model.startswith("tiny") else 0.05)
    # Nearest: a step of the retention in either direction is not closer to the target.
    for step in (-1e-3, 1e-3):
        other = build_method("adatp", **{**settings, "retention": held.retention + step})
        assert abs(flops_pct(other, layout, arch)[0] - target) >= abs(held.pct - target) - 1e-9


def test_a_different_schedule_gets_a_different_retention_at_the_same_flops() -> None:
    layout, arch = _layout()
    low = solve_retention("adatp", {**method_defaults("adatp"), "p": 0.4}, layout, arch, 30.0)
    high = solve_retention("adatp", {**method_defaults("adatp"), "p": 0.9}, layout, arch, 30.0)
    assert low.retention < high.retention, "a steeper progressive schedule keeps more tokens at its last stage"
    assert abs(low.pct - high.pct) < 2.0


@pytest.mark.parametrize(
    ("model", "method", "target", "message"),
    [
        ("tiny", "fastv", 30.0, "costs at least 50.00%"),  # K=2 of 4 layers are never pruned
        ("tiny", "dycoke", 10.0, "lowest valid retention, 0.25"),  # TTM keeps one frame in four
        ("tiny", "vanilla", 30.0, "no retention to solve"),
        ("tiny_video", "fastv", 30.0, "depend on the video"),  # per-row newlines follow the kept tokens
        ("tiny", "adatp", 0.0, "must be in (0, 100]"),
    ],
)
def test_impossible_budgets_are_named(model: str, method: str, target: float, message: str) -> None:
    layout, arch = _layout(model)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        solve_retention(method, method_defaults(method), layout, arch, target)


def test_search_space_is_not_a_setting_and_names_only_hyperparameters() -> None:
    declared = 0
    for name in group_options("method"):
        cfg = compose([f"method={name}"])
        assert "search_space" not in method_settings(cfg.method)
        if cfg.method.get("search_space"):
            declared += 1
            assert set(search_space(cfg)) <= set(method_settings(cfg.method)), name
    assert declared >= 2, "AdaTP and at least one baseline declare what `make tune` may search"
    adatp = search_space(compose(["method=adatp"]))
    assert {"tau_s", "tau_t", "alpha_boost", "gamma_cap", "p"} <= set(adatp)
    with pytest.raises(ConfigError, match="declares no search_space"):
        search_space(compose(["method=uniform"]))
    with pytest.raises(ConfigError, match="not its hyperparameters"):
        search_space(compose(["method=fastv", "+method.search_space.nope='range(1,3)'"]))
    with pytest.raises(ConfigError, match="retention is solved"):
        search_space(compose(["method=fastv", "tune.flops_pct=60", "+method.search_space.retention='interval(0.1,1)'"]))


def test_bad_tune_settings_stop_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match=r"tune\.objective"):
        check_run_settings(compose(["tune.objective=loss"]))
    with pytest.raises(ConfigError, match=r"tune\.flops_pct"):
        check_run_settings(compose(["tune.flops_pct=150"]))


def _cell(root: Path, *extra: str):
    return compose([f"paths.root={root}", "model=tiny", "method=adatp", "benchmark=videomme_synth",
                    "benchmark.n_items=2", *extra])  # fmt: skip


def test_a_trial_is_an_ordinary_cell_whose_recorded_flops_are_the_target(tmp_path: Path) -> None:
    trial_cfg = _cell(tmp_path, "tune.flops_pct=30", "method.p=0.7", "tune.objective=agreement")
    outcome = run_cell(trial_cfg)
    record = outcome.record
    assert outcome.status == "done" and record.status == "ok"
    expected = hold_cell_flops(_cell(tmp_path, "tune.flops_pct=30", "method.p=0.7"))
    assert record.method_settings["retention"] == expected.retention
    # What the run measured per sample equals what the solver predicted before it.
    assert record.efficiency["pct_flops_of_vanilla"] == pytest.approx(expected.pct, rel=1e-9)
    # The same cell without the tuner, at the solved retention, is the same run: trials resume and are reused.
    plain = _cell(tmp_path, f"method.retention={expected.retention}", "method.p=0.7")
    assert cell_settings_id(plain) == record.settings_id
    assert run_cell(plain).status == "skipped"
    # No vanilla cell yet: agreement cannot be measured, so the trial reports no value (Optuna marks it failed).
    assert objective(trial_cfg, record) is None
    assert objective(_cell(tmp_path), record) == record.score


def _tune(root: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["experiment=tune_adatp", "tune.n_trials=3", "benchmark.n_items=2", *extra]
    return subprocess.run([sys.executable, "-m", "adatp_bench.tune", *args], cwd=root, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_make_tune_end_to_end_writes_a_preset_that_reproduces_the_best_trial(tmp_path: Path) -> None:
    first = _tune(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads((tmp_path / "results" / "tuned" / "trials.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 3 and all(t["status"] == "done" for t in trials)
    assert len({t["retention"] for t in trials}) > 1, "each trial's retention is solved for its own schedule"
    assert all(abs(t["pct_flops"] - 30.0) < 1.0 for t in trials), [t["pct_flops"] for t in trials]
    assert all(t["value"] is not None and 0.0 <= t["value"] <= 100.0 for t in trials)
    best = trials[summary["best"]]
    assert best["value"] == max(t["value"] for t in trials)

    preset = tmp_path / "results" / "tuned" / "conf" / "method" / "tuned_adatp_tiny_f30.yaml"
    assert preset.exists() and "held at 30" in preset.read_text()
    cfg = compose([f"hydra.searchpath=[file://{preset.parents[1]}]", "method=tuned_adatp_tiny_f30",
                   f"paths.root={tmp_path}", "benchmark.n_items=2"])  # fmt: skip
    tuned = method_settings(cfg.method)
    for key, value in best["params"].items():
        assert tuned[key] == pytest.approx(value)
    assert tuned["retention"] == best["retention"]
    # The preset is the best trial's cell: running it finds the trial's record.
    assert run_cell(cfg).record.run_id == best["run_id"]

    # Resubmitting the study reruns nothing: the seeded sampler proposes the same trials, which are done.
    again = _tune(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((tmp_path / "results" / "tuned" / "trials.json").read_text())["trials"]
    assert [t["status"] for t in rerun] == ["skipped"] * 3
    assert [t["run_id"] for t in rerun] == [t["run_id"] for t in trials]


@pytest.mark.slow
def test_make_tune_refuses_an_impossible_budget_before_any_trial(tmp_path: Path) -> None:
    result = _tune(tmp_path, "method=fastv", "tune.flops_pct=30")
    assert result.returncode == 1
    assert "costs at least 50.00%" in result.stderr
    assert not (tmp_path / "results").exists(), "nothing ran"
