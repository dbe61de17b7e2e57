"""The environment is the lock: every installed distribution pinned, the torchvision fallback pip-owned and only where
needed, lmms-eval resolving our model, and a regular (non-editable) install running a cell from another folder."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIX_DIR = ROOT / "packaging" / "torchvision-cpu-fix"
TORCH_STACK = {"torch", "torchvision", "triton"}


def _lockfile():
    spec = importlib.util.spec_from_file_location("lockfile", ROOT / "scripts" / "lockfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lockfile = _lockfile()


def _install_record() -> dict:
    path = Path(sys.prefix) / lockfile.INSTALL_RECORD
    if not path.exists():
        pytest.fail(f"{path} is missing: this environment was not built by `make install` (scripts/install.py)")
    return json.loads(path.read_text())


def test_environment_matches_its_lock() -> None:
    """Every installed distribution is in the lock at the locked version, and nothing the lock lists is missing."""
    record = _install_record()
    assert lockfile.check(ROOT / record["lock"]) == []


def test_lock_comparison_catches_each_kind_of_drift() -> None:
    lock = {"filelock": "4.2.12", "torch": "2.13.0+cpu", "torchvision": "0.28.0"}
    same = {"filelock": "4.2.12", "torch": "2.13.0+cpu", "torchvision": "0.28.0+cpu", "adatp-bench": "0.1.0"}
    assert lockfile.differences(lock, same, {"adatp-bench"}) == []
    drifted = {"filelock": "4.3.2", "torch": "2.13.0", "extra-pkg": "1.0"}
    assert lockfile.differences(lock, drifted, set()) == [
        "version: filelock is 4.3.2, the lock says 4.2.12",
        "version: torch is 2.13.0, the lock says 2.13.0+cpu",
        "missing: torchvision==0.28.0",
        "not in the lock: extra-pkg==1.0",
    ]


@pytest.mark.parametrize("flavour", ["cpu", "cuda"])
def test_lock_is_generated_from_the_current_inputs(flavour: str) -> None:
    """`make lock` wrote it from today's pyproject.toml and constraints.in, and it satisfies every direct dependency."""
    from packaging.requirements import Requirement

    path = ROOT / "requirements" / f"{flavour}.txt"
    assert lockfile.recorded_inputs_digest(path) == lockfile.lock_inputs_digest(), "stale lock: run `make lock`"
    pins = lockfile.read_lock(path)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(spec)
        name = lockfile.canonical(req.name)
        assert name in pins, f"{req} is not in {path.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{path.name} pins {name}=={pins[name]}: {req}"
    assert {"pip", "setuptools"} <= set(pins), "the build tools are locked too"


def test_cpu_and_cuda_locks_differ_only_in_the_torch_stack() -> None:
    cpu = lockfile.read_lock(ROOT / "requirements" / "cpu.txt")
    cuda = lockfile.read_lock(ROOT / "requirements" / "cuda.txt")
    assert cpu["torch"].endswith("+cpu") and "+" not in cuda["torch"]
    assert lockfile.public(cpu["torch"]) == cuda["torch"]
    shared = set(cpu) & set(cuda)
    assert {n for n in shared if cpu[n] != cuda[n]} == {"torch"}
    cuda_only = set(cuda) - set(cpu)
    assert cuda_only and all(n.startswith(("nvidia-", "cuda-")) or n in TORCH_STACK for n in cuda_only), cuda_only
    assert set(cpu) <= set(cuda)


def test_filelock_pin_keeps_lmms_evals_private_import() -> None:
    """The upstream release that broke every evaluation (filelock 4.3 removed filelock._api) is locked out."""
    import filelock._api  # noqa: F401  lmms-eval 0.7.3's simple_evaluate imports it
    from lmms_eval.evaluator import _enable_reentrant_filelocks

    _enable_reentrant_filelocks()


# -- torchvision ------------------------------------------------------------------------------------------------------


def test_torchvision_is_the_cpu_wheel_or_the_pip_owned_fallback() -> None:
    """Exactly one of: a matching +cpu torchvision (no fallback installed), or PyPI's wheel plus the fallback, which
    pip owns (its RECORD lists the module and the .pth, so `pip uninstall` removes both)."""
    from importlib import metadata

    record = _install_record()
    version = metadata.version("torchvision")
    try:
        fix = metadata.distribution(lockfile.TORCHVISION_FIX)
    except metadata.PackageNotFoundError:
        fix = None
    if record["torchvision"] == "cpu-wheel":
        assert version.endswith("+cpu") and fix is None
    elif record["torchvision"] == "pypi+fix":
        assert fix is not None
        files = {str(f) for f in fix.files or []}
        assert {"adatp_torchvision_cpu_fix.py", "adatp_torchvision_cpu_fix.pth"} <= files
    else:
        assert record["torchvision"] == "cuda" and fix is None


def test_torchvision_and_lmms_eval_import_in_a_fresh_interpreter() -> None:
    """The real import path, as the lmms-eval CLI starts: nothing imported or installed by hand."""
    code = (
        "import torchvision, torchvision.transforms.v2.functional, lmms_eval.evaluator; "
        "from lmms_eval.models import MODEL_REGISTRY_V2 as r; print(r.resolve('adatp_bench').model_id)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("adatp_bench")


def test_installed_fallback_acts_and_missing_ops_raise_a_clear_error() -> None:
    if _install_record()["torchvision"] != "pypi+fix":
        pytest.skip("this environment has a torchvision whose extension loads; no fallback installed")
    code = """
import torch, torchvision, adatp_torchvision_cpu_fix as fix
assert fix.ACTIVE is True, fix.ACTIVE
for call in (lambda: torch.ops.torchvision.nms(torch.zeros(1, 4), torch.zeros(1), 0.5),
             lambda: torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)):
    try:
        call()
    except fix.MissingTorchvisionOp as err:
        print(err)
    else:
        raise SystemExit("a missing operator did not raise")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    messages = proc.stdout.strip().splitlines()
    assert len(messages) == 2
    assert "torchvision::nms is unavailable" in messages[0]
    assert "torchvision's C++ operators" in messages[1]
    for message in messages:
        assert "pip install 'torchvision==0.28.0+cpu'" in message and "CPU-only torch" in message


def _fake_torchvision(root: Path, extension: str) -> Path:
    """A minimal `torchvision` package on a real import path. Its _C.so is a real shared library (``"loadable"``,
    compiled here) or a broken file (``"broken"``, like the CUDA wheel's beside CPU torch). Like the real package, its
    __init__ registers a fake kernel for ``torchvision::nms``, which fails unless someone declared the operator."""
    pkg = root / "torchvision"
    pkg.mkdir(parents=True)
    so = pkg / "_C.so"
    if extension == "loadable":
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            pytest.skip("no C compiler to build a loadable extension")
        src = root / "empty.c"
        src.write_text("int adatp_fake_extension(void) { return 0; }\n")
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    else:
        so.write_bytes(b"not a shared library")
    (pkg / "__init__.py").write_text(
        "import torch\n"
        "try:\n"
        "    torch.ops.torchvision.nms\n"
        "except (AttributeError, RuntimeError):\n"
        "    HAS_NMS = False\n"
        "else:\n"
        "    HAS_NMS = True\n"
        "    @torch.library.register_fake('torchvision::nms')\n"
        "    def _nms_fake(dets, scores, iou_threshold):\n"
        "        return dets.new_empty(0, dtype=torch.long)\n"
    )
    return root


PROBE = """
import adatp_torchvision_cpu_fix as fix
fix.install()
import torch, torchvision
print(fix.ACTIVE, torchvision.HAS_NMS)
if torchvision.HAS_NMS:
    try:
        torch.ops.torchvision.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
    except fix.MissingTorchvisionOp as err:
        print("raised", "torchvision::nms is unavailable" in str(err))
"""


@pytest.mark.parametrize(("extension", "expected"), [("loadable", "False False"), ("broken", "True True raised True")])
def test_fallback_acts_only_when_the_extension_cannot_load(tmp_path: Path, extension: str, expected: str) -> None:
    """The fallback module from its source folder, in front of a torchvision whose extension loads (it stands down and
    declares nothing) or cannot load (it declares nms with a kernel that raises the clear error)."""
    site = _fake_torchvision(tmp_path / "site", extension)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(FIX_DIR)])}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert " ".join(proc.stdout.split()) == expected


# -- a regular install ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_non_editable_install_runs_a_cell_from_another_folder(tmp_path: Path) -> None:
    """`pip install .` (a built wheel, not the source tree), then one cell from an unrelated folder: every config,
    task template and model config is found through the installed package."""
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(site), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert (site / "adatp_bench" / "conf" / "config.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import adatp_bench; print(adatp_bench.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    )
    assert where.stdout.strip().startswith(str(site)), "the installed copy, not the source tree, must be imported"
    cell = subprocess.run(
        [sys.executable, "-m", "adatp_bench.run", "model=tiny", "method=visionzip", "benchmark=mlvu_dev_synth",
         "limit=2"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )
    assert cell.returncode == 0, cell.stderr[-3000:]
    records = list((elsewhere / "results" / "runs").glob("*/record.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "ok"
