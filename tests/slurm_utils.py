"""Reusable pieces for tests that run Hydra sweeps through a real (local, one-node) SLURM cluster.

The cluster comes from ``scripts/slurm/cluster.sh`` (see docs/slurm.md). Use from a test module::

    import pytest

    import slurm_utils
    from slurm_utils import run_multirun

    slurm_cluster = slurm_utils.slurm_cluster  # a module-level name registers the fixture (or import it in conftest.py)
    pytestmark = [pytest.mark.slurm, pytest.mark.slow]

    def test_sweep(slurm_cluster, tmp_path):
        res = run_multirun(
            "adatp_bench.run", ["experiment=demo"], timeout=120, cluster=slurm_cluster, sweep_dir=tmp_path / "sweep"
        )
        assert res.returncode == 0, res.output
        assert len(res.job_dirs()) == 4

``slurm_cluster`` is session-scoped: the first test that needs it brings the cluster up (installing the Debian packages
if needed), the end of the session brings it down again — unless it was already up before the session, or
``ADATP_SLURM_KEEP=1``. Several pytest-xdist workers may share it (reference-counted under a file lock). It skips the
test with a clear reason when the machine cannot host a cluster (not root, no apt-get, packages not installable);
``ADATP_SLURM_REQUIRE=1`` (set it in CI) turns that skip into a failure. While the fixture is active, ``SLURM_CONF`` and
the ``sacct`` stand-in's directory are in ``os.environ``, so in-process Hydra/submitit calls work too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "scripts" / "slurm" / "cluster.sh"
SLURM_APP = Path(__file__).resolve().parent / "slurm_app" / "my_app.py"
EXIT_SKIP = 77  # cluster.sh: "cannot provision a cluster here"
DEFAULT_BASE = Path(os.environ.get("ADATP_SLURM_BASE", "/tmp/adatp-slurm"))
TEST_LAUNCHER = "slurm_local_test"


# ------------------------------------------------------------------------------------------------------------ cluster
@dataclass
class SlurmCluster:
    """A running cluster: where it lives and how to talk to it."""

    base: Path
    env: dict[str, str]  # what clients need on top of os.environ: SLURM_CONF, PATH with the sacct stand-in first
    partition: str
    up_seconds: float = 0.0  # time `cluster.sh up` took in this session (includes an apt install on a fresh machine)
    cluster_sh_output: str = ""

    def client_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env.update(extra or {})
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (sinfo, squeue, scontrol, scancel, sbatch, sacct stand-in, ...)."""
        proc = subprocess.run(
            list(cmd), env=self.client_env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{shlex.join(cmd)} -> rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    # -- jobs --------------------------------------------------------------------------------------------------------
    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld remembers (finished ones too, for MinJobAge=3600 s): id, name, state, reason."""
        out = self.run("squeue", "--noheader", "--states=all", "--format=%i|%j|%T|%r").stdout
        keys = ("id", "name", "state", "reason")
        return [dict(zip(keys, line.split("|"), strict=False)) for line in out.splitlines() if "|" in line]

    def job_field(self, job_id: str | int, key: str) -> str | None:
        """A field of `scontrol show job` (e.g. JobState, Restarts, Reason), or None when unknown."""
        out = self.run("scontrol", "show", "job", str(job_id), check=False).stdout
        m = re.search(rf"\b{re.escape(key)}=(\S*)", out)
        return m.group(1) if m else None

    def restarts(self, job_id: str | int) -> int:
        return int(self.job_field(job_id, "Restarts") or 0)

    # job_id for the three methods below: address one array task as "<array id>_<task id>" (SLURM_ARRAY_JOB_ID and
    # SLURM_ARRAY_TASK_ID). A task's own SLURM_JOB_ID is NOT safe: one task's id equals the array id, and
    # `scontrol requeue <array id>` requeues (and `scancel <array id>` cancels) every task of the sweep.
    def preempt(self, job_id: str | int) -> None:
        """What a preemption looks like to submitit: USR2 to the job step -> checkpoint() -> `scontrol requeue`.
        (The job must run with timeout_min > 10, otherwise submitit counts it as a timeout; see docs/slurm.md.)"""
        self.run("scancel", "--signal=USR2", str(job_id))

    def requeue(self, job_id: str | int) -> None:
        """External requeue (an admin, a node failure): SIGTERM, SIGKILL after KillWait, back to PENDING.
        submitit's checkpoint() is NOT called; the job simply restarts from scratch."""
        self.run("scontrol", "requeue", str(job_id))

    def cancel(self, *job_ids: str | int) -> None:
        if job_ids:
            self.run("scancel", *map(str, job_ids), check=False)

    def diagnostics(self) -> str:
        """Queue, node and log tails, for assertion messages."""
        parts = [
            self.run("squeue", "--states=all", "-o", "%i %j %T %M %r", check=False).stdout,
            self.run("sinfo", "-N", "-l", check=False).stdout,
        ]
        for name in ("slurmctld.log", "slurmd-localhost.log"):
            log = self.base / "log" / name
            if log.exists():
                parts.append(f"--- tail {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)

    @contextlib.contextmanager
    def activated(self) -> Iterator[SlurmCluster]:
        """Put SLURM_CONF and the sacct stand-in on os.environ for the duration (restored afterwards)."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("ADATP_SLURM_REQUIRE") == "1":
        pytest.fail(f"ADATP_SLURM_REQUIRE=1 but no SLURM test cluster: {reason}", pytrace=False)
    pytest.skip(reason)


def _cluster_sh(cmd: str, base: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADATP_SLURM_BASE": str(base)}
    return subprocess.run(
        ["bash", str(CLUSTER_SH), cmd], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _parse_env_file(path: Path) -> dict[str, str]:
    """<base>/env.sh has exactly two lines: export SLURM_CONF="..." and export PATH="<base>/bin:$PATH"."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r'export (\w+)="(.*)"', line.strip())
        if m:
            env[m.group(1)] = m.group(2).replace("$PATH", os.environ.get("PATH", ""))
    return env


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _live_users(users: Path) -> list[Path]:
    live = []
    for p in users.glob("*"):
        try:
            os.kill(int(p.name), 0)
            live.append(p)
        except (ValueError, ProcessLookupError):
            p.unlink(missing_ok=True)  # a crashed session's registration
        except PermissionError:
            live.append(p)
    return live


def acquire_cluster(base: Path = DEFAULT_BASE, timeout: float = 600) -> SlurmCluster:
    """Bring the cluster up (idempotent) and register this process as a user. Skips/fails when impossible."""
    if not sys.platform.startswith("linux"):
        _skip_or_fail(f"the local SLURM test cluster needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        _skip_or_fail("the local SLURM test cluster needs root (apt-get install, slurmd starts jobs as root)")
    base.mkdir(parents=True, exist_ok=True)
    users = base / "fixture-users"
    users.mkdir(exist_ok=True)
    marker = base / "fixture-started"
    with _locked(base / ".fixture.lock"):
        first = not _live_users(users)
        was_up = _cluster_sh("status", base, 30).returncode == 0
        t0 = time.monotonic()
        proc = _cluster_sh("up", base, timeout)
        up_seconds = time.monotonic() - t0
        output = proc.stdout + proc.stderr
        if proc.returncode == EXIT_SKIP:
            lines = [ln for ln in output.splitlines() if "SKIP" in ln] or output.splitlines()[-1:]
            _skip_or_fail(f"cannot start the local SLURM cluster: {' '.join(lines)}")
        if proc.returncode != 0:
            pytest.fail(f"scripts/slurm/cluster.sh up failed (rc {proc.returncode}):\n{output}", pytrace=False)
        if first and not was_up:
            marker.touch()  # we started it, so the last user brings it down
        (users / str(os.getpid())).touch()
    settings = dict(kv.split("=", 1) for kv in (base / "etc" / "settings").read_text().split())
    return SlurmCluster(
        base=base,
        env=_parse_env_file(base / "env.sh"),
        partition=settings.get("partition", "debug"),
        up_seconds=up_seconds,
        cluster_sh_output=output,
    )


def release_cluster(cluster: SlurmCluster) -> None:
    """Unregister; the last user brings the cluster down if a fixture started it (and ADATP_SLURM_KEEP is not 1)."""
    base = cluster.base
    with _locked(base / ".fixture.lock"):
        (base / "fixture-users" / str(os.getpid())).unlink(missing_ok=True)
        marker = base / "fixture-started"
        if _live_users(base / "fixture-users") or not marker.exists():
            return
        if os.environ.get("ADATP_SLURM_KEEP") == "1":
            return
        proc = _cluster_sh("down", base, 120)
        marker.unlink(missing_ok=True)
        if proc.returncode != 0:
            print(f"scripts/slurm/cluster.sh down failed (rc {proc.returncode}):\n{proc.stdout}{proc.stderr}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running local SLURM cluster for the whole session (see the module docstring)."""
    cluster = acquire_cluster()
    try:
        with cluster.activated():
            yield cluster
    finally:
        release_cluster(cluster)


# ----------------------------------------------------------------------------------------------------------- multirun
@dataclass
class Multirun:
    """A Hydra multirun running in the background (from `start_multirun`)."""

    cmd: list[str]
    proc: subprocess.Popen
    log_path: Path
    sweep_dir: Path | None
    cluster: SlurmCluster | None
    started: float = field(default_factory=time.monotonic)
    returncode: int | None = None
    seconds: float | None = None

    @property
    def output(self) -> str:
        """Everything the Hydra process printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.proc.poll() is None

    def job_dirs(self) -> list[Path]:
        """The jobs' Hydra output dirs (<sweep>/<num> with the default subdir), ordered by job number."""
        assert self.sweep_dir is not None, "pass sweep_dir= to know where the jobs write"
        dirs = [p for p in self.sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        return sorted(dirs, key=lambda p: int(p.name))

    def slurm_job_ids(self) -> list[str]:
        """SLURM ids this sweep submitted, from submitit's folder names (<sweep>/.submitit/<arrayid>_<task>)."""
        if self.sweep_dir is None or not (self.sweep_dir / ".submitit").is_dir():
            return []
        names = [p.name for p in (self.sweep_dir / ".submitit").iterdir() if p.is_dir() and p.name[:1].isdigit()]
        return sorted({n.split("_")[0] for n in names})

    def wait(self, timeout: float) -> Multirun:
        """Wait for Hydra to exit. On timeout: cancel this sweep's jobs, kill Hydra, fail with diagnostics."""
        try:
            self.returncode = self.proc.wait(timeout=max(0.0, self.started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            diag = self.cluster.diagnostics() if self.cluster else ""
            pytest.fail(
                f"multirun did not finish within {timeout:.0f} s: {shlex.join(self.cmd)}\n"
                f"--- output (tail)\n{self.output[-6000:]}\n--- cluster\n{diag}",
                pytrace=False,
            )
        self.seconds = time.monotonic() - self.started
        return self

    def stop(self) -> None:
        """Cancel this sweep's SLURM jobs and end the Hydra process we started (no-op once it has exited)."""
        if self.cluster is not None:
            self.cluster.cancel(*self.slurm_job_ids())
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.returncode is None:
            self.returncode = self.proc.returncode


def _app_command(app: str | Path | Sequence[str]) -> list[str]:
    if isinstance(app, (list, tuple)):
        return [str(a) for a in app]
    if isinstance(app, Path) or str(app).endswith(".py"):
        return [sys.executable, str(app)]
    return [sys.executable, "-m", str(app)]  # a module, e.g. "adatp_bench.run"


def start_multirun(
    app: str | Path | Sequence[str],
    overrides: Sequence[str],
    *,
    cluster: SlurmCluster | None = None,
    sweep_dir: Path | None = None,
    launcher: str | None = TEST_LAUNCHER,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Multirun:
    """Start ``<app> --multirun <overrides>`` in the background; returns at once (use `.wait(timeout)`).

    app: a script path (``tests/slurm_app/my_app.py``), a module name (``"adatp_bench.run"``) or a full command list.
    launcher: added as ``hydra/launcher=<launcher>`` unless the overrides already choose one; None adds nothing.
    sweep_dir: added as ``hydra.sweep.dir=<sweep_dir>``; jobs then write to <sweep_dir>/<job num>.
    cwd: where Hydra runs (SLURM jobs inherit it); defaults to sweep_dir's parent, else the current directory.
    """
    args = list(overrides)
    if launcher and not any(a.split("=", 1)[0].lstrip("+~") == "hydra/launcher" for a in args):
        args.append(f"hydra/launcher={launcher}")
    if sweep_dir is not None:
        sweep_dir = Path(sweep_dir)
        sweep_dir.parent.mkdir(parents=True, exist_ok=True)
        args.append(f"hydra.sweep.dir={sweep_dir}")
    cmd = [*_app_command(app), "--multirun", *args]
    cwd = Path(cwd) if cwd else (sweep_dir.parent if sweep_dir is not None else Path.cwd())
    log_path = cwd / f"multirun-{os.getpid()}-{time.monotonic_ns()}.log"
    full_env = cluster.client_env(env) if cluster else {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    return Multirun(cmd=cmd, proc=proc, log_path=log_path, sweep_dir=sweep_dir, cluster=cluster)


def run_multirun(
    app: str | Path | Sequence[str],
    overrides: Sequence[str],
    timeout: float,
    *,
    check: bool = False,
    **kwargs,
) -> Multirun:
    """`start_multirun` + `.wait(timeout)`. check=True asserts a zero exit status (with the output in the message)."""
    run = start_multirun(app, overrides, **kwargs).wait(timeout)
    if check and run.returncode != 0:
        raise AssertionError(f"multirun exited {run.returncode}: {shlex.join(run.cmd)}\n{run.output[-6000:]}")
    return run


# ------------------------------------------------------------------------------------------------------------- helpers
def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    *,
    what: str = "condition",
    interval: float = 0.2,
    multirun: Multirun | None = None,
) -> object:
    """Poll until predicate() is truthy; returns its value. Fails early if `multirun` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if multirun is not None and not multirun.running():
            pytest.fail(f"multirun exited (rc {multirun.proc.returncode}) before {what}:\n{multirun.output[-6000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def read_jsonl(path: Path) -> list[dict]:
    """Complete JSON lines of an append-only file (a torn last line is ignored)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def assert_each_item_once(rows: Sequence[dict], n_items: int, key: str = "item") -> None:
    """No item lost, none duplicated."""
    seen = [r[key] for r in rows]
    dups = sorted({i for i in seen if seen.count(i) > 1})
    missing = sorted(set(range(n_items)) - set(seen))
    assert not dups and not missing, f"duplicated items {dups}, missing items {missing} (rows: {seen})"
