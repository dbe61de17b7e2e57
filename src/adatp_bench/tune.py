"""``make tune``: search a method's hyperparameters with Optuna at a fixed FLOPs budget and write the best as a preset.

    python -m adatp_bench.tune experiment=tune_adatp                               # demo: tiny model, 6 trials
    python -m adatp_bench.tune experiment=tune_adatp model=llava_ov_7b benchmark=videomme limit=200 \\
        tune.flops_pct=27.3 tune.objective=score tune.n_trials=40 hydra/launcher=slurm

Order of work:

1. Compose the config as the runner would (``config.compose``) and read the method's ``search_space`` (declared in
   ``conf/method/<method>.yaml``, Optuna's ``interval``/``range``/``choice`` syntax; override single entries as
   quoted strings, ``'method.search_space.tau_s="interval(0.85, 0.95)"'``, since unquoted Hydra reads them as a
   sweep). With ``tune.flops_pct`` set, check up front that the method's FLOPs can be held
   there (``fixed_flops.py``), so a sweep never starts on an impossible budget.
2. With ``tune.objective=agreement`` (no labels needed), run the vanilla cell of the same model × benchmark first: every
   trial's agreement is measured against it.
3. Launch the trials as a Hydra multirun with ``hydra/sweeper=optuna`` (hydra-optuna-sweeper, TPE seeded by ``seed``).
   Each trial is an ordinary cell: its retention is solved for the FLOPs budget inside the job, its run id is the
   ordinary hash of its settings, so a resubmitted tuning run reuses every finished trial and SLURM works as for any
   sweep. A failed trial is recorded as failed and the search goes on.
4. Read every trial back from its job folder and record, write ``<tune.out_dir>/trials.json`` and the best trial as
   ``<tune.out_dir>/conf/method/<preset>.yaml`` (its solved retention, its FLOPs and where it came from in the header).
   Use it with ``hydra.searchpath=[file://<tune.out_dir>/conf] method=<preset>``.

The exit status is non-zero when any trial failed (after the rest ran and the preset was written) or none finished.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from adatp_bench.config import compose, method_settings
from adatp_bench.errors import AdatpBenchError, ConfigError
from adatp_bench.results import RunDir, atomic_write_text
from adatp_bench.run import objective

log = logging.getLogger("adatp_bench.tune")


@dataclass(frozen=True)
class Trial:
    """One tuning trial as it finished: its sampled hyperparameters and what its cell recorded."""

    number: int
    params: dict[str, Any]
    status: str  # the cell's status: done, skipped (already done), failed, busy, unknown
    run_id: str | None
    value: float | None  # the objective
    retention: float | None  # solved for the FLOPs budget
    pct_flops: float | None  # measured (recorded) % of vanilla prefill FLOPs
    paper_tflops: float | None
    error: str | None = None


def search_space(cfg: DictConfig) -> dict[str, str]:
    """The method's declared search space as ``{hyperparameter: optuna-syntax}``, checked against its settings."""
    space = cfg.method.get("search_space")
    if not space:
        raise ConfigError(
            f"method {cfg.method.name!r} declares no search_space in conf/method/{cfg.method.name}.yaml; add one "
            "(e.g. search_space: {k: range(1, 4)}) or pass '+method.search_space.<key>=\"interval(lo, hi)\"'"
        )
    settings = method_settings(cfg.method)
    unknown = sorted(set(space) - set(settings))
    if unknown:
        raise ConfigError(f"search_space of {cfg.method.name} names {unknown}, which are not its hyperparameters; "
                          f"valid: {', '.join(sorted(settings))}")  # fmt: skip
    if cfg.tune.flops_pct is not None and "retention" in space:
        raise ConfigError("retention is solved for tune.flops_pct; it cannot also be searched (drop it or set "
                          "tune.flops_pct=null)")  # fmt: skip
    return {str(k): str(v) for k, v in space.items()}


def _run(args: list[str]) -> int:
    """Run ``python -m adatp_bench.run <args>`` in this folder; its own logs go to the terminal."""
    cmd = [sys.executable, "-m", "adatp_bench.run", *args]
    log.info("$ %s", " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def sweep_overrides(cfg: DictConfig, overrides: list[str], space: dict[str, str], sweep_dir: Path) -> list[str]:
    """The multirun's command line: the user's overrides, the Optuna sweeper and the search space."""
    return [
        "-m",
        *overrides,
        "hydra/sweeper=optuna",
        "hydra.sweeper.direction=maximize",
        f"hydra.sweeper.n_trials={cfg.tune.n_trials}",
        f"hydra.sweeper.n_jobs={cfg.tune.n_jobs}",
        f"hydra.sweeper.study_name={study_name(cfg)}",
        f"hydra.sweeper.sampler.seed={cfg.seed}",
        "hydra.sweeper.max_failure_rate=1.0",  # a failed trial is recorded; the search goes on
        f"hydra.sweep.dir={sweep_dir}",
        *[f"method.{key}={value}" for key, value in space.items()],
    ]


def _budget_tag(cfg: DictConfig) -> str:
    """``f<pct>`` for a FLOPs-held study, ``free`` otherwise."""
    return "free" if cfg.tune.flops_pct is None else f"f{cfg.tune.flops_pct:g}"


def study_name(cfg: DictConfig) -> str:
    return f"{cfg.method.name}_{cfg.model.name}_{cfg.benchmark.name}_{_budget_tag(cfg)}_{cfg.tune.objective}"


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p.parent for p in sweep_dir.glob("*/.hydra")), key=lambda p: int(p.name) if p.name.isdigit() else 0)


def _param_overrides(job: Path, space: dict[str, str]) -> dict[str, Any]:
    """The sampled values of the search space in one job's overrides."""
    params = {}
    for line in OmegaConf.load(job / ".hydra" / "overrides.yaml"):
        key, _, value = str(line).partition("=")
        if key.startswith("method.") and key[len("method.") :] in space:
            params[key[len("method.") :]] = yaml.safe_load(value) if value else value
    return params


def read_trials(cfg: DictConfig, sweep_dir: Path, space: dict[str, str]) -> list[Trial]:
    """Every trial of a tuning sweep, from its job folder's overrides, status and the cell's record."""
    results_dir = Path(cfg.paths.results_dir)
    trials = []
    for number, job in enumerate(_job_dirs(sweep_dir)):
        status_path = job / "cell_status.json"
        status = json.loads(status_path.read_text()) if status_path.exists() else {"status": "unknown"}
        record = RunDir(results_dir, status["run_id"]).record() if status.get("run_id") else None
        value = objective(cfg, record) if record is not None else None
        efficiency = record.efficiency if record is not None else {}
        trials.append(
            Trial(
                number=number,
                params=_param_overrides(job, space),
                status=status["status"],
                run_id=status.get("run_id"),
                value=None if value is None or math.isnan(value) else float(value),
                retention=record.method_settings.get("retention") if record is not None else None,
                pct_flops=efficiency.get("pct_flops_of_vanilla"),
                paper_tflops=efficiency.get("paper_tflops"),
                error=status.get("error"),
            )
        )
    return trials


def best_trial(trials: list[Trial]) -> Trial | None:
    """The finished trial with the highest objective (the earliest among equals)."""
    finished = [t for t in trials if t.value is not None]
    return max(finished, key=lambda t: (t.value, -t.number)) if finished else None


def preset_yaml(cfg: DictConfig, best: Trial, n_trials: int) -> str:
    """The best trial as a method preset: the base method's config with the tuned values and the solved retention."""
    assert best.value is not None
    budget = (
        f"prefill FLOPs held at {cfg.tune.flops_pct}% of vanilla (recorded: {best.pct_flops:.2f}%, "
        f"{best.paper_tflops:.4g} TFLOPs in the paper convention, on {cfg.model.name}); retention solved"
        if cfg.tune.flops_pct is not None and best.pct_flops is not None
        else f"retention as configured (recorded: {best.pct_flops}% of vanilla prefill FLOPs)"
    )
    header = [
        f"# Tuned by `python -m adatp_bench.tune` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: best of {n_trials} "
        f"Optuna trials (TPE, seed {cfg.seed}).",
        f"# Objective {cfg.tune.objective} = {best.value:.4g} on {cfg.model.name} x {cfg.benchmark.name}"
        + (f" (limit {cfg.limit})" if cfg.limit else "")
        + f"; {budget}.",
        f"# Best trial: run {best.run_id} ({cfg.paths.results_dir}/{best.run_id}/record.json). Scored on the data it "
        "was tuned on, not held out: evaluate the preset on other data before quoting it.",
        "defaults:",
        f"  - {cfg.method.name}",
        "  - _self_",
        "",
    ]
    values = {**best.params}
    if best.retention is not None and cfg.tune.flops_pct is not None:
        values["retention"] = best.retention
    body = OmegaConf.to_yaml(OmegaConf.create(values))
    return "\n".join(header) + body


def preset_name(cfg: DictConfig) -> str:
    """``tuned_<method>_<model>_f<pct>`` (``_free`` without a FLOPs budget), a valid method option name."""
    return f"tuned_{cfg.method.name}_{cfg.model.name}_{_budget_tag(cfg)}".replace(".", "p").replace("-", "_")


def format_trials(trials: list[Trial]) -> str:
    """One line per trial: status, objective, solved retention, recorded FLOPs and the sampled values."""
    lines = ["trial  status   objective  retention  % FLOPs  params"]
    for t in trials:
        value = "—" if t.value is None else f"{t.value:9.3f}"
        retention = "—" if t.retention is None else f"{t.retention:.6f}"
        pct = "—" if t.pct_flops is None else f"{t.pct_flops:7.2f}"
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        lines.append(f"{t.number:>5}  {t.status:<7}  {value:>9}  {retention:>9}  {pct:>7}  {params}"
                     + (f"  ({t.error})" if t.error else ""))  # fmt: skip
    return "\n".join(lines)


def tune(overrides: list[str]) -> int:
    """Run a tuning study (see the module docstring); returns the exit status."""
    cfg = compose(overrides)
    space = search_space(cfg)
    if cfg.tune.flops_pct is not None:  # fail now, not in every trial
        from adatp_bench.fixed_flops import hold_cell_flops

        held = hold_cell_flops(copy.deepcopy(cfg))  # it sets the solved retention in the config it is given
        log.info("FLOPs held at %s%% of vanilla: the default setting solves to retention %s (%.2f%%)",
                 cfg.tune.flops_pct, held.retention, held.pct)  # fmt: skip
    if cfg.tune.objective == "agreement" and cfg.method.name != "vanilla":
        log.info("objective agreement: running the vanilla cell first (skipped if done)")
        if _run([*overrides, "method=vanilla", "tune.flops_pct=null"]) != 0:
            log.error("the vanilla cell failed; agreement cannot be measured without it")
            return 1
    out_dir = Path(cfg.tune.out_dir)
    sweep_dir = out_dir / "studies" / f"{study_name(cfg)}_{datetime.now(UTC):%Y%m%d-%H%M%S}"
    sweep_rc = _run(sweep_overrides(cfg, overrides, space, sweep_dir))
    trials = read_trials(cfg, sweep_dir, space)
    print(format_trials(trials))
    best = best_trial(trials)
    summary = {
        "study": study_name(cfg),
        "sweep_dir": str(sweep_dir),
        "objective": cfg.tune.objective,
        "flops_pct": cfg.tune.flops_pct,
        "search_space": space,
        "trials": [asdict(t) for t in trials],
        "best": None if best is None else best.number,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / "trials.json", json.dumps(summary, indent=1, default=str) + "\n")
    atomic_write_text(out_dir / "trials.json", json.dumps(summary, indent=1, default=str) + "\n")
    if best is None:
        log.error("no trial finished; nothing to write (trials: %s)", sweep_dir / "trials.json")
        return 1
    preset = out_dir / "conf" / "method" / f"{preset_name(cfg)}.yaml"
    preset.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(preset, preset_yaml(cfg, best, len(trials)))
    log.info("best trial %d: %s = %.4g; preset %s (use: hydra.searchpath=[file://%s] method=%s)", best.number,
             cfg.tune.objective, best.value, preset, preset.parents[1], preset.stem)  # fmt: skip
    failed = [t for t in trials if t.status in ("failed", "busy", "unknown")]
    if failed or sweep_rc != 0 or len(trials) < cfg.tune.n_trials:
        log.error("%d of %d trials did not finish (see the table above)", max(len(failed), 1), cfg.tune.n_trials)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        return tune(list(sys.argv[1:] if argv is None else argv))
    except AdatpBenchError as err:
        log.error("%s: %s", type(err).__name__, err)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
