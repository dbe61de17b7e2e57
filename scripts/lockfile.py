"""Read the environment locks (``requirements/{cpu,cuda}.txt``) and compare an environment with one.

Standard library only, so the installer can run it with any Python 3.11; ``check`` runs inside the environment it
checks (``python scripts/lockfile.py check requirements/cpu.txt``) and exits 1 with every difference listed.

A lock line is ``name==version``; the header comment holds ``inputs-sha256``, the digest of what the lock was resolved
from (pyproject's dependencies and ``requirements/constraints.in``), so a stale lock is detected.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "adatp-bench"
TORCHVISION_FIX = "adatp-torchvision-cpu-fix"
#: Written by the installer into the environment: which lock it installed and how torchvision was provided.
INSTALL_RECORD = "adatp-install.json"


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of every pinned distribution."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version or any(c in version for c in "<>=!~; "):
            raise ValueError(f"{path}:{number}: not a `name==version` pin: {raw!r}")
        pins[canonical(name)] = version
    return pins


def lock_inputs_digest(root: Path = ROOT) -> str:
    """sha256 of the lock's inputs: pyproject's dependencies (dev extra included) and ``constraints.in``."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    inputs = {
        "dependencies": sorted(project.get("dependencies", [])),
        "optional": {k: sorted(v) for k, v in sorted(project.get("optional-dependencies", {}).items())},
        "requires-python": project.get("requires-python"),
        "constraints": [
            line.split("#", 1)[0].strip()
            for line in (root / "requirements" / "constraints.in").read_text().splitlines()
            if line.split("#", 1)[0].strip()
        ],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_inputs_digest(path: Path) -> str | None:
    """The ``inputs-sha256`` a lock file's header records."""
    match = re.search(r"^# inputs-sha256: ([0-9a-f]{64})$", Path(path).read_text(), re.M)
    return match.group(1) if match else None


def installed() -> dict[str, str]:
    """``{canonical name: version}`` of every distribution visible to this interpreter."""
    from importlib import metadata

    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def installed_in(python: Path) -> dict[str, str]:
    """:func:`installed` of another interpreter (e.g. a virtual environment being built)."""
    import subprocess

    code = (
        "import json, re; from importlib import metadata; print(json.dumps({re.sub(r'[-_.]+', '-', "
        "d.metadata['Name']).lower(): d.version for d in metadata.distributions()}))"
    )
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def public(version: str) -> str:
    """A version without its local label (``2.13.0+cpu`` → ``2.13.0``)."""
    return version.split("+", 1)[0]


def differences(lock: dict[str, str], have: dict[str, str], extra_allowed: set[str]) -> list[str]:
    """Every way ``have`` differs from ``lock``. torchvision may carry a local label the lock does not (the installer
    prefers a matching ``+cpu`` wheel where one is installable); every other version must match exactly."""
    problems = []
    for name, version in sorted(lock.items()):
        got = have.get(name)
        if got is None:
            problems.append(f"missing: {name}=={version}")
        elif got != version and not (name == "torchvision" and public(got) == public(version)):
            problems.append(f"version: {name} is {got}, the lock says {version}")
    for name in sorted(set(have) - set(lock) - extra_allowed):
        problems.append(f"not in the lock: {name}=={have[name]}")
    return problems


def unmet_requirements() -> list[str]:
    """Requirements (markers evaluated, no extras) of installed distributions that the environment does not satisfy:
    ``pip check`` without its platform-tag complaints. Needs ``packaging`` (part of every lock)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    have = installed()
    problems = []
    for dist in metadata.distributions():
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            got = have.get(canonical(req.name))
            if got is None:
                problems.append(f"{dist.metadata['Name']} requires {req}, which is not installed")
            elif not req.specifier.contains(got, prereleases=True):
                problems.append(f"{dist.metadata['Name']} requires {req}, but {got} is installed")
    return sorted(set(problems))


def check(lock_path: Path) -> list[str]:
    """Every difference between this interpreter's environment and ``lock_path``, plus unmet requirements."""
    extra = {PROJECT}
    record = Path(sys.prefix) / INSTALL_RECORD
    if record.exists() and json.loads(record.read_text()).get("torchvision") == "pypi+fix":
        extra.add(TORCHVISION_FIX)
    return differences(read_lock(lock_path), installed(), extra) + unmet_requirements()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "check":
        sys.exit("usage: python scripts/lockfile.py check requirements/<flavour>.txt")
    found = check(Path(sys.argv[2]))
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        sys.exit(f"{len(found)} difference(s) between this environment ({sys.prefix}) and {sys.argv[2]}")
    print(f"environment matches {sys.argv[2]}")
