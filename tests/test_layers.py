"""The package's import rule (README "Layout"): layers only import downwards and no module imports
itself back through others. Checked on the source (every import statement, including the ones inside
functions and under TYPE_CHECKING), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tempoflow"

# Bottom to top. A module belongs to the longest entry that is a prefix of its dotted name.
LAYERS: list[tuple[str, ...]] = [
    ("tempoflow.errors", "tempoflow.files", "tempoflow.configio", "tempoflow.weights", "tempoflow.viewing",
     "tempoflow.configs", "tempoflow.devices"),  # generic pieces
    ("tempoflow.flows", "tempoflow.text", "tempoflow.data", "tempoflow.codecs", "tempoflow.report"),
    ("tempoflow.nets", "tempoflow.metrics"),
    ("tempoflow.methods",),
    ("tempoflow.train",),
    ("tempoflow.config",),  # the experiment's schema: composes every section
    ("tempoflow.resume",),  # what --resume may change
    ("tempoflow.runs", "tempoflow.train.run"),  # the composition root (train.run: its old name, an alias)
    ("tempoflow.evaluate",),
    ("tempoflow.cli", "tempoflow.demo", "tempoflow.api", "tempoflow"),  # entry points and the public API
]


def layer_of(module: str) -> int:
    """The layer of the longest entry of ``LAYERS`` that is ``module`` or a package above it."""
    if module == "tempoflow":
        return len(LAYERS) - 1
    matches = [(len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes
               if p != "tempoflow" and (module == p or module.startswith(p + "."))]
    if not matches:
        raise AssertionError(f"{module} is in no layer of LAYERS: place it")
    return max(matches)[1]


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_edges(found: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the tempoflow modules it imports (resolved to the longest existing module name)."""
    edges: dict[str, set[str]] = {}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                candidates = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in found:
                    candidate = candidate.rpartition(".")[0]
                if candidate.startswith("tempoflow") and candidate != name:
                    targets.add(candidate)
        edges[name] = targets
    return edges


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs if layer_of(b) > layer_of(a))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_upward_import():
    assert upward(import_edges(modules())) == []


def test_no_import_cycle():
    assert cycles(import_edges(modules())) == []


@pytest.mark.parametrize("edges, expect_up, expect_cycle", [
    # the codec that loaded its run through the training module (the old ten-file circle, in small)
    ({"tempoflow.codecs.autoencoder": {"tempoflow.runs"}, "tempoflow.runs": {"tempoflow.codecs.autoencoder"}},
     ["tempoflow.codecs.autoencoder -> tempoflow.runs"], [["tempoflow.codecs.autoencoder", "tempoflow.runs"]]),
    # two evaluation modules importing each other: same layer, still a cycle
    ({"tempoflow.evaluate.a": {"tempoflow.evaluate.b"}, "tempoflow.evaluate.b": {"tempoflow.evaluate.a"}},
     [], [["tempoflow.evaluate.a", "tempoflow.evaluate.b"]]),
    ({"tempoflow.methods.align": {"tempoflow.evaluate.alignment"}, "tempoflow.evaluate.alignment": set()},
     ["tempoflow.methods.align -> tempoflow.evaluate.alignment"], []),
])
def test_the_rule_catches_what_it_forbids(edges, expect_up, expect_cycle):
    assert upward(edges) == expect_up and cycles(edges) == expect_cycle
