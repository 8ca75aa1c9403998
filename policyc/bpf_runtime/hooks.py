"""Which hooks a loaded name holds: attaching its programs for a load or a pod, and refusing hooks another
name owns (read from the link pins, the source of truth)."""
from __future__ import annotations

from pathlib import Path

from . import bpffs
from .attach import HOOKS, NF_HOOKS, Attachment, attach_netfilter, attach_tc, attach_xdp, detach
from .errors import error
from .libbpf import BPFObject
from .loaded import open_program
from .objects import Undo
from .request import Request
from .state import State


def hook_owners(name: str) -> dict[tuple[str, str], str]:
    """``(iface, "tc" | "xdp")`` -> the *other* loaded name whose link pins hold that hook.

    Read from the pins (the source of truth), ``next/`` included: a replace in progress owns its hooks.
    """
    owners: dict[tuple[str, str], str] = {}
    for other in bpffs.loaded_names():
        if other == name:
            continue
        for links in (bpffs.pin_dir(other) / "links", bpffs.pin_dir(other) / "next" / "links"):
            for pin in sorted(links.iterdir()) if links.is_dir() else ():
                hook, _, iface = pin.name.partition("-")  # link_pin(): <hook>-<iface with '.' as ':'>
                if hook == "netfilter":
                    continue  # one per name, family and hook: names share the netns's hooks
                owners.setdefault((iface.replace(":", "."), "xdp" if hook == "xdp" else "tc"), other)
    return owners


def check_owners(name: str, tc_ifaces: list[str], xdp: str | None = None) -> None:
    """Refuse hooks another policyc name holds: its programs end the tcx chain (TC_ACT_OK), so a second
    name behind them would never see a packet, and XDP takes one program per interface."""
    owners = hook_owners(name)
    for iface, kind in [(i, "tc") for i in tc_ifaces] + ([(xdp, "xdp")] if xdp else []):
        other = owners.get((iface, kind))
        if other:
            raise error(f"interface {iface!r} already carries the {kind.upper()} hooks of policyc {other!r}; "
                        f"{name!r} behind them would never enforce anything (policyc's programs end the chain): "
                        f"load over {other!r} (--name {other}) or run `policyc unload {other}` first")


def netfilter_families(features: dict) -> tuple[str, ...]:
    """The families nf_node hooks: none without Service addresses (features.services)."""
    if not features.get("services"):
        return ()
    return ("ipv4", "ipv6") if features.get("ipv6") else ("ipv4",)


def attach_all(obj: BPFObject, req: Request, links: Path, undo: Undo, features: dict,
               skip: frozenset = frozenset(), netfilter_links: Path | None = None) -> list[Attachment]:
    """Attach from_pod/to_pod on every requested interface, xdp_node on the node interface and nf_node
    on the namespace's netfilter PREROUTING, FORWARD and LOCAL_IN (where the artifact has Service
    addresses), its links pinned under ``netfilter_links`` (default ``links``: a replace pins them beside
    the old ones)."""
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
    for family in netfilter_families(features):
        if (family, "netfilter") not in skip:
            for hook in NF_HOOKS:
                a = attach_netfilter(obj.program("nf_node"), family, hook, netfilter_links or links)
                undo.add(detach, Path(a.pin))
                out.append(a)
    return out


def attach_endpoint(state: State, endpoint: str, iface: str) -> list[Attachment]:
    """from_pod / to_pod of a loaded name on a pod's host-side veth (``endpoint add --attach``), pinned
    under ``links/`` like a load's, so status, replace and unload see them; all or nothing."""
    pins = Path(state.pin_dir)
    undo = Undo()
    out = []
    try:
        for hook in ("ingress", "egress"):
            prog = open_program(pins, HOOKS[hook][0])
            try:
                a = attach_tc(prog, iface, hook, endpoint, state.tc_mode, pins / "links")
            finally:
                prog.close()
            undo.add(detach, Path(a.pin))
            out.append(a)
    except BaseException:
        undo.run()
        raise
    return out
