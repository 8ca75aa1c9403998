"""CPU time of reading a cluster's inputs (YAML to positioned documents, `source.load_documents`):
the policies directory and the inventory of a `gen_cluster.py` output, each read --rounds times in
this process, fastest and slowest round shown. Reading is what every command pays before it starts
(issue 15: check and diff at 10,000 pods).

Before and after a change, the same script with another tree first on the path:

    PYTHONPATH=/path/to/old/tree python3 bench/read_inputs.py /tmp/yaml-bench
    PYTHONPATH=$PWD python3 bench/read_inputs.py /tmp/yaml-bench
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from policyc.compiler.source import load_documents


def read_times(paths: list[str], rounds: int) -> tuple[list[float], int]:
    """CPU seconds of each round of reading ``paths``, and how many documents they hold."""
    times, count = [], 0
    for _ in range(rounds):
        start = time.process_time()
        count = len(load_documents(paths))
        times.append(time.process_time() - start)
    return times, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cluster", type=Path, help="a gen_cluster.py output directory")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name, path in (("policies", args.cluster / "policies"), ("inventory", args.cluster / "inventory.yaml")):
        times, count = read_times([str(path)], args.rounds)
        print(f"{name}: {min(times):.2f}-{max(times):.2f} s CPU over {args.rounds} rounds ({count} documents)")


if __name__ == "__main__":
    main()
