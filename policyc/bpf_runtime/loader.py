"""Load an artifact onto the node's hooks, and unload it; loading over a loaded name replaces it atomically.

A load is all or nothing: every step registers its undo, and any failure
(verifier rejection, missing interface, a pin that cannot be written) runs
the undos in reverse, so nothing stays attached or pinned.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from ..compiler.artifact import MANIFEST
from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.layouts import layouts
from ..compiler.lower import HOST_ID
from ..compiler.mapdata import ipcache_key
from . import bpffs
from .artifact import open_artifact, read_manifest
from .attach import HOOKS, Attachment, attach_tc, attach_xdp, detach, ifindex
from .libbpf import BPFError, BPFObject, Map, Program
from .state import State, manifest_sha256, read_state, remove_state, write_state

PROGRAMS = tuple(prog for prog, _, _ in HOOKS.values())


def _error(message: str) -> PolicycError:
    return PolicycError(Diagnostic.simple(message))


@dataclass(frozen=True)
class Request:
    """What ``policyc load`` was asked to do."""

    artifact: Path
    name: str
    attach: tuple[tuple[str, str], ...] = ()   # (ns/pod, iface)
    xdp: str | None = None
    xdp_mode: str = "auto"
    node_ips: tuple[str, ...] = ()
    tc_mode: str = "tcx"


@dataclass(frozen=True)
class LoadResult:
    state: State
    replaced: bool
    seconds: float
    conntrack_kept: int = 0
    conntrack_dropped: int = 0


class Undo:
    """Undo steps run in reverse on failure; errors while undoing never hide the original one."""

    def __init__(self):
        self.steps = []

    def add(self, fn, *args) -> None:
        self.steps.append((fn, args))

    def run(self) -> None:
        for fn, args in reversed(self.steps):
            try:
                fn(*args)
            except (OSError, BPFError, PolicycError):
                pass


CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39


def effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return -1 if os.geteuid() == 0 else 0


def require_root() -> None:
    """BPF maps, programs and links need CAP_BPF (or CAP_SYS_ADMIN); hooks need CAP_NET_ADMIN."""
    caps = effective_caps()
    has = lambda cap: bool(caps >> cap & 1)  # noqa: E731
    if not (has(CAP_NET_ADMIN) and (has(CAP_BPF) or has(CAP_SYS_ADMIN))):
        raise _error("the runtime commands need root (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN): run as root")


def artifact_endpoints(artifact: Path) -> list[dict]:
    try:
        return json.loads((artifact / "endpoints.json").read_text())
    except (OSError, ValueError) as exc:
        raise _error(f"{artifact / 'endpoints.json'}: cannot read ({exc})") from None


def check_request(req: Request, endpoints: list[dict]) -> None:
    """Refuse before touching the kernel: unknown endpoints, missing interfaces, an interface used twice."""
    names = {e["name"] for e in endpoints}
    for endpoint, iface in req.attach:
        if endpoint not in names:
            known = ", ".join(sorted(names)[:6])
            raise _error(f"--attach {endpoint}={iface}: {endpoint!r} is not an endpoint of the artifact"
                         + (f" (known: {known}{', ...' if len(names) > 6 else ''})" if names else ""))
        ifindex(iface)
    ifaces = [iface for _, iface in req.attach]
    dup = sorted({i for i in ifaces if ifaces.count(i) > 1})
    if dup:
        raise _error(f"--attach: interface {dup[0]!r} given for more than one endpoint")
    if req.xdp:
        ifindex(req.xdp)
    for ip in req.node_ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise _error(f"--node-ip {ip!r}: not an IP address") from None


def local_addresses() -> set[str]:
    """Addresses configured in this network namespace (from /proc, no tools needed)."""
    out = set()
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            out.add(str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))))
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, iface in socket.if_nameindex():
            try:
                req = struct.pack("256s", iface.encode()[:15])
                out.add(socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24]))  # SIOCGIFADDR
            except OSError:
                pass
    return out


def node_addresses(artifact: Path, explicit: tuple[str, ...]) -> list[str]:
    """The local node's addresses: those given, plus inventory node addresses configured here."""
    try:
        ipcache = json.loads((artifact / "maps.json").read_text())["maps"]["ipcache"]
    except (OSError, ValueError, KeyError):
        ipcache = []
    nodes = {e["prefix"].split("/")[0] for e in ipcache if str(e.get("source", "")).startswith("node ")}
    return sorted(set(explicit) | (nodes & local_addresses()), key=ipaddress.ip_address)


def set_host_identity(ipcache: Map, features: dict, ips: list[str]) -> None:
    """Rewrite the local node's addresses to identity host (docs/artifact.md, Identities)."""
    addr_len = 16 if features.get("ipv6") else 4
    lay = layouts(addr_len, bool(features.get("port_ranges")))
    for text in ips:
        ip = ipaddress.ip_address(text)
        if ip.version == 6 and addr_len == 4:
            continue  # an IPv4-only artifact drops IPv6 anyway
        ipcache.update(ipcache_key(lay, ipaddress.ip_network(ip), addr_len), lay["ipcache_value"].pack(identity=HOST_ID))


def build(artifact: Path, pins: Path, node_ips: list[str], undo: Undo) -> BPFObject:
    """Load the object, fill its maps, set host addresses and pin maps and programs under ``pins``."""
    manifest = read_manifest(artifact)
    try:
        obj = open_artifact(artifact)
    except BPFError as exc:
        raise _error(f"{artifact}: {exc}") from None
    undo.add(obj.close)
    set_host_identity(obj.map("ipcache"), manifest["features"], node_ips)
    for sub in ("maps", "progs"):
        (pins / sub).mkdir(parents=True)
    undo.add(bpffs.remove_tree, pins)
    for m in manifest["maps"]:
        obj.map(m["name"]).pin(str(pins / "maps" / m["name"]))
    for prog in PROGRAMS:
        obj.program(prog).pin(str(pins / "progs" / prog))
    return obj


def load(req: Request) -> LoadResult:
    """Load ``req.artifact`` as ``req.name``; over a loaded name this is an atomic replace (replace.py)."""
    start = time.monotonic()
    require_root()
    artifact = Path(req.artifact).resolve()
    read_manifest(artifact)
    check_request(req, artifact_endpoints(artifact))
    bpffs.ensure_bpffs()
    pins = bpffs.pin_dir(bpffs.check_name(req.name))
    if pins.exists():
        from .replace import replace
        return replace(req, artifact, pins, start)
    undo = Undo()
    try:
        node_ips = node_addresses(artifact, req.node_ips)
        obj = build(artifact, pins, node_ips, undo)
        (pins / "links").mkdir()
        attachments = attach_all(obj, req, pins / "links", undo)
        os.symlink(str(artifact), pins / "artifact")
        state = State(req.name, str(artifact), manifest_sha256(artifact), str(pins), req.tc_mode, time.time(),
                      attachments, node_ips)
        write_state(state)
        undo.add(remove_state, req.name)
    except BaseException:
        undo.run()
        raise
    obj.close()
    return LoadResult(state, False, time.monotonic() - start)


def attach_all(obj: BPFObject, req: Request, links: Path, undo: Undo,
               skip: frozenset = frozenset()) -> list[Attachment]:
    """Attach from_pod/to_pod on every requested interface and xdp_node on the node interface."""
    out = []
    for endpoint, iface in req.attach:
        for hook in ("ingress", "egress"):
            if (iface, hook) in skip:
                continue
            a = attach_tc(obj.program(HOOKS[hook][0]), iface, hook, endpoint, req.tc_mode, links)
            undo.add(detach, Path(a.pin))
            out.append(a)
    if req.xdp and (req.xdp, "xdp") not in skip:
        a = attach_xdp(obj.program("xdp_node"), req.xdp, req.xdp_mode, links)
        undo.add(detach, Path(a.pin))
        out.append(a)
    return out


def unload(name: str) -> list[str]:
    """Detach every link found under the pin dir, remove all pins and the state file; idempotent.

    Works from the pins alone (after a crash, without a state file); returns what it detached.
    """
    require_root()
    bpffs.check_name(name)
    pins = bpffs.pin_dir(name)
    detached = []
    if bpffs.is_bpffs(bpffs.BPFFS) and pins.is_dir():
        for links in (pins / "links", pins / "next" / "links"):
            if links.is_dir():
                for pin in sorted(links.iterdir()):
                    detach(pin)
                    detached.append(pin.name)
        bpffs.remove_tree(pins)
    remove_state(name)
    return detached


def open_program(pins: Path, name: str) -> Program:
    return Program.open_pinned(str(pins / "progs" / name))


def loaded_state(name: str) -> State:
    """The state of a loaded artifact; an error naming what is loaded when ``name`` is not."""
    pins = bpffs.pin_dir(bpffs.check_name(name))
    state = read_state(name)
    if not pins.is_dir() or state is None:
        names = bpffs.loaded_names() if bpffs.is_bpffs(bpffs.BPFFS) else []
        hint = f" (loaded: {', '.join(names)})" if names else " (nothing is loaded)"
        if pins.is_dir():
            hint = f": pins exist but the state file is missing; run `policyc unload {name}`"
        raise _error(f"no artifact loaded as {name!r}{hint}")
    return state


def default_name() -> str:
    """The only loaded name, for commands where NAME is optional."""
    names = bpffs.loaded_names() if bpffs.is_bpffs(bpffs.BPFFS) else []
    if len(names) != 1:
        raise _error("give NAME: " + (f"loaded are {', '.join(names)}" if names else "nothing is loaded"))
    return names[0]


def manifest_of(state: State) -> dict:
    return json.loads((Path(state.artifact) / MANIFEST).read_text())
