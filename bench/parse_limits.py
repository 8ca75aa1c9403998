"""Wall time and peak memory of `policyc validate` on hostile or huge input.

Each input runs in its own process so that its peak RSS is its own.
Run: python3 bench/parse_limits.py [MEGABYTES]   (default 10)
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def big_list(megabytes: int) -> str:
    """A kubectl-style List of ConfigMaps ending with one policy (what a user's dump looks like)."""
    parts, size, i = ["apiVersion: v1\nkind: List\nitems:\n"], 0, 0
    while size < megabytes * 1024 * 1024:
        parts.append(f"- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: c{i}}}\n  data: {{k: {'x' * 200}}}\n")
        size += len(parts[-1])
        i += 1
    parts.append("- apiVersion: cilium.io/v2\n  kind: CiliumNetworkPolicy\n  metadata: {name: p, namespace: x}\n"
                 "  spec: {endpointSelector: {}, ingress: [{}]}\n")
    return "".join(parts)


def alias_bomb(levels: int = 10) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def run(name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "policyc.cli", "validate", str(path)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rss = f"{peak / 1024:.0f} MiB" if peak > before else "below an earlier run's peak"
    print(f"{name:14} {len(text) / 1e6:7.2f} MB  exit {proc.returncode}  {seconds:6.2f} s  peak RSS {rss}")


def main(megabytes: int) -> None:
    run("alias-bomb", alias_bomb())
    run("deep-flow", "spec: " + "[" * 100_000 + "]" * 100_000 + "\n")
    run("deep-block", "".join("  " * i + f"k{i}:\n" for i in range(1000)) + "  " * 1000 + "v: 1\n")
    run("big-list", big_list(megabytes))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
