"""ns per packet before and after a datapath change, in one run: the same inputs compiled by an older
policyc (a git ref, default main) and by this checkout, both loaded, every path timed alternately.

Run as root from the repository: PYTHONPATH=. python3 bench/parse_cost.py [--before REF] [--repeat N] [--trials T]

Inputs: examples/shop (dual stack). Paths: shop/frontend -> shop/cart 8080/TCP established (IPv4, IPv6),
a new denied flow (9999/TCP, conntrack miss and the whole policy path), and xdp_node for a world
source (203.0.113.7) to ops/ingress 443/TCP (allowed) and to shop/cart 8080/TCP (denied). Paths only
the new parser has (extension headers, later fragments, neighbour discovery) are timed for "after".
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import ICMPv6ND_NS, IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Ether

from policyc.bpf_runtime.artifact import open_artifact, read_manifest
from policyc.bpf_runtime.bindings import bind, object_maps
from policyc.bpf_runtime.testrun import SKB_CTX_BYTES

ROOT = Path(__file__).resolve().parents[1]
POLICIES, INVENTORY = ROOT / "examples/shop/policies", ROOT / "examples/shop/inventory.yaml"
FRONT4, CART4, INGRESS4, WORLD4, DNS4 = "10.0.1.10", "10.0.2.11", "10.0.1.30", "203.0.113.7", "10.0.1.2"
FRONT6, CART6 = "fd00:10:0:1::a", "fd00:10:0:2::b"


def frame(pkt) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)


BIG_DNS = fragment(IP(src=FRONT4, dst=DNS4, id=77) / UDP(sport=33337, dport=53) / (b"x" * 3000), 1200)
SYN4 = frame(IP(src=FRONT4, dst=CART4) / TCP(sport=33333, dport=8080, flags="S"))
SYN6 = frame(IPv6(src=FRONT6, dst=CART6) / TCP(sport=33333, dport=8080, flags="S"))
PATHS = {  # name: (hook, frame, only the new parser has it)
    "to_pod established IPv4": ("to_pod", SYN4, False),
    "from_pod established IPv4": ("from_pod", SYN4, False),
    "to_pod established IPv6": ("to_pod", SYN6, False),
    "to_pod new, denied IPv4": ("to_pod", frame(IP(src=FRONT4, dst=CART4) / TCP(sport=33334, dport=9999)), False),
    "from_pod new, denied IPv4": ("from_pod", frame(IP(src=FRONT4, dst=CART4) / TCP(sport=33334, dport=9999)), False),
    "xdp_node new, allowed": ("xdp_node", frame(IP(src=WORLD4, dst=INGRESS4) / TCP(sport=33335, dport=443)), False),
    "xdp_node new, denied": ("xdp_node", frame(IP(src=WORLD4, dst=CART4) / TCP(sport=33335, dport=8080)), False),
    "to_pod established IPv6 behind DSTOPTS": (
        "to_pod", frame(IPv6(src=FRONT6, dst=CART6) / IPv6ExtHdrDestOpt() / TCP(sport=33336, dport=8080)), True),
    "to_pod later fragment, established": ("to_pod", frame(BIG_DNS[1]), True),
    "from_pod neighbour solicitation": (
        "from_pod", frame(IPv6(src="fe80::a", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt="fe80::1")), True),
}
SETUP = {  # frames run once first, so the timed frame meets an established connection
    "to_pod established IPv4": [SYN4], "from_pod established IPv4": [SYN4], "to_pod established IPv6": [SYN6],
    "to_pod established IPv6 behind DSTOPTS": [frame(IPv6(src=FRONT6, dst=CART6) / TCP(sport=33336, dport=8080))],
    "to_pod later fragment, established": [frame(BIG_DNS[0])],  # records the ports, opens the flow
}


def compile_with(tree: Path, out: Path) -> None:
    """``tree``'s compile of the inputs; the example's L7 rule as L4 (``--l7 l4-only``) where the tree
    has the option (trees before it had no choice to make)."""
    for extra in (["--l7", "l4-only"], []):
        done = subprocess.run([sys.executable, "-m", "policyc.cli", "compile", str(POLICIES), "--inventory",
                               str(INVENTORY), "--output-dir", str(out), *extra], capture_output=True, text=True,
                              cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
        if done.returncode == 0:
            return
        if "--l7" not in done.stderr:
            break
    raise SystemExit(f"compile in {tree} failed: {done.stderr.strip()}")


def export(ref: str, into: Path) -> None:
    """The policyc package as it is at ``ref``."""
    data = subprocess.run(["git", "archive", ref, "policyc"], check=True, capture_output=True, cwd=ROOT).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


def bind_pod(obj, manifest: dict, hook: str, data: bytes) -> None:
    """A pod hook runs on lo in a test run: lo is bound to the pod at the hook's end (the source for
    from_pod, the destination for to_pod), where the artifact binds pods to interfaces."""
    if hook == "xdp_node" or "interfaces" not in {m["name"] for m in manifest["maps"]}:
        return
    ip = Ether(data).payload
    end = str(ip.src if hook == "from_pod" else ip.dst)
    pod = next((p for p in ((FRONT4, FRONT6), (CART4, CART6), (INGRESS4,), (DNS4,)) if end in p), (FRONT4, FRONT6))
    bind(object_maps(obj), manifest["features"], 1, list(pod))


def ns(obj, hook: str, data: bytes, repeat: int, manifest: dict) -> int:
    bind_pod(obj, manifest, hook, data)
    prog = obj.program(hook)
    ctx = None if hook == "xdp_node" else bytes(SKB_CTX_BYTES)
    return prog.test_run(data, ctx=ctx, repeat=repeat).duration_ns


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--before", default="main")
    args.add_argument("--repeat", type=int, default=1_000_000)
    args.add_argument("--trials", type=int, default=5)
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export(opts.before, tmp / "before")
        compile_with(tmp / "before", tmp / "art-before")
        compile_with(ROOT, tmp / "art-after")
        objs = {"before": open_artifact(tmp / "art-before"), "after": open_artifact(tmp / "art-after")}
        manifests = {"before": read_manifest(tmp / "art-before"), "after": read_manifest(tmp / "art-after")}
        try:
            for name, (hook, _, _) in PATHS.items():
                for which, obj in objs.items():
                    for data in SETUP.get(name, []):
                        ns(obj, hook, data, 1, manifests[which])
            times: dict = {(n, w): [] for n in PATHS for w in objs}
            for _ in range(opts.trials):  # interleaved: both see the same machine load
                for name, (hook, data, new) in PATHS.items():
                    for which, obj in objs.items():
                        if not (new and which == "before"):
                            times[(name, which)].append(ns(obj, hook, data, opts.repeat, manifests[which]))
        finally:
            for obj in objs.values():
                obj.close()
    print(f"| path | before ({opts.before}) ns | after ns | after/before |\n|---|---:|---:|---:|")
    for name, (_, _, new) in PATHS.items():
        after = statistics.median(times[(name, "after")])
        if new:
            print(f"| {name} | – | {after:.0f} | – |")
        else:
            before = statistics.median(times[(name, "before")])
            print(f"| {name} | {before:.0f} | {after:.0f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
