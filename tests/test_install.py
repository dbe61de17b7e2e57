"""The pinned stack: CPU torch stays, torchvision imports on it through the shim, which stands down when the real
extension loads (CUDA torch), and lmms-eval resolves our model through its entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_constraints_pin_cpu_torch() -> None:
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert pins == {"torch": "2.13.0", "torchvision": "0.28.0"}
    assert torch.__version__.split("+")[0] == pins["torch"]


def test_torchvision_and_lmms_eval_import_in_a_fresh_interpreter() -> None:
    """Through the .pth shim alone (nothing imported by hand), as the lmms-eval CLI would start."""
    code = ("import torchvision, torchvision.transforms.v2.functional, lmms_eval.evaluator; "
            "from lmms_eval.models import MODEL_REGISTRY_V2 as r; print(r.resolve('adatp_bench').model_id)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("adatp_bench")


def test_shim_stands_down_when_the_extension_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adatp_bench import _torchvision_shim as shim

    (tmp_path / "_C.so").write_bytes(b"")
    loaded: list[str] = []
    monkeypatch.setattr(torch.ops, "load_library", lambda path: loaded.append(path))

    def no_library(*args: object, **kwargs: object) -> None:
        raise AssertionError("the shim declared operators although the real extension loaded")

    monkeypatch.setattr(torch.library, "Library", no_library)
    shim._declare_missing_ops(tmp_path)
    assert loaded == [str(tmp_path / "_C.so")]


def test_shim_declares_nms_when_the_extension_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adatp_bench import _torchvision_shim as shim

    (tmp_path / "_C.so").write_bytes(b"not a library")
    defined: list[str] = []

    class FakeLibrary:
        def __init__(self, ns: str, kind: str) -> None:
            assert (ns, kind) == ("torchvision", "DEF")

        def define(self, schema: str) -> None:
            defined.append(schema.split("(")[0])

    monkeypatch.setattr(torch.library, "Library", FakeLibrary)
    monkeypatch.setattr(torch.ops, "torchvision", SimpleNamespace(), raising=False)  # no nms registered yet
    shim._declare_missing_ops(tmp_path)
    assert defined == ["nms", "qnms"]
