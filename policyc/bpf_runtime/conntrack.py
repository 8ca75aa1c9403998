"""Carry conntrack entries from an old object to a new one: only connections the new policy still allows.

The new programs decide, not a Python copy of their logic: every old entry
becomes its flow's first packet, run with BPF_PROG_TEST_RUN through the hook
that created it (``from_pod`` for egress entries, ``to_pod`` for ingress) on
the interface its endpoint is bound to, so the new program reads the same
pod from its own ``interfaces`` map (endpoint ids may differ between
artifacts).  If the new policy lets it through, the new program records the
connection in its own maps exactly as it would have; an entry the peer had
answered is then moved to the answered table with its TCP state.  Entries
whose endpoint is bound nowhere any more are not carried over.  A client's entry
for a Service address records nothing when replayed (``from_pod`` defers it to
``nf_node``, which alone knows the backend): it is copied as it was, under a
revision older than the new object's, so ``nf_node`` decides it again against
its backend at its next packet, whichever direction that packet runs.  The test
runs bump counters and emit events, so the caller resets those before the
new object sees real traffic.
"""
from __future__ import annotations

import ipaddress
import time
from pathlib import Path

from ..compiler.codegen import CT_LIFETIMES, CT_TCP_BITS
from ..compiler.ir import Direction, Protocol
from ..compiler.lower import DIR_CODE, SERVICE_ID
from ..compiler.mapdata import CT_MAPS, addr_bytes, ipcache_host_key
from .bindings import layouts_for
from .libbpf import BPFObject, Map, RingBuffer, possible_cpus
from .loaded import open_map
from .testrun import TC_ACT_OK, frame, skb_ctx

_HOOK = {DIR_CODE[Direction.EGRESS]: "from_pod", DIR_CODE[Direction.INGRESS]: "to_pod"}
ANSWERED = {int(Protocol.TCP): "ct_tcp"}  # every other protocol: ct_any
CLOCK_MONOTONIC_COARSE = 6  # linux/time.h; Python's time module does not name it


def _ip(raw: bytes):
    ip = ipaddress.ip_address(raw)
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


def first_packet(key: dict, value: dict) -> bytes | None:
    """The frame that opened the connection recorded in one conntrack entry (None: cannot be rebuilt)."""
    try:
        proto = Protocol(key["proto"])
    except ValueError:
        return None
    src, dst = _ip(key["saddr"]), _ip(key["daddr"])
    if src.version != dst.version:
        return None
    dport = value["port"] if proto in (Protocol.ICMP, Protocol.ICMPV6) else key["dport"]  # ICMP: its type
    try:
        return frame(src, dst, proto, key["sport"], dport)
    except ValueError:
        return None


def clock_age(now_ns: int, then_ns: int) -> int:
    """conntrack.h.j2's clock_age: the u64 difference read as signed, a time ahead of now being no age."""
    age = (now_ns - then_ns) % 2**64
    return age if 0 < age < 2**63 else 0


def expired(value: dict, proto: int, now_ns: int) -> bool:
    """The datapath's own rule (conntrack.h.j2 ct_lifetime): absent for every look-up, so never carried."""
    if value["tcp"] & CT_TCP_BITS["CLOSING"]:
        lifetime = CT_LIFETIMES["CLOSE_TIMEOUT"]
    elif proto != Protocol.TCP:
        lifetime = CT_LIFETIMES["LIFETIME_NONTCP"]
    else:
        lifetime = CT_LIFETIMES["LIFETIME_TCP" if value["tcp"] & CT_TCP_BITS["SEEN_NON_SYN"] else "SYN_TIMEOUT"]
    return clock_age(now_ns, value["last_seen"]) > lifetime * 10**9


def bound_interfaces(interfaces: Map, lay: dict) -> dict[int, int]:
    """ifindex -> the endpoint id its hooks are bound to (an endpoint may be bound to several)."""
    out = {}
    for key in interfaces.keys():
        raw = interfaces.lookup(key)
        if raw is not None:
            out[lay["interface_key"].unpack(key)["ifindex"]] = lay["interface_value"].unpack(raw)["endpoint_id"]
    return out


def _packed_key(lay: dict, addr_len: int, key: dict, endpoint: int) -> bytes:
    return lay["ct_key"].pack(**{**key, "endpoint": endpoint, "saddr": addr_bytes(_ip(key["saddr"]), addr_len),
                                 "daddr": addr_bytes(_ip(key["daddr"]), addr_len)})


def _to_service(new: BPFObject, lay: dict, addr_len: int, key: dict) -> bool:
    """An egress entry whose destination is a Service address of the new object (from_pod defers those)."""
    if key["dir"] != DIR_CODE[Direction.EGRESS]:
        return False
    raw = new.map("ipcache_hosts").lookup(ipcache_host_key(lay, _ip(key["daddr"]), addr_len))
    return raw is not None and lay["ipcache_value"].unpack(raw)["identity"] == SERVICE_ID


def _carry_stale(new: BPFObject, lay: dict, addr_len: int, key: dict, endpoint: int, value: dict,
                 table: str) -> None:
    """The entry as it was, under the revision before the new object's: decided again at its next packet."""
    current = int.from_bytes(new.map("revision").lookup(bytes(4)) or bytes(4), "little")
    _write_value(new.map(table), lay, _packed_key(lay, addr_len, key, endpoint),
                 {**value, "revision": (current - 1) % 2**32})


def _mark_answered(new: BPFObject, lay: dict, addr_len: int, key: dict, endpoint: int, tcp_state: int) -> None:
    """Move the entry the replay made in ct_new to its answered table, with the old TCP state."""
    packed = _packed_key(lay, addr_len, key, endpoint)
    fresh = new.map("ct_new")
    raw = fresh.lookup(packed)
    if raw is None:
        return  # the replay passed without recording (a pod talking to itself)
    value = lay["ct_value"].unpack(raw)
    _write_value(new.map(ANSWERED.get(key["proto"], "ct_any")), lay, packed, {**value, "tcp": tcp_state})
    fresh.delete(packed)


def _write_value(table, lay: dict, key: bytes, value: dict) -> None:
    """A conntrack value in the record size of the new object's map: an artifact the policyc before aligned
    layouts compiled (same format) has 20-byte values, this one packs 24 (``Layout.fit``)."""
    table.update(key, lay["ct_value"].fit(lay["ct_value"].pack(**value), table.value_size))


def migrate(old_pins: Path, old_features: dict, new: BPFObject, new_features: dict,
            seen: set[tuple[str, bytes]]) -> tuple[int, int]:
    """Replay every old entry not yet in ``seen`` through the new programs; (kept, dropped).

    ``seen`` collects the entries replayed, so a second pass (after the swap) only
    handles the connections the old programs opened in between.
    """
    if not (Path(old_pins) / "maps" / "interfaces").exists():  # an artifact of policyc before endpoint binding
        fresh = [("conntrack", k) for k in _legacy_keys(old_pins) if ("conntrack", k) not in seen]
        seen.update(fresh)
        return 0, len(fresh)
    old_lay, _ = layouts_for(old_features)
    new_lay, new_len = layouts_for(new_features)
    progs = {d: new.program(name) for d, name in _HOOK.items()}
    new_endpoint = bound_interfaces(new.map("interfaces"), new_lay)
    interfaces = open_map(old_pins, "interfaces")
    try:
        old_bound = bound_interfaces(interfaces, old_lay)
    finally:
        interfaces.close()
    # an entry names its endpoint, not the interface: replay it on one the new programs bind too
    old_ifindex: dict[int, int] = {}
    for index in sorted(old_bound):
        if index in new_endpoint:
            old_ifindex.setdefault(old_bound[index], index)
    kept = dropped = 0
    now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)  # what bpf_ktime_get_coarse_ns reads
    for table in CT_MAPS:
        old = open_map(old_pins, table)
        try:
            for raw_key in old.keys():
                raw_value = old.lookup(raw_key)
                if (table, raw_key) in seen or raw_value is None:
                    continue
                seen.add((table, raw_key))
                key, value = old_lay["ct_key"].unpack(raw_key), old_lay["ct_value"].unpack(raw_value)
                ifindex = old_ifindex.get(key["endpoint"])
                data = first_packet(key, value)
                prog = progs.get(key["dir"])
                if ifindex is None or data is None or prog is None or expired(value, key["proto"], now):
                    dropped += 1
                    continue
                if prog.test_run(data, ctx=skb_ctx(ifindex)).retval != TC_ACT_OK:
                    dropped += 1
                    continue
                kept += 1
                if _to_service(new, new_lay, new_len, key):
                    _carry_stale(new, new_lay, new_len, key, new_endpoint[ifindex], value, table)
                elif table != "ct_new":
                    _mark_answered(new, new_lay, new_len, key, new_endpoint[ifindex], value["tcp"])
        finally:
            old.close()
    return kept, dropped


def _legacy_keys(old_pins: Path) -> list[bytes]:
    """The entries of a pre-binding artifact's single conntrack map: they name no endpoint, so none is kept."""
    old = open_map(old_pins, "conntrack")
    try:
        return old.keys()
    finally:
        old.close()


def reset_side_effects(obj: BPFObject) -> None:
    """Zero counters and the event budget and drop the events the replay produced."""
    for name in ("counters", "ratelimit", "stats", "drops"):
        m = obj.map(name)
        zero = bytes((m.value_size + 7) // 8 * 8 * possible_cpus())
        for index in range(m.max_entries):
            m.update(index.to_bytes(4, "little"), zero)
    ring = RingBuffer(obj.map("events"), lambda _raw: None)
    try:
        ring.consume()
    finally:
        ring.close()
