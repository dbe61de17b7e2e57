"""Label-free regression detection against vanilla: agreement of parsed answers, first-token flips and the
coarse-grained KL, per sample and aggregated, in the record, whatever order the cells ran in."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from adatp_bench.config import compose
from adatp_bench.regression import coarse_kl, update_pending
from adatp_bench.results import RunDir
from adatp_bench.run import run_cell


def _dist(probs: dict[int, float]) -> dict[str, list]:
    ids = sorted(probs, key=lambda t: -probs[t])
    return {"ids": ids, "logprobs": [math.log(probs[t]) for t in ids]}


def _full_kl(p: dict[int, float], q: dict[int, float]) -> float:
    return sum(v * math.log(v / q[t]) for t, v in p.items() if v > 0)


def test_coarse_kl_is_zero_for_identical_and_a_lower_bound_of_the_full_kl() -> None:
    p = {0: 0.5, 1: 0.2, 2: 0.15, 3: 0.1, 4: 0.05}
    q = {0: 0.3, 1: 0.3, 2: 0.1, 3: 0.2, 4: 0.1}
    assert coarse_kl(_dist(p), _dist(p)) == pytest.approx(0.0, abs=1e-12)
    top3 = lambda d: _dist({t: d[t] for t in sorted(d, key=lambda t: -d[t])[:3]})  # noqa: E731
    assert 0.0 < coarse_kl(top3(p), top3(q)) <= _full_kl(p, q) + 1e-12
    assert coarse_kl(_dist(p), _dist(q)) == pytest.approx(_full_kl(p, q))  # exact when the top lists cover all


def cell(root: Path, method: str, *extra: str):
    return compose([f"paths.root={root}", "model=tiny", f"method={method}", "benchmark=videomme_synth",
                    "benchmark.n_items=4", *extra])  # fmt: skip


def test_a_pruned_cell_is_compared_with_its_vanilla_reference(tmp_path: Path) -> None:
    vanilla = run_cell(cell(tmp_path, "vanilla")).record
    assert vanilla.regression == {}  # the reference is not compared with itself
    fastv = run_cell(cell(tmp_path, "fastv", "method.retention=0.1")).record
    block = fastv.regression
    assert block["reference"] == vanilla.run_id and block["n_compared"] == 4
    assert 0.0 <= block["agreement_pct"] <= 100.0 and 0.0 <= block["first_token_flip_pct"] <= 100.0
    assert block["mean_kl"] > 0.0, "pruning 90% of the tokens moves the first-token distribution"
    per_sample = RunDir(Path(fastv.config["paths"]["results_dir"]), fastv.run_id).path / "regression.json"
    assert per_sample.exists()


def test_identity_settings_agree_completely(tmp_path: Path) -> None:
    run_cell(cell(tmp_path, "vanilla"))
    same = run_cell(cell(tmp_path, "fastv", "method.retention=1.0")).record.regression
    assert same["agreement_pct"] == 100.0 and same["first_token_flip_pct"] == 0.0
    assert same["mean_kl"] == pytest.approx(0.0, abs=1e-9)


def test_the_order_of_the_sweep_does_not_matter(tmp_path: Path) -> None:
    """A pruned cell that finishes before vanilla records its reference as pending; the table fills it in."""
    pruned = run_cell(cell(tmp_path, "random")).record
    assert pruned.regression["n_compared"] is None and pruned.regression["reference"]
    run_cell(cell(tmp_path, "vanilla"))
    results = Path(pruned.config["paths"]["results_dir"])
    assert update_pending(results) == 1
    filled = RunDir(results, pruned.run_id).record().regression
    assert filled["n_compared"] == 4 and filled["reference"] == pruned.regression["reference"]
