"""Attack paths and blast radius at scale: `paths`, `blast-radius`, `verify` (noPath, maxBlastRadius), `graph`.

For each size bench/gen_cluster.py writes a cluster (plus its four nodes, so that nodes take part and
pod classes split by node); every command is a fresh subprocess, timed on the wall clock with its peak
RSS (``verify_scale.measure``).  The floor is `policyc query` of one flow on the same inputs: it reads
the same policies and inventory, so a command's time over the floor is what its graph costs.  A second,
in-process pass splits one run into loading, building the graph and each question.

    python3 bench/paths_scale.py --sizes 1000,5000,10000 --flavours k8s,cilium --out /tmp/paths-scale \\
        --json docs/bench-paths.json
    python3 bench/paths_scale.py --report docs/bench-paths.json
    python3 bench/paths_scale.py --sizes 500,1000 --flavours open --repeat 1 --limit 300   # few policies
    python3 bench/paths_scale.py --sizes 1000 --flavours open --compare /tmp/before   # another checkout beside
    python3 bench/paths_scale.py --sizes 1000 --flavours allowall --compare /tmp/before   # allow-all + deny
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_cluster  # noqa: E402
from verify_scale import REPO, measure  # noqa: E402

NODES = 4  # gen_cluster places pods on node-0 .. node-3
SRC, DST = "ns-0000/web-0-0", "ns-{k:04d}/db-3-0"  # a database of the last full namespace
SPEC = """\
invariants:
- name: internet-never-reaches-the-last-database
  noPath: {from: {entity: world}, to: {pod: %s}, trustNodes: true}
- name: no-pod-reaches-more-than-ten
  maxBlastRadius: {from: '*', pods: 10, trustNodes: true}
"""


@dataclass(frozen=True)
class Result:
    flavour: str
    pods: int
    task: str
    seconds: float
    peak_mb: float
    status: str
    load: float
    cpu: float | None = None  # user + system seconds (older result files lack it)


# The "open" flavour: the cilium cluster's pods with one policy that selects none of them, a cluster
# that has not adopted policies yet: every class reaches every class (docs/benchmarks.md, F16).
NO_POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: selects-nothing, namespace: nothing-here}
spec:
  endpointSelector: {matchLabels: {app: none}}
  ingress:
  - fromEndpoints: [{}]
"""


# The "allowall" flavour: the same pods under Cilium's advice for deny policies, an allow-all beside the
# deny in one clusterwide policy: every egress is enforced, by a rule that names every class.
ALLOW_ALL = """\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-metadata-server}
spec:
  endpointSelector: {}
  egress:
  - toEntities: [all]
  egressDeny:
  - toCIDR: [169.254.169.254/32]
"""
FEW_POLICIES = {"open": NO_POLICY, "allowall": ALLOW_ALL}


def cluster(out: Path, pods: int, flavour: str) -> tuple[Path, str]:
    """The generated cluster (reused when present) with its nodes; returns (directory, DST)."""
    d = out / f"{flavour}-{pods}"
    if not (d / "inventory.yaml").exists():
        gen_cluster.generate(d, pods, pods, "cilium" if flavour in FEW_POLICIES else flavour, seed=1)
        if flavour in FEW_POLICIES:
            shutil.rmtree(d / "policies")
            (d / "policies").mkdir()
            (d / "policies" / "policy.yaml").write_text(FEW_POLICIES[flavour])
    nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{i}"},
              "status": {"addresses": [{"type": "InternalIP", "address": f"172.18.0.{i + 2}"}]}}
             for i in range(NODES)]
    (d / "nodes.yaml").write_text(yaml.safe_dump(gen_cluster.kube_list(nodes)))
    dst = DST.format(k=gen_cluster.layout(pods, 10, 2).namespaces - 2)
    (d / "spec.yaml").write_text(SPEC % dst)
    return d, dst


def tasks(d: Path, dst: str, python: str) -> dict[str, list[str]]:
    base = [python, "-m", "policyc.cli"]
    inputs = [str(d / "policies"), "--inventory", str(d / "inventory.yaml"), "--inventory", str(d / "nodes.yaml")]
    return {
        "query (floor)": base + ["query"] + inputs + ["--from", SRC, "--to", dst, "--port", "8080/TCP"],
        "paths": base + ["paths", "world", dst] + inputs + ["-o", "json"],
        "paths -k 5 --trust-nodes": base + ["paths", "world", dst] + inputs + ["-k", "5", "--trust-nodes", "-o", "json"],
        "blast-radius": base + ["blast-radius", SRC] + inputs + ["-o", "json"],
        "verify noPath + maxBlastRadius '*'": base + ["verify"] + inputs + ["--spec", str(d / "spec.yaml"),
                                                                            "--format", "json"],
        "graph -o json": base + ["graph"] + inputs + ["-o", "json"],
    }


def in_process(d: Path, dst: str) -> dict[str, float]:
    """Seconds of each stage of one run: load, build the graph, then each question on it (run in a child
    of its own, ``--stages``, so that this process stays small: a child's peak RSS starts at its parent's)."""
    import gc

    from policyc.compiler.connectivity import Kind, Target, build
    from policyc.compiler.frontend import load_policies
    from policyc.compiler.inventory import load_inventory
    from policyc.compiler.verify.multihop import reach_counts, reach_counts_within
    from policyc.compiler.verify.spec import WORLD

    marks, t = {}, time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        marks[name] = round(now - t, 3)
        t = now

    policy = load_policies([d / "policies"])[0]
    inventory = load_inventory([d / "inventory.yaml", d / "nodes.yaml"])
    mark("load policies and inventory")
    gc.freeze()  # as the commands do (graphcli.load_graph)
    world = Target("world", networks=WORLD["world"])
    conn = build(policy, inventory, targets=[world])
    mark("build graph")
    marks["places"], marks["edges"], marks["open pairs"] = (len(conn.places), conn.graph.number_of_edges(),
                                                            conn.open.count())
    src, target = {conn.place_of(inventory.find(SRC))}, {conn.place_of(inventory.find(dst))}
    conn.chains(conn.places_of(world), target)
    mark("shortest chain world -> db")
    conn.chains(conn.places_of(world), target, 5, avoid=frozenset(conn.nodes()))
    mark("5 shortest chains, trusting nodes")
    conn.reach(src)
    mark("blast radius of one pod")
    reach_counts(conn, None, frozenset(conn.nodes()))
    mark("blast radius of every class (condensation)")
    reach_counts_within(conn, None, frozenset(conn.nodes()), 3)
    mark("blast radius of every class within 3 hops (one pass)")
    if len(conn.places) <= 2000:  # what maxHops cost before: a search per class (minutes at 10,000 pods)
        for c in (p.id for p in conn.places if p.kind in (Kind.PODS, Kind.NODE)):
            conn.reach({c}, 3, None, frozenset(conn.nodes()))
        mark("blast radius of every class within 3 hops (a search each)")
    return marks


def best(cmd: list[str], limit: float, out: Path, env: dict, repeat: int) -> tuple[float, float, str, float, float]:
    """The fastest of ``repeat`` runs (the machine is shared: the minimum is the least disturbed), with
    its peak RSS, status, CPU seconds and the load average when the first started."""
    load = os.getloadavg()[0]
    runs = [measure(cmd, limit, out / "stdout", out / "stderr", env) for _ in range(repeat)]
    secs, peak, status, cpu = min(runs)
    return secs, peak, status, load, cpu


def run(sizes: list[int], flavours: list[str], out: Path, limit: float, repeat: int) -> dict:
    python = sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    results, stages = [], {}
    for flavour in flavours:
        for pods in sizes:
            d, dst = cluster(out, pods, flavour)
            for task, cmd in tasks(d, dst, python).items():
                secs, peak, status, load, cpu = best(cmd, limit, out, env, repeat)
                if task.startswith(("paths", "verify")) and status == "exit 1":
                    status = "ok"  # a chain exists / an invariant fails: the answer, not an error
                results.append(Result(flavour, pods, task, round(secs, 2), round(peak, 1), status, round(load, 1),
                                      round(cpu, 2)))
                print(results[-1], flush=True)
            child = [python, __file__, "--stages", str(d), dst]
            marks = [json.loads(subprocess.run(child, env=env, capture_output=True, text=True, check=True).stdout)
                     for _ in range(repeat)]
            stages[f"{flavour}-{pods}"] = {k: min(m[k] for m in marks) for k in marks[0]}
            print(stages[f"{flavour}-{pods}"], flush=True)
    return {"runs": [asdict(r) for r in results], "stages": stages, "repeat": repeat}


def report(data: dict) -> str:
    """Markdown tables: wall time / peak RSS per command, and each command over the floor."""
    runs = [Result(**r) for r in data["runs"]]
    tasks_ = list(dict.fromkeys(r.task for r in runs))
    keys = list(dict.fromkeys((r.flavour, r.pods) for r in runs))
    cell = {(r.flavour, r.pods, r.task): r for r in runs}
    lines = ["| flavour / pods | " + " | ".join(tasks_) + " |", "|---|" + "---|" * len(tasks_)]
    for f, p in keys:
        lines.append(f"| {f} / {p} | " + " | ".join(
            f"{cell[f, p, t].seconds:.2f} s" + (f" (CPU {cell[f, p, t].cpu:.2f} s)" if cell[f, p, t].cpu is not None else "")
            + f" / {cell[f, p, t].peak_mb:.0f} MiB"
            + ("" if cell[f, p, t].status == "ok" else f" ({cell[f, p, t].status})") for t in tasks_) + " |")
    lines += ["", "| flavour / pods | " + " | ".join(t for t in tasks_[1:]) + " |", "|---|" + "---|" * (len(tasks_) - 1)]
    for f, p in keys:
        floor = cell[f, p, tasks_[0]].seconds
        lines.append(f"| {f} / {p} | " + " | ".join(
            f"+{cell[f, p, t].seconds - floor:.2f} s ({cell[f, p, t].seconds / floor:.2f}×)" for t in tasks_[1:]) + " |")
    lines.append("")
    for key, marks in data["stages"].items():
        size = f" ({marks.pop('places')} places, {marks.pop('edges')} ruled edges, {marks.pop('open pairs', 0)} open pairs)"
        lines.append(f"- {key}{size}: " + "; ".join(f"{k} {v:.2f} s" for k, v in marks.items()))
    return "\n".join(lines)


COMPARED = ("query (floor)", "paths", "blast-radius")


def compare(tree: Path, sizes: list[int], flavours: list[str], out: Path, limit: float,
            tasks_: tuple[str, ...] = COMPARED) -> list[dict]:
    """The floor, `paths` and `blast-radius` (or ``tasks_``: ``--compare-all`` times every command) of another checkout (``tree``: e.g. ``git archive`` of an
    older branch) and of this one, alternated in one run.  The children start in ``out``: ``python -m``
    puts the working directory first on the path, which would shadow ``PYTHONPATH``."""
    rows = []
    for flavour in flavours:
        for pods in sizes:
            d, dst = cluster(out, pods, flavour)
            for task, cmd in tasks(d, dst, sys.executable).items():
                if task not in tasks_:
                    continue
                for name, code in (("other", tree), ("this", REPO)):
                    env = {**os.environ, "PYTHONPATH": str(code)}
                    secs, peak, status, cpu = measure(cmd, limit, out / "stdout", out / "stderr", env, cwd=out)
                    rows.append({"flavour": flavour, "pods": pods, "task": task, "code": name, "seconds": round(secs, 2),
                                 "cpu": round(cpu, 2), "peak_mb": round(peak), "status": status})
                    print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--flavours", default="k8s,cilium")
    ap.add_argument("--out", type=Path, default=Path("/tmp/paths-scale"))
    ap.add_argument("--limit", type=float, default=600)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--repeat", type=int, default=3, help="runs per command; the fastest counts (default 3)")
    ap.add_argument("--report", type=Path, help="print the tables of a results file and stop")
    ap.add_argument("--compare", type=Path, metavar="TREE", help="time another checkout beside this one and stop")
    ap.add_argument("--compare-all", action="store_true", help="with --compare: every command, not only paths and "
                                                                 "blast-radius")
    ap.add_argument("--stages", nargs=2, metavar=("DIR", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stages:
        print(json.dumps(in_process(Path(args.stages[0]), args.stages[1])))
        return 0
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.compare:
        rows = compare(args.compare, [int(s) for s in args.sizes.split(",")], args.flavours.split(","), args.out,
                       args.limit, tuple(tasks(Path(), "", "")) if args.compare_all else COMPARED)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1) + "\n")
        return 0
    data = run([int(s) for s in args.sizes.split(",")], args.flavours.split(","), args.out, args.limit, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
