"""Hooks: put a program on an interface, swap it atomically, take it off again.

Two TC mechanisms (``--tc-mode``):

* ``tcx`` (kernel >= 6.6, the default): a bpf_link per hook, pinned under
  ``links/``; ``bpf_link_update`` swaps the program in one step, and a pinned
  link survives the loader's exit and can be detached from its pin alone.
* ``clsact`` (older kernels): a direct-action cls_bpf filter with policyc's
  fixed handle and priority on the clsact qdisc; replaced in place with
  ``BPF_TC_F_REPLACE``.  Filters cannot be pinned, so a symlink marker in
  ``links/`` records ifindex, hook, handle and priority for unload.

XDP always uses a pinned link; ``auto`` asks for native (driver) mode and
falls back to generic (skb) mode when the driver has no XDP support.
"""
from __future__ import annotations

import errno
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from . import libbpf as L
from .errors import error

# hook -> (program, tcx attach type, clsact attach point)
HOOKS = {"ingress": ("from_pod", L.BPF_TCX_INGRESS, L.BPF_TC_INGRESS),
         "egress": ("to_pod", L.BPF_TCX_EGRESS, L.BPF_TC_EGRESS),
         "xdp": ("xdp_node", L.BPF_XDP, 0)}
TC_HANDLE, TC_PRIORITY = 0x5043, 1  # "PC": policyc's cls_bpf filter on every clsact hook
TC_MODES = ("tcx", "clsact")
NF_FAMILIES = {"ipv4": L.NFPROTO_IPV4, "ipv6": L.NFPROTO_IPV6}
# nf_node's netfilter hooks -> (hook number, the two priorities a load and a replace alternate between).
# PREROUTING right after kube-proxy's DNAT (nat, -100); FORWARD and LOCAL_IN right after the filter table
# (0), where kube-proxy REJECTs a Service port with no endpoints: what is still untranslated there was
# not refused, and is dropped. The kernel refuses a BPF hook at a priority another hook of the same
# netfilter hook holds (EBUSY: 0 while a filter table exists, -100 next to the nat table).
NF_HOOKS = {"prerouting": (L.NF_INET_PRE_ROUTING, (L.NF_IP_PRI_NAT_DST + 1, L.NF_IP_PRI_NAT_DST + 2)),
            "forward": (L.NF_INET_FORWARD, (L.NF_IP_PRI_FILTER + 1, L.NF_IP_PRI_FILTER + 2)),
            "input": (L.NF_INET_LOCAL_IN, (L.NF_IP_PRI_FILTER + 1, L.NF_IP_PRI_FILTER + 2))}
XDP_MODES = ("auto", "native", "generic")


@dataclass(frozen=True)
class Attachment:
    """One program on one hook of one interface, as recorded in the state file."""

    iface: str
    ifindex: int
    hook: str        # ingress | egress (TC, host side of a pod's veth) | xdp (node interface) | netfilter
    program: str
    mode: str        # tcx | clsact | native | generic | <hook> priority N (netfilter; iface is the family)
    endpoint: str    # ns/pod for TC hooks, "" for XDP
    pin: str         # link pin (tcx, XDP) or marker symlink (clsact)

    def as_dict(self) -> dict:
        return asdict(self)


def ifindex(iface: str) -> int:
    """The interface's index in this network namespace; a clear error when it does not exist."""
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise error(f"interface {iface!r} does not exist in this network namespace") from None


def link_pin(links: Path, iface: str, hook: str) -> Path:
    """``<hook>-<iface>``: bpffs refuses names with dots, interface names never hold ':' (dev_valid_name)."""
    return links / f"{hook}-{iface.replace('.', ':')}"


def attach_tc(prog: L.Program, iface: str, hook: str, endpoint: str, mode: str, links: Path) -> Attachment:
    """from_pod / to_pod on one TC hook of ``iface``; the link (or marker) is pinned under ``links``."""
    index = ifindex(iface)
    pin = link_pin(links, iface, hook)
    _, tcx_type, point = HOOKS[hook]
    what = f"attach {prog.name} to {iface} TC {hook} ({mode})"
    if mode == "tcx":
        fd = L.link_create(prog.fd, index, tcx_type, what=what)
        try:
            L.pin_fd(fd, str(pin))
        finally:
            os.close(fd)
    else:
        L.tc_attach(index, point, prog.fd, TC_HANDLE, TC_PRIORITY, what=what)
        os.symlink(f"clsact:{index}:{point}:{TC_HANDLE}:{TC_PRIORITY}", pin)
    return Attachment(iface, index, hook, prog.name, mode, endpoint, str(pin))


def attach_xdp(prog: L.Program, iface: str, mode: str, links: Path) -> Attachment:
    """xdp_node on ``iface``: native, generic, or native with a generic fall-back (auto)."""
    index = ifindex(iface)
    pin = link_pin(links, iface, "xdp")
    tries = {"auto": ("native", "generic"), "native": ("native",), "generic": ("generic",)}[mode]
    flags = {"native": L.XDP_FLAGS_DRV_MODE, "generic": L.XDP_FLAGS_SKB_MODE}
    for n, got in enumerate(tries):
        try:
            fd = L.link_create(prog.fd, index, L.BPF_XDP, flags[got], what=f"attach {prog.name} to {iface} XDP ({got})")
            break
        except L.BPFError as exc:
            if n == len(tries) - 1 or exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise  # only "the driver cannot" falls back to generic; busy or gone is an error
    try:
        L.pin_fd(fd, str(pin))
    finally:
        os.close(fd)
    return Attachment(iface, index, "xdp", prog.name, got, "", str(pin))


def attach_netfilter(prog: L.Program, family: str, hook: str, links: Path) -> Attachment:
    """nf_node on one netfilter hook (NF_HOOKS) of this network namespace for ``family`` (ipv4 | ipv6),
    pinned as ``netfilter-<family>-<hook>``. The kernel takes one BPF program per hook and priority and
    cannot swap a netfilter link's program, so a replace attaches the new one at the other of the hook's
    two priorities before the old one goes."""
    number, priorities = NF_HOOKS[hook]
    pin = link_pin(links, f"{family}-{hook}", "netfilter")
    for n, priority in enumerate(priorities):
        try:
            fd = L.netfilter_link(prog.fd, NF_FAMILIES[family], number, priority,
                                  what=f"attach {prog.name} to netfilter {family} {hook}, priority {priority}")
            break
        except L.BPFError as exc:
            if n == len(priorities) - 1 or exc.errno != errno.EBUSY:
                raise
    try:
        L.pin_fd(fd, str(pin))
    finally:
        os.close(fd)
    return Attachment(family, 0, "netfilter", prog.name, f"{hook} priority {priority}", "", str(pin))


def _marker(pin: Path) -> tuple[int, int, int, int] | None:
    """(ifindex, attach point, handle, priority) of a clsact marker, None for a link pin."""
    if not pin.is_symlink():
        return None
    kind, *numbers = os.readlink(pin).split(":")
    return tuple(int(n) for n in numbers) if kind == "clsact" and len(numbers) == 4 else None


def update(pin: Path, prog: L.Program) -> None:
    """Swap the program behind one attachment atomically (link update, or tc replace for clsact)."""
    marker = _marker(pin)
    if marker is not None:
        index, point, handle, prio = marker
        L.tc_attach(index, point, prog.fd, handle, prio, replace=True, what=f"replace program on {pin.name}")
        return
    fd = L.get_pinned(str(pin))
    try:
        L.link_update(fd, prog.fd, what=f"swap program on {pin.name}")
    finally:
        os.close(fd)


def detach(pin: Path) -> None:
    """Take one attachment off its hook and remove its pin; already gone is fine (unload after a crash)."""
    marker = _marker(pin)
    if marker is not None:
        index, point, handle, prio = marker
        L.tc_detach(index, point, handle, prio, what=f"detach {pin.name}")
    elif pin.exists():
        fd = L.get_pinned(str(pin))
        try:
            L.link_detach(fd, what=f"detach {pin.name}")
        except L.BPFError:
            pass  # the interface went away: the link is already defunct, unpinning frees it
        finally:
            os.close(fd)
    pin.unlink(missing_ok=True)
