"""ns per packet before and after a datapath change, in one run: the same inputs compiled by an older
policyc (a git ref, default main) and by this checkout, both loaded, every path timed alternately.

Run as root from the repository: PYTHONPATH=. python3 bench/parse_cost.py [--before REF] [--repeat N] [--trials T]

Inputs: examples/shop (dual stack). Paths: shop/frontend -> shop/cart 8080/TCP established (IPv4, IPv6:
an ACK after a full handshake through both pods' hooks, so the entry is answered, in ct_tcp), a new
denied flow (9999/TCP, conntrack miss and the whole policy path), and xdp_node for a world
source (203.0.113.7) to ops/ingress 443/TCP (allowed) and to shop/cart 8080/TCP (denied). Paths only
the new parser has (extension headers, later fragments, neighbour discovery) are timed for "after".
to_pod runs with the ingress_ifindex a node gives it: the source pod's veth, or the uplink.
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
from policyc.bpf_runtime.testrun import skb_ctx

ROOT = Path(__file__).resolve().parents[1]
POLICIES, INVENTORY = ROOT / "examples/shop/policies", ROOT / "examples/shop/inventory.yaml"
FRONT4, CART4, INGRESS4, WORLD4, DNS4 = "10.0.1.10", "10.0.2.11", "10.0.1.30", "203.0.113.7", "10.0.1.2"
FRONT6, CART6 = "fd00:10:0:1::a", "fd00:10:0:2::b"


def frame(pkt) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)


def tcp(src: str, dst: str, sport: int, dport: int, flags: str, *between) -> bytes:
    """A TCP segment ``src`` -> ``dst``; ``between``: extension headers after an IPv6 header."""
    ip = IPv6(src=src, dst=dst) if ":" in dst else IP(src=src, dst=dst)
    for header in between:
        ip = ip / header
    return frame(ip / TCP(sport=sport, dport=dport, flags=flags))


def handshake(src: str, dst: str, sport: int, dport: int) -> list[tuple[str, bytes]]:
    """(hook, frame) of a connection ``src`` -> ``dst`` up to the responder's first segment after the
    handshake, through both ends' hooks: their entries are answered (ct_tcp), as an established flow's."""
    out = []
    for there_flags, back_flags in (("S", "SA"), ("A", "A")):
        there, back = tcp(src, dst, sport, dport, there_flags), tcp(dst, src, dport, sport, back_flags)
        out += [("from_pod", there), ("to_pod", there), ("from_pod", back), ("to_pod", back)]
    return out


BIG_DNS = fragment(IP(src=FRONT4, dst=DNS4, id=77) / UDP(sport=33337, dport=53) / (b"x" * 3000), 1200)
ACK4 = tcp(FRONT4, CART4, 33333, 8080, "A")
ACK6 = tcp(FRONT6, CART6, 33333, 8080, "A")
PATHS = {  # name: (hook, frame, only the new parser has it)
    "to_pod established IPv4": ("to_pod", ACK4, False),
    "from_pod established IPv4": ("from_pod", ACK4, False),
    "to_pod established IPv6": ("to_pod", ACK6, False),
    "to_pod new, denied IPv4": ("to_pod", frame(IP(src=FRONT4, dst=CART4) / TCP(sport=33334, dport=9999)), False),
    "from_pod new, denied IPv4": ("from_pod", frame(IP(src=FRONT4, dst=CART4) / TCP(sport=33334, dport=9999)), False),
    "xdp_node new, allowed": ("xdp_node", frame(IP(src=WORLD4, dst=INGRESS4) / TCP(sport=33335, dport=443)), False),
    "xdp_node new, denied": ("xdp_node", frame(IP(src=WORLD4, dst=CART4) / TCP(sport=33335, dport=8080)), False),
    "to_pod established IPv6 behind DSTOPTS": (
        "to_pod", tcp(FRONT6, CART6, 33336, 8080, "A", IPv6ExtHdrDestOpt()), True),
    "to_pod later fragment, established": ("to_pod", frame(BIG_DNS[1]), True),
    "from_pod neighbour solicitation": (
        "from_pod", frame(IPv6(src="fe80::a", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt="fe80::1")), True),
}
SETUP = {  # (hook, frame) run once first, so the timed frame meets an established (answered) connection
    "to_pod established IPv4": handshake(FRONT4, CART4, 33333, 8080),  # from_pod's established path too
    "to_pod established IPv6": handshake(FRONT6, CART6, 33333, 8080),
    "to_pod established IPv6 behind DSTOPTS": handshake(FRONT6, CART6, 33336, 8080),
    "to_pod later fragment, established": [  # records the ports and opens the flow; the answer
        ("from_pod", frame(BIG_DNS[0])), ("to_pod", frame(BIG_DNS[0])),
        *((hook, frame(IP(src=DNS4, dst=FRONT4) / UDP(sport=53, dport=33337))) for hook in ("from_pod", "to_pod"))],
}
PODS = ((FRONT4, FRONT6), (CART4, CART6), (INGRESS4,), (DNS4,))
VETHS = {pod: 101 + n for n, pod in enumerate(PODS)}  # the ifindex standing for each pod's veth
UPLINK = 2  # the ingress_ifindex of what comes from outside: bound to no pod
LOOPBACK = 1  # where a test run executes: bound to the pod whose hook runs


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


def pod_of(addr: str) -> tuple | None:
    return next((p for p in PODS if addr in p), None)


def ns(obj, hook: str, data: bytes, repeat: int, manifest: dict) -> int:
    """A pod hook runs on lo, bound to the pod at its end (the source for from_pod, the destination for
    to_pod) as the artifact binds a pod's veth; to_pod sees the packet come in by the source pod's veth
    (an ifindex bound to that pod) or by the uplink, as on a node."""
    prog = obj.program(hook)
    if hook == "xdp_node":
        return prog.test_run(data, repeat=repeat).duration_ns
    ip = Ether(data).payload
    end = pod_of(str(ip.src if hook == "from_pod" else ip.dst)) or PODS[0]
    source = pod_of(str(ip.src))
    if "interfaces" in {m["name"] for m in manifest["maps"]}:
        maps = object_maps(obj)
        bind(maps, manifest["features"], LOOPBACK, list(end))
        if source:
            bind(maps, manifest["features"], VETHS[source], list(source))
    ingress = 0 if hook == "from_pod" else VETHS[source] if source else UPLINK
    return prog.test_run(data, ctx=skb_ctx(0, ingress), repeat=repeat).duration_ns


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
            for which, obj in objs.items():
                for name in PATHS:
                    for hook, data in SETUP.get(name, []):
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
