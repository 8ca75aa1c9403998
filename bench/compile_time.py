"""Compile, load and relabel times against the number of policies and endpoints.

Clusters come from bench/gen_cluster.py (both flavours).  Compile is timed
in-process per phase (reading and translating the inputs, lowering, map
encoding, C rendering, clang, writing) and end to end as `policyc compile`.
Load is `policyc load` with one pod's veth attached (netns ``pcb-ld``); relabel
is `policyc endpoint relabel` of one pod, to an identity that exists and to a
new one: the command's own wall time and its in-process split (total, and
the map updates alone).  Run as root:

    PYTHONPATH=. python3 bench/compile_time.py [--grid 100:0,100:1000,300:0,1000:0,1000:1000] [--json FILE]

A grid item is PODS:POLICIES; 0 policies means the generator's base set
(default-deny, DNS and one policy per app: 60 at 100 pods, 600 at 1000).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_cluster  # noqa: E402

from policyc import __version__  # noqa: E402
from policyc.compiler.artifact import OBJECT, SOURCE  # noqa: E402
from policyc.compiler.codegen import build_object, render  # noqa: E402
from policyc.compiler.frontend import load_policies  # noqa: E402
from policyc.compiler.inventory import load_inventory  # noqa: E402
from policyc.compiler.ir import label_values  # noqa: E402
from policyc.compiler.lower import lower  # noqa: E402
from policyc.compiler.mapdata import build_maps, encode_maps_bin  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
NETNS, NAME = "pcb-ld", "pcb-ld"
SIZES = {"ipcache": 65536, "ipcache_hosts": 65536, "endpoints": 16384, "policy": 1 << 20}


def policyc(*args: str, netns: str | None = None) -> tuple[str, float]:
    cmd = [sys.executable, "-m", "policyc.cli", *args]
    if netns:
        cmd = ["nsenter", f"--net=/var/run/netns/{netns}", *cmd]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if res.returncode:
        raise SystemExit(f"{' '.join(args)}: {res.stderr.strip()[-800:]}")
    return res.stdout, time.perf_counter() - start


def phases(cluster: Path, out: Path) -> dict:
    """The compile path step by step, as compile_artifact runs it, from a clean cache and heap."""
    label_values.cache_clear()
    gc.collect()
    t = [time.perf_counter()]
    policy, _ = load_policies([cluster / "policies"])
    inv = load_inventory([cluster / "inventory.yaml"])
    t.append(time.perf_counter())
    dp = lower(policy, inv)
    t.append(time.perf_counter())
    specs, _ = build_maps(dp, SIZES)
    encode_maps_bin(specs)
    t.append(time.perf_counter())
    source = render(dp, specs, __version__, [str(cluster / "policies")])
    t.append(time.perf_counter())
    out.mkdir(parents=True, exist_ok=True)
    (out / SOURCE).write_text(source)
    build_object(out.resolve(), SOURCE, OBJECT)
    t.append(time.perf_counter())
    names = ("inputs_s", "lower_s", "maps_s", "render_s", "clang_s")
    return {"rules": len(policy.rules), "policy_entries": len(dp.policy),
            **{n: round(b - a, 3) for n, a, b in zip(names, t, t[1:])}}


def relabels(artifact: Path) -> dict:
    """Load with one pod attached, relabel a pod twice (known identity, new identity), unload."""
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "add", "pcbld1", "type", "veth", "peer", "name", "pcbld0"],
                       check=True)
        _, load_s = policyc("load", str(artifact), "--name", NAME, "--attach", "ns-0000/web-0-0=pcbld1",
                            netns=NETNS)
        try:
            out = {"load_s": round(load_s, 3)}
            for label, extra in (("known", ["--label", "app=api-1", "--label", "tier=backend"]),
                                 ("new", ["--label", "app=web-0", "--label", "tier=frontend",
                                          "--label", "version=v2"])):
                text, wall = policyc("endpoint", "relabel", NAME, "ns-0000/web-0-1", *extra, "--format", "json")
                res = json.loads(text)
                out[f"relabel_{label}"] = {"wall_s": round(wall, 3), "total_ms": round(res["seconds_total"] * 1e3, 2),
                                           "maps_ms": round(res["seconds_maps"] * 1e3, 3),
                                           "entries": res["policy_entries"]}
            return out
        finally:
            policyc("unload", NAME)
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)


def measure(pods: int, policies: int, flavour: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="pcb-ct-") as tmp:
        cluster = Path(tmp) / "cluster"
        gen_cluster.generate(cluster, pods, policies or None, flavour)
        count = sum(text.count("\nkind: ") + text.startswith("kind: ")
                    for text in (f.read_text() for f in (cluster / "policies").iterdir()))
        row = {"pods": pods, "policies": count, "flavour": flavour, **phases(cluster, Path(tmp) / "phases")}
        sizes = [f"--map-size={k}={v}" for k, v in SIZES.items()]
        _, row["cli_compile_s"] = policyc("compile", str(cluster / "policies"), "--inventory",
                                          str(cluster / "inventory.yaml"), "--output-dir", str(Path(tmp) / "art"), *sizes)
        row["cli_compile_s"] = round(row["cli_compile_s"], 3)
        row.update(relabels(Path(tmp) / "art"))
    print(row, file=sys.stderr)
    return row


def table(rows: list[dict]) -> str:
    out = ["| flavour | pods | policies | rules | policy entries | inputs s | lower s | maps s | render s | clang s | "
           "`policyc compile` s | `policyc load` s | relabel known: wall s / total ms / maps ms | "
           "relabel new: wall s / total ms / maps ms (entries) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        k, n = r["relabel_known"], r["relabel_new"]
        out.append(f"| {r['flavour']} | {r['pods']} | {r['policies']} | {r['rules']} | {r['policy_entries']} | "
                   f"{r['inputs_s']} | {r['lower_s']} | {r['maps_s']} | {r['render_s']} | {r['clang_s']} | "
                   f"{r['cli_compile_s']} | {r['load_s']} | {k['wall_s']} / {k['total_ms']} / {k['maps_ms']} | "
                   f"{n['wall_s']} / {n['total_ms']} / {n['maps_ms']} ({n['entries']}) |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="100:0,100:1000,300:0,1000:0,1000:1000")
    ap.add_argument("--flavours", default="k8s,cilium")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    grid = [tuple(map(int, item.split(":"))) for item in args.grid.split(",")]
    rows = [measure(p, n, f) for f in args.flavours.split(",") for p, n in grid]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
