"""Seconds for `check`, `diff` (one port changed) and `verify` (31 invariants) as the policy set grows.

N namespaces, each with one CNP of 10 ingress rules (10·N rules in all); the diff adds one port to one
rule of one namespace. Run: PYTHONPATH=. python3 bench/verify_rules_scale.py [N ...]   (default 10 100 1000)
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from policyc.compiler.frontend import load_policies
from policyc.compiler.verify.checks import run_checks
from policyc.compiler.verify.diff import semantic_diff
from policyc.compiler.verify.invariants import prove
from policyc.compiler.verify.spec import load_spec


def policies(n: int, extra_port: bool = False) -> str:
    docs = []
    for i in range(n):
        rules = "\n".join(
            f"    - fromEndpoints: [{{matchLabels: {{app: c{j}}}}}]\n"
            f"      toPorts: [{{ports: [{{port: \"{8000 + j}\", protocol: TCP}}"
            + (", {port: \"9999\", protocol: TCP}" if extra_port and i == 0 and j == 0 else "") + "]}]"
            for j in range(10))
        docs.append(f"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: ns{i}}}\n"
                    f"spec:\n  endpointSelector: {{}}\n  ingress:\n{rules}\n  egress:\n    - toEndpoints: [{{}}]\n")
    return "---\n".join(docs)


def spec(n: int) -> str:
    lines = ["invariants:"]
    for i in range(0, 100, 10):
        a, b = i % n, (i + 1) % n
        lines += [f"  - isolation: {{between: [namespace=ns{a}, namespace=ns{b}]}}",
                  f"  - mustAllow: {{from: 'namespace=ns{a},app=c3', to: namespace=ns{a}, ports: [8003/TCP]}}",
                  f"  - worldOnly: {{to: namespace=ns{a}, ports: [8000/TCP]}}"]
    lines.append("  - defaultDeny: {namespaces: [" + ",".join(f"ns{i}" for i in range(n)) + "]}")
    return "\n".join(lines) + "\n"


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(sizes: list[int]) -> None:
    print(f"{'rules':>7} {'check s':>8} {'diff s':>7} {'verify s':>9}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            old, new, sp = (Path(tmp) / name for name in ("old.yaml", "new.yaml", "spec.yaml"))
            old.write_text(policies(n))
            new.write_text(policies(n, extra_port=True))
            sp.write_text(spec(n))
            a, b = load_policies([old])[0], load_policies([new])[0]
            t_check, _ = timed(lambda: run_checks(a))
            t_diff, result = timed(lambda: semantic_diff(a, b))
            changes = result.changes
            assert [c.ports for c in changes] == [("9999/TCP",)], changes
            t_verify, outcomes = timed(lambda: prove(a, load_spec(str(sp))))
            assert len(outcomes) == 31
            print(f"{len(a.rules):>7} {t_check:>8.2f} {t_diff:>7.2f} {t_verify:>9.2f}")


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [10, 100, 1000])
