"""Load an artifact onto the node's hooks, and unload it; loading over a loaded name replaces it atomically.

A load is all or nothing: every step registers its undo, and any failure
(verifier rejection, missing interface, a pin that cannot be written) runs
the undos in reverse, so nothing stays attached or pinned.  The pieces
(objects, hooks, host addresses, pins) live in modules below this one;
replace.py, which a load over a loaded name hands over to, builds on the
same pieces.
"""
from __future__ import annotations

import ipaddress
import json
import os
import time
from pathlib import Path

from . import bpffs
from .artifact import read_manifest
from .attach import detach, ifindex
from .bindings import bind, object_maps
from .errors import error
from .hooks import attach_all, check_owners
from .hostaddrs import node_addresses
from .objects import Undo, build
from .privileges import require_root
from .replace import replace
from .request import LoadResult, Request
from .state import State, manifest_sha256, name_lock, remove_state, write_state

__all__ = ["Request", "LoadResult", "load", "unload"]


def artifact_endpoints(artifact: Path) -> list[dict]:
    try:
        return json.loads((artifact / "endpoints.json").read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{artifact / 'endpoints.json'}: cannot read ({exc})") from None


def check_request(req: Request, endpoints: list[dict]) -> None:
    """Refuse before touching the kernel: unknown endpoints, missing interfaces, an interface used twice."""
    names = {e["name"] for e in endpoints}
    for endpoint, iface in req.attach:
        if endpoint not in names:
            known = ", ".join(sorted(names)[:6])
            raise error(f"--attach {endpoint}={iface}: {endpoint!r} is not an endpoint of the artifact"
                        + (f" (known: {known}{', ...' if len(names) > 6 else ''})" if names else ""))
        ifindex(iface)
    ifaces = [iface for _, iface in req.attach]
    dup = sorted({i for i in ifaces if ifaces.count(i) > 1})
    if dup:
        raise error(f"--attach: interface {dup[0]!r} given for more than one endpoint")
    if req.xdp:
        ifindex(req.xdp)
    for ip in req.node_ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise error(f"--node-ip {ip!r}: not an IP address") from None


def load(req: Request) -> LoadResult:
    """Load ``req.artifact`` as ``req.name``; over a loaded name this is an atomic replace (replace.py)."""
    start = time.monotonic()
    require_root()
    # absolute, symlinks kept: a ConfigMap mount swaps the target behind ..data, the path stays valid
    artifact = Path(os.path.abspath(req.artifact))
    features = read_manifest(artifact)["features"]
    endpoints = artifact_endpoints(artifact)
    check_request(req, endpoints)
    bpffs.ensure_bpffs()
    pins = bpffs.pin_dir(bpffs.check_name(req.name))
    with name_lock(req.name):
        check_owners(req.name, [iface for _, iface in req.attach], req.xdp)
        if pins.exists():
            return replace(req, artifact, pins, start)
        return _load_new(req, artifact, pins, start, features, endpoints)


def _load_new(req: Request, artifact: Path, pins: Path, start: float, features: dict,
              endpoints: list[dict]) -> LoadResult:
    undo = Undo()
    try:
        node_ips = node_addresses(artifact, req.node_ips)
        obj = build(artifact, pins, node_ips, undo, req.compiler)
        ips = {e["name"]: e["ips"] for e in endpoints}
        maps = object_maps(obj)
        for endpoint, iface in req.attach:  # each pod's hooks know their pod before they run
            bind(maps, features, ifindex(iface), ips[endpoint])
        (pins / "links").mkdir()
        attachments = attach_all(obj, req, pins / "links", undo, features)
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


def unload(name: str) -> list[str]:
    """Detach every link found under the pin dir, remove all pins and the state file; idempotent.

    Works from the pins alone (after a crash, without a state file); returns what it detached.
    """
    require_root()
    bpffs.check_name(name)
    pins = bpffs.pin_dir(name)
    detached = []
    with name_lock(name):
        if bpffs.is_bpffs(bpffs.BPFFS) and pins.is_dir():
            for links in (pins / "links", pins / "next" / "links"):
                if links.is_dir():
                    for pin in sorted(links.iterdir()):
                        detach(pin)
                        detached.append(pin.name)
            bpffs.remove_tree(pins)
        remove_state(name)
    return detached
