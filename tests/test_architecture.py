"""The shape of the code, measured from its imports: one-way data flow, methods that never reach into the model, and
modules small enough to do one thing. docs/architecture.md draws the package graph; this test keeps it truthful."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "adatp_bench"
PACKAGE = "adatp_bench"
MAX_LINES = 600
#: Model internals no pruning method may name (it reads the model only through its SampleContext).
MODEL_ATTRIBUTES = {
    "llm", "runner", "vision_tower", "vision_model", "multi_modal_projector", "language_model", "rotary_emb",
    "lm_head", "embed_tokens", "self_attn", "q_proj", "k_proj", "v_proj", "layer_norm1", "input_layernorm",
    "image_newline", "vision_hidden_states",
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: Every module but the config tree's package marker (data, not code).
MODULES = {_module_name(p): p for p in SRC.rglob("*.py") if _module_name(p) != f"{PACKAGE}.conf"}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """adatp_bench modules imported anywhere in ``path`` (function-level imports too; TYPE_CHECKING blocks aside)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if not name.startswith(PACKAGE):
                continue
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            found.add(name)
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _component(module: str) -> str:
    """``adatp_bench.models.adapter`` → ``models``; top-level modules are their own component."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        if module == PACKAGE:
            continue
        graph.setdefault(_component(module), set()).update(
            _component(d) for d in deps if d != PACKAGE and _component(d) != _component(module)
        )
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_graph_is_acyclic() -> None:
    assert _cycle(_package_graph()) is None, " → ".join(_cycle(_package_graph()) or [])


def test_the_module_graph_is_acyclic() -> None:
    assert _cycle(GRAPH) is None, " → ".join(_cycle(GRAPH) or [])


@pytest.mark.parametrize(
    ("component", "forbidden"),
    [
        ("core", {"models", "pruning", "eval", "report", "run", "flops", "loggers", "results"}),
        ("pruning", {"models", "eval", "report", "run", "loggers", "results"}),
        ("models", {"eval", "report", "run", "loggers"}),
        ("eval", {"report", "run", "loggers"}),
        ("run", {"report", "loggers"}),
        ("results", {"models", "pruning", "eval", "report", "run"}),
    ],
)
def test_data_flows_one_way(component: str, forbidden: set[str]) -> None:
    assert not (_package_graph().get(component, set()) & forbidden)


def test_methods_name_no_model_attribute() -> None:
    """Every pruning module reads the model only through its SampleContext (``ctx.vision_attention()``, ...)."""
    offenders = []
    for path in sorted((SRC / "pruning").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in MODEL_ATTRIBUTES:
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_no_module_is_oversized() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_architecture_doc_draws_the_package_graph_truthfully() -> None:
    """docs/architecture.md lists, per package, what it imports; that list is the measured graph."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- package-graph -->\n```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no <!-- package-graph --> block"
    drawn: dict[str, set[str]] = {}
    for line in block.group(1).splitlines():
        if "→" not in line:
            continue
        name, _, deps = line.partition("→")
        drawn[name.strip()] = {d.strip() for d in deps.split(",") if d.strip() and d.strip() != "(nothing)"}
    measured = _package_graph()
    assert drawn == {k: v for k, v in measured.items()}, _diff(drawn, measured)


def _diff(drawn: dict[str, set[str]], measured: dict[str, set[str]]) -> str:
    lines = []
    for name in sorted(set(drawn) | set(measured)):
        if drawn.get(name) != measured.get(name):
            drawn_deps, measured_deps = sorted(drawn.get(name, set())), sorted(measured.get(name, set()))
            lines.append(f"{name}: drawn {drawn_deps}, measured {measured_deps}")
    return "\n".join(lines)
