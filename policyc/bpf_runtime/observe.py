"""Flow events from the pinned ring buffer, named like `hubble observe` prints them.

The ring buffer has one consumer position: reading here consumes the events
(as with Hubble's per-node ring).  Addresses are named by the artifact's
endpoints plus the runtime endpoint changes, rules by rules.json.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..compiler.codegen import DatapathReason
from ..compiler.entities import RESERVED_IDS
from .events import UNPARSED, Event, decode_event
from .libbpf import Map, RingBuffer
from .loaded import artifact_json
from .state import State

_RESERVED = {n: name for name, n in RESERVED_IDS.items()}
L7_AS_L4 = " (L7 rules enforced as L4 only)"  # no proxy sees the flow: never "proxied"
DATAPATH_WORDS = {r.value for r in DatapathReason}


@dataclass(frozen=True)
class Flow:
    time: str
    source: str
    destination: str
    protocol: str
    sport: int
    dport: int
    verdict: str
    direction: str
    reason: str
    rule_id: int
    policy: str
    rule: str
    l7_as_l4: bool
    src_identity: int
    dst_identity: int
    endpoint: str  # the pod whose hook decided (by endpoint id, not by address: a spoofed source names another)
    service: str = ""  # through a Service: ``svc:NS/NAME ADDR:PORT`` the client sent to (destination: the backend)

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """``TIME: SRC:PORT (ID:n) -> DST:PORT (ID:n) PROTO VERDICT (direction, policy rule)``."""
        ports = self.protocol in ("TCP", "UDP", "SCTP")
        src = f"{self.source}:{self.sport}" if ports else self.source
        dst = f"{self.destination}:{self.dport}" if ports else self.destination
        why = f"{self.policy} {self.rule}" if self.rule_id else self.reason
        if self.reason in DATAPATH_WORDS and self.endpoint:
            why += f", at {self.endpoint}"
        via = f" via {self.service}" if self.service else ""
        return (f"{self.time}: {src} (ID:{self.src_identity}) -> {dst}{via} (ID:{self.dst_identity}) "
                f"{self.protocol} {self.verdict.upper()}{L7_AS_L4 if self.l7_as_l4 else ''} "
                f"({self.direction}, {why})")


class Namer:
    """Addresses and identities to ns/pod names; rule ids to their origin."""

    def __init__(self, state: State):
        from .endpoints import current_pods

        self.by_ip = {ip: name for name, (ips, _) in current_pods(state).items() for ip in ips}
        self.by_endpoint = {e["endpoint_id"]: e["name"] for e in artifact_json(state, "endpoints.json")}
        self.by_endpoint |= {r["endpoint_id"]: r["endpoint"] for r in state.runtime if r["op"] != "remove"}
        self.rules = {r["id"]: r for r in artifact_json(state, "rules.json")}
        self.services = {ip: "svc:" + s["service"] for s in artifact_json(state, "services.json")
                         for ip in s["addresses"]}
        # CLOCK_MONOTONIC (bpf_ktime_get_ns) → wall clock
        self.offset = time.time() - time.monotonic()

    def flow(self, e: Event) -> Flow:
        r = self.rules.get(e.rule, {})
        stamp = self.offset + e.ts_ns / 1e9
        when = time.strftime("%b %d %H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"
        return Flow(when, self._name(e.src, e.src_identity), self._name(e.dst, e.dst_identity), e.protocol,
                    e.sport, e.dport, e.verdict, e.direction, e.reason, e.rule, r.get("policy", ""),
                    r.get("rule", ""), e.l7_as_l4, e.src_identity, e.dst_identity,
                    self.by_endpoint.get(e.endpoint_id, ""), self._service(e))

    def _service(self, e: Event) -> str:
        """``svc:NS/NAME ADDR:PORT`` (a NodePort: the node's address) for an event of nf_node, else ""."""
        if not e.service:
            return ""
        addr = f"[{e.service}]" if ":" in e.service else e.service
        name = self.services.get(e.service) or self.by_ip.get(e.service) or "NodePort"
        return f"{name} {addr}:{e.service_port}"

    def _name(self, addr: str, identity: int) -> str:
        if addr == UNPARSED:  # no address, so no identity to name it by
            return addr
        if addr in self.by_ip:
            return self.by_ip[addr]
        if addr in self.services:
            return f"{addr} ({self.services[addr]})"
        reserved = _RESERVED.get(identity)
        return f"{addr} ({reserved})" if reserved else addr


def observe(state: State, emit, follow: bool = False, timeout: float | None = None,
            verdict: str | None = None) -> int:
    """Call ``emit(Flow)`` for every event pending (and, with ``follow``, arriving until ``timeout``)."""
    namer = Namer(state)
    ring_map = Map.open_pinned(str(Path(state.pin_dir) / "maps" / "events"))
    count = 0

    def handle(raw: bytes) -> None:
        nonlocal count
        f = namer.flow(decode_event(raw))
        if verdict is None or f.verdict == verdict:
            count += 1
            emit(f)

    ring = RingBuffer(ring_map, handle)
    try:
        ring.consume()
        deadline = None if timeout is None else time.monotonic() + timeout
        while follow and (deadline is None or time.monotonic() < deadline):
            left = 200 if deadline is None else max(1, min(200, int((deadline - time.monotonic()) * 1000)))
            ring.poll(left)
    finally:
        ring.close()
        ring_map.close()
    return count
