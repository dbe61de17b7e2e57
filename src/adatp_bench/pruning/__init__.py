"""Training-free visual-token pruning methods behind one interface (see ``base.py``).

Importing this package imports every module in it, which registers every method (one module per method).
``build_method(name, **settings)`` instantiates one;
``load_method_config(name)`` reads its defaults from ``conf/method/<name>.yaml``.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from adatp_bench.pruning.base import (
    METHODS,
    PruningMethod,
    SampleContext,
    SequenceState,
    build_method,
    method_names,
    register_method,
)

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
for _module in pkgutil.iter_modules(__path__):  # shared helpers (base, probe, ...) import harmlessly
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS",
    "PruningMethod",
    "SampleContext",
    "SequenceState",
    "build_method",
    "load_method_config",
    "method_names",
    "register_method",
]


def load_method_config(name: str, budget: str = "r25") -> dict[str, Any]:
    """Hyperparameters of ``conf/method/<name>.yaml`` resolved against ``conf/budget/<budget>.yaml``, without the
    ``name`` key. Empty when conf/ is not shipped (the dataclass defaults then apply)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / "method" / f"{name}.yaml"
    if not path.exists():
        return {}
    root = OmegaConf.create(
        {"budget": OmegaConf.load(CONF_DIR / "budget" / f"{budget}.yaml"), "m": _compose(path)}
    )
    data = OmegaConf.to_container(root.m, resolve=True)
    return {k: v for k, v in data.items() if k not in {"name", "defaults"} and not str(k).startswith("_")}


def _compose(path: Path):
    """A method file merged over the files its ``defaults:`` list names (presets extend ``adatp.yaml`` this way)."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(path)
    defaults = list(node.pop("defaults", []) or [])
    merged = OmegaConf.create()
    if "_self_" not in defaults:
        defaults.append("_self_")
    for entry in defaults:
        merged = OmegaConf.merge(merged, node if entry == "_self_" else _compose(path.parent / f"{entry}.yaml"))
    return merged
