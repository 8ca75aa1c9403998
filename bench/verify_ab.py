"""CPU seconds of `policyc check` and `diff` on generated clusters, two source trees alternately.

    python3 bench/gen_cluster.py --pods 1000 --policies 1000 --changed /tmp/c1000
    python3 bench/verify_ab.py --tree main=/path/to/main --tree change=. /tmp/c1000 [...]

On a shared machine the wall time of one run says little; a change's cost is the ratio of two trees
measured in one run, alternately, each task's CPU time (user + sys of the child, from ``wait4``) the
best of ``--repeat`` runs.  Each tree runs its own code (``PYTHONPATH``) on the same inputs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys


def cpu_seconds(tree: str, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": tree}
    proc = subprocess.Popen([sys.executable, "-m", "policyc.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"{tree}: policyc {' '.join(args)} failed ({os.waitstatus_to_exitcode(status)})")
    return usage.ru_utime + usage.ru_stime


def tasks(cluster: str) -> dict[str, list[str]]:
    inv = ["--inventory", f"{cluster}/inventory.yaml"]
    check = ["check", f"{cluster}/policies", "--format", "json", "--fail-on", "never"]
    diff = ["diff", f"{cluster}/policies", f"{cluster}/policies-changed", "--format", "json"]
    return {"check": check, "check --inventory": check + inv, "diff": diff, "diff --inventory": diff + inv}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clusters", nargs="+", help="directories written by gen_cluster.py --changed")
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=DIR",
                        help="a source tree to measure (give two)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    names = list(trees)
    for cluster in args.clusters:
        for task, argv in tasks(cluster).items():
            best = {n: min(cpu_seconds(trees[n], argv) for _ in range(args.repeat)) for n in names}
            cells = "  ".join(f"{n} {best[n]:7.2f} s" for n in names)
            ratio = best[names[-1]] / best[names[0]]
            print(f"{os.path.basename(cluster.rstrip('/')):<14} {task:<18} {cells}  ratio {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
