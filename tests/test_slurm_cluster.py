"""Hydra sweeps through a real one-node SLURM cluster (scripts/slurm/cluster.sh) with the project's launcher configs.

Runs the tiny app in tests/slurm_app/ (conf: hydra/launcher=slurm_local_test -> slurm -> submitit_slurm):
a 2×2 sweep, fake-GPU allocation, the sacct stand-in, a cancelled job (must fail, not hang), and requeue — by
preemption (USR2 -> submitit checkpoint -> `scontrol requeue`) and by an external `scontrol requeue` — with the job
resuming from its per-item checkpoint. Skipped without root/apt (see tests/slurm_utils.py; ADATP_SLURM_REQUIRE=1
makes that a failure). The whole file takes about a minute on 2 CPUs.
"""

from __future__ import annotations

import json
import time

import pytest

import slurm_utils
from slurm_utils import SLURM_APP, assert_each_item_once, read_jsonl, run_multirun, start_multirun, wait_for

# The session-scoped cluster fixture: binding it to a module-level name registers it for this module. (A conftest.py
# can do the same for every module by importing slurm_cluster from slurm_utils.)
slurm_cluster = slurm_utils.slurm_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _result(job_dir) -> dict:
    return json.loads((job_dir / "result.json").read_text())


def test_cluster_is_idle_and_reports_timings(slurm_cluster) -> None:
    node = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %P %T %c").stdout.split()
    assert node[0] == "localhost"
    assert node[1].rstrip("*") == slurm_cluster.partition
    assert node[2] in {"idle", "mixed", "allocated"}
    print(f"cluster up (incl. any apt install) in {slurm_cluster.up_seconds:.1f} s")


def test_sweep_2x2_runs_every_cell_as_a_slurm_array_task(slurm_cluster, tmp_path) -> None:
    run = run_multirun(SLURM_APP, ["+x=1,2", "+y=a,b"], timeout=90, cluster=slurm_cluster, sweep_dir=tmp_path / "sweep")
    assert run.returncode == 0, run.output
    print(f"2x2 sweep through SLURM in {run.seconds:.1f} s")

    dirs = run.job_dirs()
    assert [d.name for d in dirs] == ["0", "1", "2", "3"]
    results = [_result(d) for d in dirs]
    cells = {(r["cfg"]["x"], r["cfg"]["y"]) for r in results}
    assert cells == {(1, "a"), (1, "b"), (2, "a"), (2, "b")}
    for d, r in zip(dirs, results, strict=True):
        assert r["output_dir"] == str(d)  # each job wrote into its own Hydra output dir
        assert r["submitit_executor"] == "slurm"
        assert r["items_done"] == [0, 1, 2, 3]
    # One job array, four distinct SLURM jobs; each job has its own submitit folder (logs + pickles).
    assert len({r["slurm_array_job_id"] for r in results}) == 1
    assert len({r["slurm_job_id"] for r in results}) == 4
    array_id = results[0]["slurm_array_job_id"]
    assert sorted(p.name for p in (run.sweep_dir / ".submitit").iterdir() if p.name.startswith(f"{array_id}_")) == [
        f"{array_id}_{i}" for i in range(4)
    ]


def test_sacct_standin_reports_final_states(slurm_cluster) -> None:
    # The cluster has no accounting; submitit's `sacct -o JobID,State,NodeList --parsable2 -j ID` is answered by the
    # stand-in from squeue --states=all.
    job_id = slurm_cluster.run("sbatch", "--parsable", "--output=/dev/null", "--wrap", "true").stdout.strip()

    def completed() -> bool:
        out = slurm_cluster.run("sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", job_id).stdout
        lines = out.splitlines()
        assert lines[0] == "JobID|State|NodeList"
        return f"{job_id}|COMPLETED|localhost" in lines

    wait_for(completed, timeout=30, what=f"sacct stand-in to report job {job_id} COMPLETED")
    # An unknown id: just the header, exit 0 (submitit reads that as "not known yet").
    assert (
        slurm_cluster.run("sacct", "--parsable2", f"--jobs={int(job_id) + 10_000}").stdout == "JobID|State|NodeList\n"
    )


def test_production_launcher_with_cli_overrides_gets_a_fake_gpu(slurm_cluster, tmp_path) -> None:
    # The real `slurm` launcher config (gpus_per_node=1, 8 CPUs, 64 GB), resized for this 2-CPU node from the command
    # line exactly as a user would pick a partition on a real cluster.
    gres = slurm_cluster.run("sinfo", "-h", "-o", "%G").stdout.strip()
    if "gpu" not in gres:
        pytest.skip(f"test cluster has no fake GPUs (gres {gres!r}; ADATP_SLURM_GPUS=0?)")
    overrides = [
        "+x=1,2",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=5",
    ]
    run = run_multirun(
        SLURM_APP,
        overrides,
        timeout=90,
        cluster=slurm_cluster,
        sweep_dir=tmp_path / "sweep",
    )
    assert run.returncode == 0, run.output
    devices = [_result(d)["cuda_visible_devices"] for d in run.job_dirs()]
    assert len(devices) == 2 and all(dev in {"0", "1"} for dev in devices), devices
    # gpus_per_node=1 reached sbatch; the CLI overrides replaced the file's values.
    script = next((run.sweep_dir / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --gpus-per-node=1" in script and "#SBATCH --mem=1GB" in script, script
    assert f"#SBATCH --partition={slurm_cluster.partition}" in script and "#SBATCH --time=5" in script, script


def test_cancelled_job_fails_the_sweep_instead_of_hanging(slurm_cluster, tmp_path) -> None:
    # A job that dies without writing its result pickle: without a working sacct, submitit would wait forever.
    sweep = tmp_path / "sweep"
    run = start_multirun(SLURM_APP, ["+x=1", "num_items=1000", "sleep_s=0.5"], cluster=slurm_cluster, sweep_dir=sweep)
    try:
        job = wait_for(
            lambda: read_jsonl(sweep / "0" / "items.jsonl"), timeout=60, what="the job to start", multirun=run
        )
        t0 = time.monotonic()
        slurm_cluster.cancel(job[0]["slurm_id"])
        run.wait(timeout=90)
    finally:
        run.stop()
    print(f"cancelled job detected {time.monotonic() - t0:.1f} s after scancel")
    assert run.returncode != 0
    assert "CANCELLED" in run.output, run.output[-4000:]


def test_requeued_jobs_resume_from_their_checkpoint(slurm_cluster, tmp_path) -> None:
    """Job 0 is preempted (USR2 -> submitit checkpoint -> scontrol requeue); job 1 is requeued from outside
    (SIGTERM, killed after KillWait). Both restart from scratch, skip the items already in items.jsonl, and finish:
    every item exactly once, some from the first run and some from the second."""
    n_items = 30  # 0.5 s each: 15 s of work, so both jobs are still running when they are interrupted
    sweep = tmp_path / "sweep"
    t_start = time.monotonic()
    run = start_multirun(
        SLURM_APP, ["+x=1,2", f"num_items={n_items}", "sleep_s=0.5"], cluster=slurm_cluster, sweep_dir=sweep
    )
    try:
        progress = [sweep / "0" / "items.jsonl", sweep / "1" / "items.jsonl"]
        wait_for(
            lambda: all(len(read_jsonl(p)) >= 3 for p in progress),
            timeout=60,
            what="3 items in both jobs",
            multirun=run,
        )
        # "<array id>_<task id>": a task's bare SLURM_JOB_ID may equal the array id and would requeue the whole array.
        job_ids = [read_jsonl(p)[0]["slurm_id"] for p in progress]
        slurm_cluster.preempt(job_ids[0])
        slurm_cluster.requeue(job_ids[1])
        run.wait(timeout=150)
    finally:
        run.stop()
    print(f"requeue test: sweep finished {time.monotonic() - t_start:.1f} s after launch")
    assert run.returncode == 0, run.output[-6000:]
    assert "this job is preempted" in run.output or any(
        "this job is preempted" in p.read_text() for p in (sweep / ".submitit").rglob("*_log.err")
    ), "job 0 did not go through submitit's preemption path"

    for num, job_id in enumerate(job_ids):
        rows = read_jsonl(progress[num])
        assert_each_item_once(rows, n_items)
        restarts = {r["restart"] for r in rows}
        assert 0 in restarts and max(restarts) >= 1, f"job {num}: items not split across runs: {restarts}"
        result = _result(sweep / str(num))
        assert result["restart"] >= 1 and result["items_done"] == list(range(n_items))
        assert slurm_cluster.restarts(job_id) >= 1
