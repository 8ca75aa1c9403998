"""Shared pieces of the runtime tests: compile an artifact, veth pairs, pinned-program verdicts, cleanup.

Every name starts with "pcr" (this suite's prefix) so parallel helpers never collide.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from pathlib import Path

from cases import inventory, own
from policyc.bpf_runtime import bpffs
from policyc.bpf_runtime.bindings import MAPS, bind, layouts_for
from policyc.bpf_runtime.libbpf import Map, Program, get_pinned, link_ids
from policyc.bpf_runtime.loaded import loaded_state, manifest_of
from policyc.bpf_runtime.testrun import LOOPBACK_IFINDEX, TC_ACT_OK, frame, skb_ctx
from policyc.cli import main
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.ir import Protocol

CASE3 = own("L12-knp-pod-peer-is-own-namespace")  # x/a admits only x/b, on 80/TCP
INVENTORY = inventory(CASE3)
XA, XB, XC = "10.244.1.1", "10.244.1.2", "10.244.1.3"


def compile_to(out: Path, policies: Path | str, inventory: Path = INVENTORY) -> Path:
    """Compile ``policies`` (a path, or YAML text written next to ``out``) into ``out``."""
    if isinstance(policies, str):
        src = out.parent / f"{out.name}-policy.yaml"
        src.write_text(policies)
        policies = src
    assert main(["compile", str(policies), "--inventory", str(inventory), "--output-dir", str(out)]) == 0
    return out


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


@contextlib.contextmanager
def veths(*names: str):
    """veth pairs NAMEa <-> NAMEb, up, in this namespace; deleted whatever happens."""
    try:
        for n in names:
            ip("link", "add", f"{n}a", "type", "veth", "peer", "name", f"{n}b")
            ip("link", "set", f"{n}a", "up")
            ip("link", "set", f"{n}b", "up")
        yield [f"{n}a" for n in names]
    finally:
        for n in names:
            ip("link", "del", f"{n}a", check=False)


@contextlib.contextmanager
def loaded_name(name: str):
    """Yield ``name``; unload it (links, pins, state) at the end even when the test failed."""
    try:
        yield name
    finally:
        main(["unload", name])


def pins(name: str) -> Path:
    return bpffs.pin_dir(name)


def bind_loopback(name: str, pod_ip: str) -> None:
    """Bind ``lo`` (where a test run executes) to the pod holding ``pod_ip`` in a loaded name's pinned maps,
    as the loader binds a pod's veth; unbound when no endpoint holds the address."""
    features = manifest_of(loaded_state(name))["features"]
    maps = {n: Map.open_pinned(str(pins(name) / "maps" / n)) for n in MAPS}
    try:
        try:
            bind(maps, features, LOOPBACK_IFINDEX, [pod_ip])
        except PolicycError:
            maps["interfaces"].delete(layouts_for(features)[0]["interface_key"].pack(ifindex=LOOPBACK_IFINDEX))
    finally:
        for m in maps.values():
            m.close()


TCP_FLAGS_FROM_END = 20 - 13  # the flags byte of the frame's TCP header (20 bytes, last in the frame)


def passes(name: str, program: str, src: str, dst: str, dport: int = 80, sport: int = 40000,
           protocol: Protocol = Protocol.TCP, tcp_flags: int = 0x02) -> bool:
    """One packet through a pinned program with BPF_PROG_TEST_RUN (it shares the pinned maps), on ``lo``
    bound to the pod whose hook it is: the source for from_pod, the destination for to_pod. A TCP
    segment is a SYN unless ``tcp_flags`` says otherwise (0x10: an ACK, which answers a connection)."""
    bind_loopback(name, src if program == "from_pod" else dst)
    prog = Program.open_pinned(str(pins(name) / "progs" / program))
    try:
        data = bytearray(frame(ipaddress.ip_address(src), ipaddress.ip_address(dst), protocol, sport, dport))
        if protocol is Protocol.TCP:
            data[-TCP_FLAGS_FROM_END] = tcp_flags
        return prog.test_run(bytes(data), ctx=skb_ctx()).retval == TC_ACT_OK
    finally:
        prog.close()


def pinned_link_ids(name: str) -> list[int]:
    """Kernel ids of the links pinned for ``name``: after unload none of them may exist."""
    out = []
    for pin in sorted((pins(name) / "links").iterdir()):
        fd = get_pinned(str(pin))
        try:
            out.append(link_ids(fd)[0])
        finally:
            os.close(fd)
    return out
