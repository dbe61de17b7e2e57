"""Build the virtual environment exactly from the lock: ``make install`` (``TORCH=cpu|cuda``).

    python3.11 scripts/install.py --venv .venv --torch cpu
    python3.11 scripts/install.py --venv .venv --torch cuda           # GPU machines (PyPI's CUDA torch)

Steps, each printed as it starts:

1. create the environment (if needed) and install the lock's pip and setuptools;
2. install every other distribution of ``requirements/<torch>.txt`` with ``--no-deps`` (the lock is complete; nothing
   is resolved at install time) and without build isolation (the sdists in it build with the locked setuptools);
3. torchvision: on ``cpu``, a matching ``+cpu`` torchvision wheel where one is installable (no fallback needed);
   otherwise the lock's PyPI wheel plus the pip-owned fallback ``packaging/torchvision-cpu-fix``. On ``cuda``, the
   lock's wheel, which loads as is;
4. the project itself (editable unless ``--no-editable``);
5. remove whatever is installed but not in the lock, then check the environment against the lock and every
   installed distribution's requirements;
6. a smoke test: one tiny cell end to end (model, pruning method, lmms-eval's real task code, result record) in a
   temporary folder, so a stack that imports but cannot evaluate fails here and not in the first sweep.

Standard library only; run it with the Python the environment should use.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lockfile import (
    INSTALL_RECORD,
    PROJECT,
    ROOT,
    TORCHVISION_FIX,
    installed_in,
    lock_inputs_digest,
    read_lock,
    recorded_inputs_digest,
)

BOOTSTRAP = ("pip", "setuptools")
SMOKE = ["model=tiny", "method=fastv", "budget=r25", "benchmark=videomme_synth", "limit=2"]


def step(message: str) -> None:
    print(f"[install] {message}", file=sys.stderr, flush=True)


def pip(python: Path, *args: str, check: bool = True, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(python), "-m", "pip", *(["--quiet"] if quiet else []), *args]
    result = subprocess.run(cmd, text=True, capture_output=True)
    if check and result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"[install] failed: {' '.join(cmd[1:])}")
    return result


def install_torchvision(python: Path, flavour: str, version: str, torch_index: str | None) -> str:
    """Install torchvision; return how: ``cpu-wheel``, ``pypi+fix`` or ``cuda``."""
    if flavour == "cuda":
        pip(python, "install", "--no-deps", f"torchvision=={version}")
        return "cuda"
    extra = ["--extra-index-url", torch_index] if torch_index else []
    attempt = pip(python, "install", "--no-deps", *extra, f"torchvision=={version}+cpu", check=False)
    if attempt.returncode == 0:
        step(f"torchvision {version}+cpu (the CPU wheel matching torch): no fallback needed")
        pip(python, "uninstall", "--yes", TORCHVISION_FIX, check=False)
        return "cpu-wheel"
    step(
        f"no torchvision=={version}+cpu is installable here; installing PyPI's torchvision {version} and the "
        f"pip-owned fallback {TORCHVISION_FIX} (pass --torch-index https://download.pytorch.org/whl/cpu to use "
        "PyTorch's CPU wheel instead)"
    )
    pip(python, "install", "--no-deps", f"torchvision=={version}")
    pip(python, "install", "--no-deps", "--no-build-isolation", str(ROOT / "packaging" / "torchvision-cpu-fix"))
    return "pypi+fix"


def smoke_test(python: Path) -> float:
    """One tiny cell end to end in a temporary folder; returns its wall time."""
    with tempfile.TemporaryDirectory(prefix="adatp-smoke-") as tmp:
        started = time.time()
        env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
        cmd = [str(python), "-m", "adatp_bench.run", *SMOKE, f"paths.root={tmp}", f"hydra.run.dir={tmp}/outputs"]
        result = subprocess.run(cmd, cwd=tmp, text=True, capture_output=True, env={**_base_env(), **env})
        records = list(Path(tmp, "results", "runs").glob("*/record.json"))
        status = json.loads(records[0].read_text())["status"] if len(records) == 1 else None
        if result.returncode != 0 or status != "ok":
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-8000:])
            sys.exit(f"[install] smoke test failed (exit {result.returncode}, record status {status}): {' '.join(cmd)}")
        return time.time() - started


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--torch", choices=["cpu", "cuda"], default="cpu", help="which lock: CPU torch or CUDA torch")
    parser.add_argument("--torch-index", help="index with torch's +cpu wheels, e.g. https://download.pytorch.org/whl/cpu")
    parser.add_argument("--no-editable", action="store_true", help="install the project as a regular package")
    parser.add_argument("--no-smoke", action="store_true", help="skip the end-to-end smoke test")
    args = parser.parse_args()
    started = time.time()
    lock_path = ROOT / "requirements" / f"{args.torch}.txt"
    if recorded_inputs_digest(lock_path) != lock_inputs_digest():
        sys.exit(
            f"[install] {lock_path.relative_to(ROOT)} is stale: pyproject.toml or requirements/constraints.in changed "
            "since it was generated. Run `make lock` and commit the new lock."
        )
    lock = read_lock(lock_path)
    args.venv = args.venv.absolute()
    python = args.venv / "bin" / "python"
    if not python.exists():
        step(f"creating {args.venv} with Python {sys.version.split()[0]}")
        subprocess.run([sys.executable, "-m", "venv", str(args.venv)], check=True)
    step(f"bootstrap: {', '.join(f'{n}=={lock[n]}' for n in BOOTSTRAP)}")
    pip(python, "install", "--no-deps", *(f"{n}=={lock[n]}" for n in BOOTSTRAP))
    rest = {n: v for n, v in lock.items() if n not in {*BOOTSTRAP, "torchvision"}}
    step(f"{len(rest)} locked distributions from {lock_path.relative_to(ROOT)} (no dependency resolution)")
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as reqs:
        reqs.write("".join(f"{n}=={v}\n" for n, v in sorted(rest.items())))
        reqs.flush()
        pip(python, "install", "--no-deps", "--no-build-isolation", "-r", reqs.name)
    torchvision = install_torchvision(python, args.torch, lock["torchvision"], args.torch_index)
    step(f"{PROJECT} ({'regular' if args.no_editable else 'editable'} install)")
    pip(python, "install", "--no-deps", "--no-build-isolation", *([] if args.no_editable else ["-e"]), str(ROOT))
    allowed = {*lock, PROJECT, *([TORCHVISION_FIX] if torchvision == "pypi+fix" else [])}
    strays = sorted(set(installed_in(python)) - allowed)
    if strays:
        step(f"removing what the lock does not list: {', '.join(strays)}")
        pip(python, "uninstall", "--yes", *strays)
    record = {
        "flavour": args.torch,
        "lock": str(lock_path.relative_to(ROOT)),
        "lock_sha256": hashlib.sha256(lock_path.read_bytes()).hexdigest(),
        "torchvision": torchvision,
        "installed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    prefix = subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True)
    (Path(prefix.stdout.strip()) / INSTALL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    step("checking the environment against the lock")
    check = subprocess.run([str(python), str(ROOT / "scripts" / "lockfile.py"), "check", str(lock_path)])
    if check.returncode != 0:
        sys.exit("[install] the environment does not match the lock (listed above)")
    if not args.no_smoke:
        step("smoke test: one tiny cell end to end (" + " ".join(SMOKE) + ")")
        step(f"smoke test passed in {smoke_test(python):.1f} s")
    step(f"done in {time.time() - started:.0f} s: {args.venv} matches {lock_path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
