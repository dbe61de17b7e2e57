"""Label-free regression detection: how far does a pruned cell drift from vanilla on the same samples?

Every pruned cell is compared with the vanilla cell of the same model, benchmark data, frames, seed and limit (its
*reference*: the same identity with ``method=vanilla``). Vanilla's answers and first-token distributions are stored
once, in its own run folder, and every pruned cell of the sweep is compared against them. Per sample:

- **agreement**: the parsed answers are identical (the benchmark's own answer extraction: lmms-eval's
  ``pred_answer``/``parsed_pred`` or the custom benchmark's ``parsed``; a LongVideoBench answer lmms-eval would replace
  by a random letter counts as its raw text, not as that letter);
- **first-token flip**: the top-1 token of the first generated position differs;
- **KL(vanilla ‖ pruned)** of the first-token distribution, over the tokens both cells have in their top ``K``
  (``models/adapter.py::FIRST_TOKEN_TOP_K``, 64) plus one bucket for everything else. This is the KL of the two
  distributions coarse-grained to that partition: exact when they agree outside the shared top tokens, and never more
  than the full KL (the data processing inequality), so a large value is a real drift.

No label is needed, so it works on unscored custom benchmarks too. Aggregates: agreement %, flip rate %, mean KL, and
the number of samples compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from adatp_bench.eval.parsed import samples_with_parsed
from adatp_bench.identity import run_id, settings_identity
from adatp_bench.results import RunDir, atomic_write_text, sample_key


def reference_run_id(cfg: DictConfig, data_identity: dict[str, Any]) -> str:
    """The run id of the vanilla cell a cell is compared with (same model, data, frames, seed, limit)."""
    identity = settings_identity(cfg)
    identity["method"] = {"name": "vanilla"}
    identity["benchmark"]["data"] = data_identity
    return run_id(identity)


def coarse_kl(reference: Mapping[str, Sequence], other: Mapping[str, Sequence]) -> float:
    """KL(reference ‖ other) over the tokens in both top-K lists plus an "everything else" bucket (nats)."""
    p = dict(zip(reference["ids"], (math.exp(v) for v in reference["logprobs"]), strict=True))
    q = dict(zip(other["ids"], (math.exp(v) for v in other["logprobs"]), strict=True))
    shared = set(p) & set(q)
    kl = sum(p[t] * math.log(p[t] / q[t]) for t in shared if p[t] > 0)
    p_rest = max(0.0, 1.0 - sum(p[t] for t in shared))
    q_rest = max(1e-12, 1.0 - sum(q[t] for t in shared))
    if p_rest > 1e-12:
        kl += p_rest * math.log(p_rest / q_rest)
    return max(0.0, kl)


def compare_samples(reference: Sequence[Mapping[str, Any]], pruned: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-sample and aggregate comparison of a pruned cell's samples with its vanilla reference's."""
    by_key = {sample_key(r): r for r in reference}
    rows = []
    for sample in pruned:
        ref = by_key.get(sample_key(sample))
        if ref is None or "first_token" not in sample or "first_token" not in ref:
            continue
        rows.append(
            {
                "task": sample["task"],
                "doc_id": sample["doc_id"],
                "agree": parsed_answer(ref) == parsed_answer(sample),
                "flip": ref["first_token"]["ids"][0] != sample["first_token"]["ids"][0],
                "kl": coarse_kl(ref["first_token"], sample["first_token"]),
            }
        )
    n = len(rows)
    aggregate = {
        "n_compared": n,
        "n_without_reference": len(pruned) - n,
        "agreement_pct": 100.0 * sum(r["agree"] for r in rows) / n if n else None,
        "first_token_flip_pct": 100.0 * sum(r["flip"] for r in rows) / n if n else None,
        "mean_kl": sum(r["kl"] for r in rows) / n if n else None,
    }
    return {"aggregate": aggregate, "samples": rows}


def parsed_answer(sample: Mapping[str, Any]) -> str:
    """A sample's parsed answer (see the module docstring), or its stripped response when none was parsed."""
    parsed = sample.get("parsed")
    return str(parsed) if parsed is not None else str(sample.get("response", "")).strip()


def compare_run_dirs(reference: RunDir, pruned: RunDir, reference_id: str) -> dict[str, Any] | None:
    """The comparison of two finished cells, written to ``<pruned>/regression.json``; None while the reference has
    no finished record."""
    if not reference.is_done():
        return None
    result = compare_samples(samples_with_parsed(reference), samples_with_parsed(pruned))
    result["aggregate"]["reference"] = reference_id
    atomic_write_text(pruned.path / "regression.json", _json(result))
    return result["aggregate"]


def update_pending(results_dir: Path) -> int:
    """Fill in the regression block of every finished record whose vanilla reference has finished since; returns how
    many records were updated (the table renderer calls this, so a sweep's order never matters)."""
    from adatp_bench.results import load_records

    updated = 0
    for record in load_records(results_dir):
        block = record.regression or {}
        if record.status != "ok" or record.method == "vanilla" or not block.get("reference"):
            continue
        if block.get("n_compared") is not None:
            continue
        reference_id = block["reference"]
        reference, pruned = RunDir(results_dir, reference_id), RunDir(results_dir, record.run_id)
        aggregate = compare_run_dirs(reference, pruned, reference_id)
        if aggregate is not None:
            record.regression = aggregate
            RunDir(results_dir, record.run_id).write_record(record)
            updated += 1
    return updated


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=1, sort_keys=True)
