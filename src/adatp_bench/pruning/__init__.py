"""Training-free visual-token pruning methods behind one interface (see ``base.py``).

Importing this package imports every module in it, which registers every method (one module per method).
``build_method(name, **settings)`` instantiates one.
Method defaults come from ``conf/method/<name>.yaml`` through :func:`adatp_bench.config.method_defaults`.
"""

from __future__ import annotations

import importlib
import pkgutil

from adatp_bench.core.context import SampleContext
from adatp_bench.core.sequence import SequenceState
from adatp_bench.pruning.base import METHODS, PruningMethod, build_method, method_names, register_method

for _module in pkgutil.iter_modules(__path__):  # shared helpers (base, probe, ...) import harmlessly
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS",
    "PruningMethod",
    "SampleContext",
    "SequenceState",
    "build_method",
    "method_names",
    "register_method",
]
