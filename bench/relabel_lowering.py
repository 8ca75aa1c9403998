"""The lowering of a runtime relabel, in process: what a resident agent computes for a pod that takes a
label set no pod holds (or one another pod holds), without the maps, the socket or the kernel.

    python3 bench/gen_cluster.py /tmp/rl/cluster --pods 1000 --policies 1000
    policyc compile /tmp/rl/cluster/policies --inventory /tmp/rl/cluster/inventory.yaml --output-dir /tmp/rl/art
    PYTHONPATH=. python3 bench/relabel_lowering.py /tmp/rl/cluster /tmp/rl/art [--new 20]

Run it with PYTHONPATH at two trees, one after the other, to compare them (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_bench import relabel_pair  # noqa: E402
from policyc.bpf_runtime.endpoints import Extra, catalog_of, named_ports, plan_set  # noqa: E402
from policyc.bpf_runtime.state import State, manifest_sha256  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cluster", type=Path)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--known", type=int, default=100)
    parser.add_argument("--new", type=int, default=20)
    args = parser.parse_args()
    art = args.artifact.resolve()
    state = State("bench", str(art), manifest_sha256(art), "/nonexistent", "tcx", 0.0)
    cat = catalog_of(state, json.loads((art / "manifest.json").read_text())["features"])
    _, ns, held, other = relabel_pair(args.cluster, art)  # as agent_bench, then to new label sets
    target = f"{ns}/bench-target"

    def change(op: str, spec: dict, labels: dict | None = None, ips: list[str] | None = None) -> float:
        start = time.perf_counter()
        plan = plan_set(cat, cat.pods.get(target), op, target, ips, labels or spec["labels"], spec["service_account"],
                        Extra(), ports=named_ports(spec["ports"]))
        cat.apply(plan.record)
        return time.perf_counter() - start

    change("add", held, ips=["10.98.0.1"])
    known = sorted(change("relabel", other if i % 2 == 0 else held) for i in range(args.known))
    new = sorted(change("relabel", other, {**other["labels"], "bench": f"n{i}"}) for i in range(args.new))
    print(f"relabel lowering p50 ms: to a held label set {known[len(known) // 2] * 1000:.2f}, "
          f"to a new one {new[len(new) // 2] * 1000:.2f} ({len(cat.src.policy.rules)} rules, {len(cat.pods)} pods)")


if __name__ == "__main__":
    main()
