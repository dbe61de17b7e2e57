"""Make the PyPI (CUDA-built) torchvision wheel importable on a CPU-only torch.

The torchvision 0.28.0 wheel on PyPI links ``libtorch_cuda.so``. On a ``+cpu`` torch its C extension fails to load,
and ``torchvision/_meta_registrations.py`` then dies with ``operator torchvision::nms does not exist`` — which breaks
``import transformers.image_utils`` and with it lmms-eval (ECOSYSTEM.md §3, fix (a)).

:func:`install` adds a ``sys.meta_path`` finder. The first time ``torchvision`` is imported it tries to load the real
extension; only if that fails does it declare the ``nms``/``qnms`` operator schemas so the pure-Python parts
(``transforms.v2``) import. On a CUDA torch the extension loads and the shim does nothing. It is activated for every
interpreter of the virtual environment by a one-line ``.pth`` file (see ``scripts/install_torchvision_shim.py``) and
never imports torch itself until torchvision is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_DONE = False


def _declare_missing_ops(torchvision_dir: Path) -> None:
    import torch

    try:
        torch.ops.load_library(str(next(torchvision_dir.glob("_C*.so"))))
        return  # the real extension works (CUDA torch): nothing to do
    except (OSError, RuntimeError, StopIteration):
        pass
    try:
        torch.ops.torchvision.nms  # noqa: B018 - already declared by someone else
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    # Keep the library object alive for the life of the process.
    sys.modules[__name__].__dict__["_LIB"] = lib


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        global _DONE
        if fullname != "torchvision" or _DONE:
            return None
        _DONE = True
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.origin:
            _declare_missing_ops(Path(spec.origin).parent)
        return spec


def install() -> None:
    """Register the finder (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
