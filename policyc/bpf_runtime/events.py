"""Verdict events from the ring buffer, decoded with the layout the C struct was rendered from."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..compiler.codegen import REASON_WORDS
from ..compiler.ir import Protocol
from ..compiler.layouts import EVENT
from ..compiler.lower import ACTION_CODE, DIR_CODE, FLAG_L7

_ACTIONS = {c: a.value for a, c in ACTION_CODE.items()}
_DIRS = {c: d.value for d, c in DIR_CODE.items()}


@dataclass(frozen=True)
class Event:
    ts_ns: int
    verdict: str          # allow | deny
    direction: str        # ingress | egress (of endpoint_id)
    reason: str           # an evaluate.Reason or codegen.DatapathReason value: denied-by-rule, ...
    rule: int             # id in rules.json, 0 = none
    endpoint_id: int
    src_identity: int
    dst_identity: int
    src: str
    dst: str
    protocol: str
    sport: int
    dport: int
    l7_as_l4: bool        # the allow carries L7 rules, enforced as L4 only (no proxy sees the flow)
    service: str = ""     # the Service address the client sent to (nf_node: src -> dst is the backend)
    service_port: int = 0


UNPARSED = "unparsed"  # the address of a flow the datapath dropped before it found an IP header


def _addr(raw: bytes, family: int) -> str:
    """The address as text; a flow with no family (zeroed: e.g. more VLAN tags than parse walks) has none."""
    if not family:
        return UNPARSED
    if family == 4:
        return str(ipaddress.IPv4Address(raw[-4:] if raw[:12] == b"\0" * 10 + b"\xff\xff" else raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def decode_event(raw: bytes) -> Event:
    f = EVENT.unpack(raw[:EVENT.size])
    try:
        proto = Protocol(f["proto"]).label
    except ValueError:
        proto = str(f["proto"])
    return Event(f["ts"], _ACTIONS.get(f["verdict"], "?"), _DIRS.get(f["dir"], "?"), REASON_WORDS.get(f["reason"], "?"),
                 f["rule"], f["endpoint_id"], f["src_identity"], f["dst_identity"],
                 _addr(f["saddr"], f["family"]), _addr(f["daddr"], f["family"]), proto,
                 f["sport"], f["dport"], bool(f["flags"] & FLAG_L7),
                 _addr(f["svc_addr"], f["family"]) if f["svc_port"] else "", f["svc_port"])
