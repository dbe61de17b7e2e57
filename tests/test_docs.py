"""The repository is self-contained: no citations of reference files users do not have, no dead relative links.

Every fact a user needs lives in the repository (docs/, docstrings) or is cited from its public source (paper, upstream
repository at a commit, issue thread; see docs/references.md). These tests fail on

- a citation of an internal reference file (``<NAME>.md`` for the reference set's file names, or a bare
  ``<NAME> §N``), a path into the shared reference folder, or a machine path such as ``/work/...``, in any text file the
  repository tracks (plus new, not yet added files that git does not ignore);
- a relative markdown link ``[text](path)`` in README.md or docs/ that points to no file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()

_NAMES = "METHODS|FLOPS|TABLES|ECOSYSTEM|SLURM|PEERS"
#: What must not appear: reference-file citations, bare "NAME §N" section citations, paths into the shared reference
#: folder, and machine paths. Case-sensitive on purpose: docs/flops.md or docs/slurm.md are fine.
FORBIDDEN = re.compile(
    rf"\b(?:{_NAMES})\.md\b"
    rf"|\b(?:{_NAMES}) §"
    r"|shared/reference"
    r"|\.\./shared\b"
    r"|(?<![\w.~-])/work/"
)

#: ``[text](target)`` and ``[text](target "title")``; images (``![alt](src)``) are links too.
MARKDOWN_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def repo_files() -> list[Path]:
    """Files git tracks plus untracked files it does not ignore, that exist in the working tree."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    paths = sorted({ROOT / name for name in out.split("\0") if name})
    return [p for p in paths if p.is_file() and not p.is_symlink()]


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file (a NUL byte in the first 8 KiB, or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def forbidden_hits(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line with a forbidden citation or path."""
    return [(no, line.strip()) for no, line in enumerate(text.splitlines(), 1) if FORBIDDEN.search(line)]


def markdown_links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link outside fenced code blocks and inline code."""
    links, fenced = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        prose = re.sub(r"`[^`]*`", "", line)
        links.extend((no, m.group(1)) for m in MARKDOWN_LINK.finditer(prose))
    return links


def is_relative(target: str) -> bool:
    """A link to a file of this repository (not a URL, not a mail address, not a pure #anchor)."""
    return not (target.startswith("#") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"))


def docs_markdown() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_patterns_catch_what_they_should() -> None:
    flops, methods, slurm = "FLOPS", "METHODS", "SLURM"  # file names built here so this file cites none of them
    assert forbidden_hits(f"see {flops}.md §1.2") and forbidden_hits(f"({methods}.md §14.6)")
    assert forbidden_hits(f"{flops} §1.4") and forbidden_hits(f"in /work/shared/reference/{slurm}.md")
    assert forbidden_hits("../shared/x") and forbidden_hits("path /work/main/x")
    assert not forbidden_hits("docs/flops.md §1 and docs/slurm.md, docs/methods.md §5.5")
    assert not forbidden_hits("the METHODS registry; SLURM job arrays")
    links = markdown_links("[a](flops.md#1-x) [b](https://x.org) `[c](nope.md)` ![i](img.png) [d](#top)")
    assert [t for _, t in links] == ["flops.md#1-x", "https://x.org", "img.png", "#top"]
    assert [t for _, t in links if is_relative(t)] == ["flops.md#1-x", "img.png"]


def test_no_reference_file_citations_or_machine_paths() -> None:
    hits = []
    for path in repo_files():
        if path.resolve() == THIS_FILE:
            continue
        text = read_text(path)
        if text is None:
            continue
        hits += [f"{path.relative_to(ROOT)}:{no}: {line[:160]}" for no, line in forbidden_hits(text)]
    assert not hits, (
        "citations of files users do not have (cite docs/ or the public source instead, see docs/references.md):\n"
        + "\n".join(hits)
    )


@pytest.mark.parametrize("path", docs_markdown(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_markdown_links_resolve(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} does not exist")
    dead = []
    for no, target in markdown_links(path.read_text(encoding="utf-8")):
        if not is_relative(target):
            continue
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (ROOT / file_part.lstrip("/")) if file_part.startswith("/") else (path.parent / file_part)
        if not resolved.exists():
            dead.append(f"{path.relative_to(ROOT)}:{no}: {target}")
    assert not dead, "relative links to missing files:\n" + "\n".join(dead)
