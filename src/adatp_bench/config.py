"""The one way configs are read: Hydra's compose API over the config tree shipped in the package.

The tree lives in ``adatp_bench/conf`` (the repository's top-level ``conf`` is a link to it), so a non-editable
``pip install .`` finds every config from any working directory. The runner (``@hydra.main``), the lmms-eval plugin
path, the report grid, the FLOPs table and the preflight all compose through :func:`compose`, so a setting means the
same everywhere. Add your own groups or experiments with ``hydra.searchpath=[file:///path/to/conf]``.

This module also registers the ``${cwd:}`` resolver used by ``conf/paths``: the process's working directory. It
replaces ``${hydra:runtime.cwd}``, which does not resolve while the sweeper computes ``hydra.sweep.dir`` nor in configs
composed outside a Hydra run (reports, preflight).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from adatp_bench.errors import ConfigError

CONF_MODULE = "adatp_bench.conf"
#: ``@hydra.main(config_path=...)`` form of the packaged tree.
CONF_PATH = f"pkg://{CONF_MODULE}"

#: Keys of a method config that are not arguments of its class.
NOT_SETTINGS = frozenset({"name", "search_space"})

if not OmegaConf.has_resolver("cwd"):
    OmegaConf.register_new_resolver("cwd", os.getcwd)


def conf_dir() -> Path:
    """The packaged config tree as a folder (a real directory in editable and wheel installs alike)."""
    path = Path(str(resources.files(CONF_MODULE)))
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"the packaged config tree is incomplete: {path / 'config.yaml'} is missing")
    return path


def group_options(group: str, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Names of the options of a config group, e.g. ``group_options("method")``; ``overrides`` may add
    ``hydra.searchpath`` entries, whose options count too."""
    from hydra.core.global_hydra import GlobalHydra

    with hydra_session():
        loader = GlobalHydra.instance().config_loader()
        names = loader.get_group_options(group, config_name="config", overrides=list(overrides))
    return sorted(set(names))


def search_dirs(overrides: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """Every folder configs are read from: the packaged tree and the ``file://`` entries of ``hydra.searchpath``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    dirs = [conf_dir()]
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group == "hydra.searchpath":
            entries = override.value()
            for entry in entries if isinstance(entries, list) else [entries]:
                if str(entry).startswith("file://"):
                    dirs.append(Path(str(entry)[len("file://") :]))
    return dirs


def require_option(group: str, name: str, overrides: list[str] | tuple[str, ...] = ()) -> None:
    """Raise :class:`ConfigError` naming the valid options when ``conf/<group>/<name>.yaml`` does not exist."""
    options = group_options(group, overrides)
    if name not in options:
        raise ConfigError(f"unknown {group} {name!r}; valid: {', '.join(options)}")


@contextlib.contextmanager
def hydra_session() -> Iterator[None]:
    """Hydra initialised on the packaged tree for the duration of the block (compose many configs in one session),
    unless the caller already runs inside a Hydra app, whose initialisation is then used as is."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_module(CONF_MODULE, version_base="1.3"):
        yield


def compose(overrides: list[str] | tuple[str, ...] = (), return_hydra_config: bool = False) -> DictConfig:
    """The full config of one cell, composed exactly as ``python -m adatp_bench.run <overrides>`` composes it."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException

    with hydra_session():
        try:
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)
        except HydraException as err:
            raise ConfigError(f"cannot compose the config with overrides {list(overrides)}: {err}") from err


def method_settings(method: DictConfig) -> dict[str, Any]:
    """A composed ``method`` node as keyword arguments of its class: resolved, without ``name`` and without the
    ``search_space`` it declares for ``make tune`` (neither is a hyperparameter)."""
    data = OmegaConf.to_container(method, resolve=True)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items() if k not in NOT_SETTINGS}


@functools.cache
def _method_defaults(name: str, budget: str) -> tuple[tuple[str, Any], ...]:
    require_option("method", name)
    require_option("budget", budget)
    cfg = compose([f"method={name}", f"budget={budget}"])
    return tuple(method_settings(cfg.method).items())


def method_defaults(name: str, budget: str = "r25") -> dict[str, Any]:
    """Hyperparameters of ``conf/method/<name>.yaml`` at ``conf/budget/<budget>.yaml`` (presets included)."""
    import copy

    return copy.deepcopy(dict(_method_defaults(name, budget)))
