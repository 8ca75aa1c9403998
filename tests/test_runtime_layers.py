"""bpf_runtime's modules import downwards only: primitives below operations, no cycle (docs/runtime.md).

Imports inside functions count too: a lazy import hides a cycle from Python, not from a reader.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "policyc" / "bpf_runtime"


def runtime_imports() -> nx.DiGraph:
    """module -> bpf_runtime modules it imports, anywhere in its body."""
    graph = nx.DiGraph()
    for path in PACKAGE.glob("*.py"):
        graph.add_node(path.stem)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
                graph.add_edges_from((path.stem, t) for t in targets if (PACKAGE / f"{t}.py").exists())
    return graph


def test_no_import_cycle():
    cycles = list(nx.simple_cycles(runtime_imports()))
    assert not cycles, f"import cycles in bpf_runtime: {cycles}"


def test_primitives_do_not_import_operations():
    operations = {"loader", "replace", "endpoints", "status", "observe", "metrics", "conntrack"}
    primitives = {"errors", "libbpf", "bpffs", "state", "attach", "artifact", "request", "loaded", "objects",
                  "hostaddrs", "hooks", "privileges"}
    graph = runtime_imports()
    wrong = sorted((p, o) for p in primitives for o in graph.successors(p) if o in operations)
    assert not wrong, wrong


def test_one_error_helper():
    """Every module raises through errors.error; none builds its own PolicycError(Diagnostic...)."""
    own = sorted(p.name for p in PACKAGE.glob("*.py")
                 if p.name != "errors.py" and ("Diagnostic.simple(" in p.read_text() or "def _error" in p.read_text()))
    assert not own, own


def _policyc_imports(path: Path) -> set[str]:
    """The policyc modules ``path`` imports (absolute names), lazy imports included."""
    parts = path.relative_to(PACKAGE.parents[1]).with_suffix("").parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(parts[:-node.level]) if node.level else []
            out.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("policyc")}


def test_the_agent_is_a_front_door_above_the_runtime():
    """CLI and agent -> operations -> primitives: the runtime imports neither front door, the agent not the
    CLI, and the CNI plugin nothing but the agent's client (it starts on every pod start)."""
    policyc = PACKAGE.parent
    for path in PACKAGE.glob("*.py"):
        assert not {m for m in _policyc_imports(path) if m.startswith(("policyc.agent", "policyc.commands"))}, path
    for path in (policyc / "agent").glob("*.py"):
        assert not {m for m in _policyc_imports(path) if m.startswith("policyc.commands")}, path
    assert _policyc_imports(policyc / "cni.py") == {"policyc.agent.client"}
    assert _policyc_imports(policyc / "agent" / "client.py") == set()
