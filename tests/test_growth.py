"""Growth guards: the basic operations of every command, counted at two sizes of each input dimension.

Nothing is timed.  The operations are function calls, counted by cProfile (Python functions and the
builtins they call: ``len``, ``set.add``, ``subnet_of``, z3's Python API, ``Solver.check``, ...), so a
loop over pairs shows up as a function whose count grows with the square of the input.  Each
dimension of bench/gen_dims.py is built at a size n and at GROWTH × n; a function whose count grows by
more than LIMIT = GROWTH ** 1.6 (linear is GROWTH, n log n a little more, quadratic GROWTH ** 2; the
margin absorbs an index that narrows differently at the two sizes) fails, named with both counts.

A count below PER_ITEM calls per unit of n is no cost worth guarding, so smaller counts are raised to
that floor before the ratio is taken: a path first taken at the larger size (an index chosen because
it now narrows more) grows from zero, and fails only past LIMIT * PER_ITEM / GROWTH calls per unit.

Two outputs grow faster than their input by definition and are left out: the policy map of pods and
policies grown together (each pod may admit a share of all identities: bench/scale.py's cluster-*
compile), and the matrix's rows (one per pair: the class tables are judged instead; in a cluster with
no policy, ``open``, the tables are every pair too).  The connectivity graph (``paths``, ``graph``) is
judged where its size follows the input, in GRAPHED dimensions: a place per prefix, and a class per
app of a cluster with no policy or with an allow-all beside a deny (whose pairs it holds as uniform
sides, not an edge each), and distinct ports or port ranges (each edge's label a sweep over sorted
spans); grown with policies its edges are pairs of classes that rules name.
"""
from __future__ import annotations

import cProfile
import gc
import sys
from collections import Counter
from pathlib import Path

import pytest

from policyc.bpf_runtime.endpoints import catalog_of, plan_set
from policyc.bpf_runtime.state import State
from policyc.compiler import connectivity
from policyc.compiler.artifact import SOURCES, endpoints_json, rules_json, sources_json
from policyc.compiler.frontend import load_policies
from policyc.compiler.inventory import load_inventory
from policyc.compiler.ir import Protocol, label_values
from policyc.compiler.lower import lower
from policyc.compiler.mapdata import build_maps
from policyc.compiler.reachability import tables
from policyc.compiler.verify.checks import run_checks
from policyc.compiler.verify.diff import semantic_diff

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gen_dims  # noqa: E402

GROWTH = 8
LIMIT = GROWTH ** 1.6
PER_ITEM = 8
SIZES = {"cidr": 100, "pods": 60, "open": 40, "allowall": 40, "policies": 60, "rules": 50, "ports": 50, "portranges": 50, "namespaces": 20,
         "labels": 100, "entities": 40, "nodes": 20, "cluster-k8s": 64, "cluster-cilium": 64}
OUTPUT_BOUND = {("cluster-k8s", "compile"), ("cluster-cilium", "compile"), ("open", "matrix"), ("allowall", "matrix")}
GRAPHED = {"cidr", "open", "allowall", "ports", "portranges"}


def _json(path: Path, value) -> None:
    import json
    path.write_text(json.dumps(value))


def commands(d: Path, graph: bool) -> dict:
    """Each command's work as a function of nothing: parse, then what the CLI command would do."""
    policy, _ = load_policies([d / "policies.yaml"])
    changed, _ = load_policies([d / "policies-changed.yaml"])
    inventory = load_inventory([d / "inventory.yaml"])

    def compile_():
        dp = lower(policy, inventory)
        build_maps(dp, {})
        art = d / "artifact"  # what a relabel reads on the node: no clang needed for that
        art.mkdir(exist_ok=True)
        _json(art / SOURCES, sources_json([str(d / "policies.yaml")], [str(d / "inventory.yaml")], policy.cluster))
        _json(art / "endpoints.json", endpoints_json(dp, inventory))
        _json(art / "rules.json", rules_json(dp))
        (art / "features.json").write_text(__import__("json").dumps(dp.features.as_dict()))
        return len(dp.policy)

    def relabel():
        import json
        state = State("growth", str(d / "artifact"), "", "", "tcx", 0.0)
        cat = catalog_of(state, json.loads((d / "artifact" / "features.json").read_text()))
        endpoint = (d / "relabel").read_text()
        plan = plan_set(cat, cat.pods[endpoint], "relabel", endpoint, None, {"app": "relabelled"}, None)
        return len(plan.entries)

    def matrix():
        return sum(len(allowed) for _, _, _, allowed in tables(policy, list(inventory.pods), [(8080, Protocol.TCP)]))

    out = {"compile": compile_, "check": lambda: len(run_checks(policy, inventory)),
           "diff": lambda: len(semantic_diff(policy, changed, inventory).changes), "matrix": matrix, "relabel": relabel}
    if graph:
        out["graph"] = lambda: connectivity.build(policy, inventory).graph.number_of_edges()
    return out


def _name(code) -> str:
    if isinstance(code, str):
        return code
    return f"{Path(code.co_filename).name}:{code.co_firstlineno}({code.co_name})"


def counts(dimension: str, n: int, tmp: Path) -> dict[str, Counter]:
    """Per command, how often each function was called (gen_dims case of size ``n``)."""
    d = tmp / f"{dimension}-{n}"
    case = gen_dims.case(dimension, n)
    gen_dims.write(case, d)
    (d / "relabel").write_text(case.relabel)
    out = {}
    for name, run in commands(d, dimension in GRAPHED).items():
        label_values.cache_clear()  # counts must not depend on what ran before
        gc.collect()
        gc.disable()  # nor on when the collector frees earlier runs' objects
        profile = cProfile.Profile()
        try:
            profile.runcall(run)
        finally:
            gc.enable()
        out[name] = Counter({_name(e.code): e.callcount for e in profile.getstats()})
    return out


def superlinear(small: Counter, large: Counter, size: int) -> list[str]:
    """Functions whose call count grew by more than LIMIT from size to GROWTH * size, largest first."""
    floor = PER_ITEM * size
    grew = [(large[f] / max(small[f], floor), f) for f in large if large[f] > LIMIT * max(small[f], floor)]
    return [f"{f}: {small[f]} -> {large[f]} calls (x{ratio:.0f})" for ratio, f in sorted(grew, reverse=True)]


@pytest.mark.parametrize("dimension", sorted(SIZES))
def test_every_command_grows_at_most_n_log_n(dimension, tmp_path):
    n = SIZES[dimension]
    small, large = counts(dimension, n, tmp_path), counts(dimension, GROWTH * n, tmp_path)
    failures = {cmd: bad for cmd in small if (dimension, cmd) not in OUTPUT_BOUND
                for bad in [superlinear(small[cmd], large[cmd], n)] if bad}
    assert not failures, f"{dimension} x{GROWTH}: " + "; ".join(
        f"{cmd}: " + ", ".join(bad[:5]) for cmd, bad in failures.items())


@pytest.mark.parametrize("dimension", ["cluster-k8s", "cluster-cilium"])
def test_check_over_an_inventory_builds_its_solvers_once(dimension, tmp_path):
    """`check --inventory` asks each question in a scope of one solver (checks.Context.query): the solvers
    that take in a flow's well-formedness (encode.new_flow) are as many at GROWTH × n as at n (issue 15:
    a fresh one per question was most of the cost of its thousands of questions)."""
    made = []
    for n in (SIZES[dimension], GROWTH * SIZES[dimension]):
        d = gen_dims.write(gen_dims.case(dimension, n), tmp_path / f"{dimension}-{n}")
        policy, _ = load_policies([d / "policies.yaml"])
        profile = cProfile.Profile()
        profile.runcall(run_checks, policy, load_inventory([d / "inventory.yaml"]))
        made.append(sum(e.callcount for e in profile.getstats()
                        if not isinstance(e.code, str) and _name(e.code).endswith("(new_flow)")))
    assert made[0] == made[1] <= 3, made
