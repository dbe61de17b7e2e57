"""Let the CUDA-built PyPI torchvision wheel import beside a CPU-only torch — and do nothing anywhere else.

PyPI's torchvision wheel links ``libtorch_cuda.so``. Beside a ``+cpu`` torch its C++ extension (``torchvision/_C.so``)
cannot load, and ``torchvision/_meta_registrations.py`` then fails at import with ``operator torchvision::nms does not
exist``. transformers imports torchvision for its image and video processors, so lmms-eval fails with it.

``make install`` installs this tiny distribution (``adatp-torchvision-cpu-fix``) only on CPU machines where no CPU
torchvision wheel matching torch is available; ``pip uninstall adatp-torchvision-cpu-fix`` removes it completely (its
``.pth`` file and this module are in its RECORD).

The ``.pth`` line only registers an import finder; nothing is imported at start-up. The first ``import torchvision``
tries to load the real extension. If it loads (CUDA torch, or a matching CPU wheel), the finder stands down and
changes nothing. Only if it cannot load does the finder:

1. declare the two operator schemas ``_meta_registrations.py`` needs (``torchvision::nms``, ``torchvision::qnms``), with
   CPU kernels that raise :class:`MissingTorchvisionOp`; and
2. make torchvision's own guard (``torchvision.extension._assert_has_ops``, called by ``torchvision.ops.*`` and the
   ``torchvision.io`` decoders) raise the same error, which says what is missing and how to get it.

The pure-Python parts (``transforms.v2``, which transformers' video processor uses) then work as usual.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

#: True once the real extension failed to load and this module stepped in; None until torchvision is imported.
ACTIVE: bool | None = None
#: Why the real extension did not load (the loader's error), when ACTIVE.
REASON: str | None = None
_LIBRARY: Any = None


class MissingTorchvisionOp(RuntimeError):
    """A torchvision C++ operator was called, but the installed wheel's extension cannot load on this torch."""


def _message(what: str) -> str:
    from importlib import metadata

    import torch

    tv = metadata.version("torchvision")
    base = tv.split("+")[0]
    return (
        f"{what}: torchvision {tv} is a CUDA build whose C++ extension cannot load beside the "
        f"CPU-only torch {torch.__version__} ({REASON}). Only torchvision's pure-Python parts work here. For its "
        f"C++ operators install the matching CPU wheel: pip install 'torchvision=={base}+cpu' --index-url "
        "https://download.pytorch.org/whl/cpu && pip uninstall -y adatp-torchvision-cpu-fix"
    )


def _raise_for(op: str) -> Any:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        raise MissingTorchvisionOp(_message(f"the operator torchvision::{op} is unavailable"))

    return kernel


def _assert_has_ops() -> None:
    raise MissingTorchvisionOp(_message("torchvision's C++ operators (torchvision.ops, .io) are unavailable"))


def _extension_loads(package_dir: Path) -> bool:
    """Try the real extension; record why it failed."""
    global REASON
    import torch

    candidates = sorted(package_dir.glob("_C*.so"))
    if not candidates:
        REASON = f"no _C extension in {package_dir}"
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, RuntimeError) as err:
        REASON = str(err).splitlines()[0]
        return False
    return True


def _declare_missing_ops() -> None:
    global _LIBRARY
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for op, schema in (
        ("nms", "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"),
        ("qnms", "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"),
    ):
        lib.define(schema)
        lib.impl(op, _raise_for(op), "CPU")
    _LIBRARY = lib  # the definitions live as long as the library object


class _GuardedExtensionLoader(importlib.abc.Loader):
    """Loads ``torchvision.extension`` as usual, then swaps in :func:`_assert_has_ops` when the ops are missing."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        if not module._has_ops():
            module._assert_has_ops = _assert_has_ops


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        global ACTIVE
        if fullname == "torchvision" and ACTIVE is None:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or not spec.submodule_search_locations:
                return None
            ACTIVE = not _extension_loads(Path(next(iter(spec.submodule_search_locations))))
            if ACTIVE:
                _declare_missing_ops()
            return spec
        if fullname == "torchvision.extension" and ACTIVE:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _GuardedExtensionLoader(spec.loader)
            return spec
        return None


def install() -> None:
    """Register the finder (idempotent). Called by ``adatp_torchvision_cpu_fix.pth`` at interpreter start-up."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
