"""Load, atomic replace and relabel times of the runtime (policyc load / endpoint relabel), no interfaces attached.

Run as root: PYTHONPATH=. python3 bench/runtime_times.py [RELABELS]
Prints per conformance case: fresh load, replace, and relabel (map updates only / whole command
without interpreter start-up) as median and max over RELABELS relabels alternating between a new
label set and the pod's own.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from policyc.bpf_runtime.endpoints import change
from policyc.bpf_runtime.loaded import manifest_of
from policyc.bpf_runtime.loader import Request, load, unload
from policyc.bpf_runtime.state import read_state
from policyc.cli import main as cli

CONFORMANCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "conformance"
CASES = ("L12-knp-pod-peer-is-own-namespace", "L20-knp-endport-range", "L25-cnp-deny-beats-allow", "L08-cidr-except")
NAME = "pcrbench"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def bench(case: Path, relabels: int, tmp: Path) -> str:
    out = tmp / case.name
    policies = case / "policies"
    args = ["compile", *( [str(policies)] if policies.is_dir() else []), "--inventory", str(CONFORMANCE / "inventory.yaml"),
            "--output-dir", str(out)]
    if cli(args) != 0:
        raise SystemExit(f"compile of {case.name} failed")
    try:
        fresh = load(Request(out, NAME)).seconds
        again = load(Request(out, NAME)).seconds
        maps, total = [], []
        for n in range(relabels):
            state = read_state(NAME)
            labels = {"pod": "bench-new"} if n % 2 == 0 else {"pod": "b"}
            start = time.perf_counter()
            result = change(state, manifest_of(state)["features"], "relabel", "x/b", None, labels)
            total.append(time.perf_counter() - start)
            maps.append(result.seconds_maps)
        return (f"| {case.name} | {ms(fresh)} | {ms(again)} | {ms(statistics.median(maps))} / {ms(max(maps))} | "
                f"{ms(statistics.median(total))} / {ms(max(total))} |")
    finally:
        unload(NAME)


def main(relabels: int) -> None:
    print("| case | load ms | replace ms | relabel maps ms (median / max) | relabel total ms (median / max) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            print(bench(CONFORMANCE / name, relabels, Path(tmp)), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
