"""Training-free visual-token pruning methods behind one interface (see ``base.py``).

Importing this package registers every method. ``build_method(name, **settings)`` instantiates one;
``load_method_config(name)`` reads its defaults from ``conf/method/<name>.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adatp_bench.pruning import fastv, vanilla  # noqa: F401  (registration side effect)
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
        {"budget": OmegaConf.load(CONF_DIR / "budget" / f"{budget}.yaml"), "m": OmegaConf.load(path)}
    )
    data = OmegaConf.to_container(root.m, resolve=True)
    return {k: v for k, v in data.items() if k not in {"name", "defaults"} and not str(k).startswith("_")}
