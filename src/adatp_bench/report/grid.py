"""Expand an experiment's sweep grid into cells, each with its run id — without running anything.

A table is defined by its experiment (``conf/experiment/<name>.yaml``: ``hydra.sweeper.params``), not by whatever
happens to be in ``results/``. Each cell is composed with Hydra exactly as the sweep composes it, its run id computed
the same way ``run.py`` does, and its record looked up by that id. Missing and failed cells are therefore visible as
such and never filled from elsewhere (dora's grid → XP signature pattern).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from adatp_bench.config import compose, group_options, hydra_session, method_settings, require_option, search_dirs
from adatp_bench.errors import DatasetError
from adatp_bench.identity import cell_run_id, cell_settings_id
from adatp_bench.results import ResultRecord, RunDir, atomic_write_text, load_records

#: Grids at least this large are cached (composing costs ≈ 0.1 s per cell; small grids are cheaper to recompose).
CACHE_MIN_CELLS = 50


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: its overrides, composed config, settings id and run id.

    ``run_id`` includes the data the cell scores (``identity.py``); it is None when the data cannot be identified on
    this machine (a real benchmark's annotation file is absent), and the cell's record is then looked up by
    ``settings_id`` (:func:`find_record`).
    """

    overrides: tuple[str, ...]
    config: DictConfig
    settings_id: str
    run_id: str | None

    @property
    def key(self) -> str:
        """The id cells are de-duplicated by."""
        return self.run_id or f"settings:{self.settings_id}"

    @property
    def model(self) -> str:
        return str(self.config.model.name)

    @property
    def method(self) -> str:
        return str(self.config.method.name)

    @property
    def budget(self) -> str:
        return str(self.config.budget.label)

    @property
    def benchmark(self) -> str:
        return str(self.config.benchmark.name)

    def method_settings(self) -> dict:
        return method_settings(self.config.method)


def _expand(key: str, value: str, overrides: list[str]) -> list[str]:
    """Values of one sweep parameter, parsed by Hydra's own override parser (lists, ranges, glob over the group's
    options, ``hydra.searchpath`` folders in ``overrides`` included)."""
    override = OverridesParser.create().parse_override(f"{key}={value}")
    if not override.is_sweep_override():
        return [str(override.value())]
    sweep = override.value()
    if isinstance(sweep, Glob):
        return sweep.filter(group_options(key, overrides))
    return list(override.sweep_string_iterator())


def experiment_axes(experiment: str, extra_overrides: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """The fixed overrides of an experiment and its axes (each a list of ``key=value`` overrides), as Hydra's basic
    sweeper builds them: the experiment's ``hydra.sweeper.params`` first, then ``extra_overrides``, a later value of a
    key replacing an earlier one (``method=fastv`` on the command line narrows the experiment's method axis)."""
    parsed = OverridesParser.create().parse_overrides(list(extra_overrides or []))
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    require_option("experiment", experiment, plain)
    root = compose([f"experiment={experiment}", *plain], return_hydra_config=True)
    params = OmegaConf.to_container(root.hydra.sweeper.params) or {}
    axes: dict[str, list[str]] = {}
    for key, value in params.items():
        axes[key.lstrip("+~")] = [f"{key}={v}" for v in _expand(key.lstrip("+"), str(value), plain)]
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            value = override.input_line.partition("=")[2]
            axes[key.lstrip("+~")] = [f"{key}={v}" for v in _expand(key.lstrip("+"), value, plain)]
        else:
            axes[key.lstrip("+~")] = [override.input_line]
    return [f"experiment={experiment}"], list(axes.values())


def _cache_path(combos: list[tuple[str, ...]]) -> Path:
    """Cache file for these combinations: keyed by every config file they can read (the packaged tree and any
    ``hydra.searchpath`` folder), the overrides, the working directory and the code that computes run ids. Lives in
    ``$ADATP_CACHE_DIR`` (default ``~/.cache/adatp_bench``)."""
    import inspect

    from adatp_bench import identity

    digest = hashlib.sha1(inspect.getsource(identity).encode())
    for root in search_dirs(combos[0] if combos else ()):
        for path in sorted(root.rglob("*.yaml")):
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    digest.update(json.dumps([list(c) for c in combos]).encode() + os.getcwd().encode())
    root = Path(os.environ.get("ADATP_CACHE_DIR", Path.home() / ".cache" / "adatp_bench"))
    return root / f"grid-{digest.hexdigest()[:16]}.json"


def compose_cells(combos: list[tuple[str, ...]], desc: str = "grid") -> list[Cell]:
    """Compose each override combination and compute its ids; cells with equal ids are merged.

    Hydra's compose costs ≈ 0.1 s per cell, so a large grid's composed configs are cached (keyed by the contents of the
    config tree, the overrides and the working directory: any config change recomposes). Ids are computed afresh
    every time, because they include the data, which may change without any config changing.
    """
    cache = _cache_path(combos)
    if len(combos) >= CACHE_MIN_CELLS and cache.exists():
        rows = json.loads(cache.read_text())
        configs = [(tuple(r["overrides"]), OmegaConf.create(r["config"])) for r in rows]
    else:
        with hydra_session():
            configs = [(tuple(c), compose(c)) for c in tqdm(combos, desc=desc, disable=len(combos) < 50, leave=False)]
        if len(combos) >= CACHE_MIN_CELLS:
            rows = [{"overrides": list(o), "config": OmegaConf.to_container(c, resolve=True)} for o, c in configs]
            atomic_write_text(cache, json.dumps(rows))
    cells: dict[str, Cell] = {}
    for overrides, cfg in configs:
        try:
            rid: str | None = cell_run_id(cfg)
        except DatasetError:  # real data absent here: found by its settings id instead
            rid = None
        cell = Cell(overrides=overrides, config=cfg, settings_id=cell_settings_id(cfg), run_id=rid)
        cells.setdefault(cell.key, cell)
    return list(cells.values())


def find_record(cell: Cell, results_dir: Path, index: dict[str, list[ResultRecord]] | None = None) -> RecordMatch:
    """The record of ``cell``: by run id where its data is here, else the one record with its settings id.

    Args:
        index: records by settings id (:func:`records_by_settings`), built once for a whole table.
    """
    if cell.run_id is not None:
        return RecordMatch(RunDir(results_dir, cell.run_id).record(), "run id")
    candidates = (index if index is not None else records_by_settings(results_dir)).get(cell.settings_id, [])
    if len(candidates) == 1:
        return RecordMatch(candidates[0], "settings id (data not present here)")
    if candidates:
        return RecordMatch(None, f"ambiguous: {len(candidates)} records with these settings scored different data")
    return RecordMatch(None, "settings id (data not present here)")


@dataclass(frozen=True)
class RecordMatch:
    """A cell's record (or None) and how it was found."""

    record: ResultRecord | None
    how: str


def records_by_settings(results_dir: Path) -> dict[str, list[ResultRecord]]:
    """Every record under ``results_dir`` grouped by settings id."""
    index: dict[str, list[ResultRecord]] = {}
    for record in load_records(results_dir):
        if record.settings_id:
            index.setdefault(record.settings_id, []).append(record)
    return index


def experiment_cells(experiment: str, extra_overrides: list[str] | None = None) -> list[Cell]:
    """Every cell of ``experiment`` (plus ``extra_overrides``), de-duplicated by run id, in grid order."""
    fixed, axes = experiment_axes(experiment, extra_overrides)
    combos = [(*fixed, *combo) for combo in itertools.product(*axes)]
    return compose_cells(combos, desc=f"grid {experiment}")


def axis_representatives(experiment: str, extra_overrides: list[str] | None = None) -> list[Cell]:
    """One cell per value of every axis (the other axes at their first value): enough to check what a grid needs."""
    fixed, axes = experiment_axes(experiment, extra_overrides)
    firsts = [axis[0] for axis in axes]
    combos = {(*fixed, *firsts[:i], value, *firsts[i + 1 :]) for i, axis in enumerate(axes) for value in axis}
    return compose_cells(sorted(combos), desc=f"axes {experiment}")
