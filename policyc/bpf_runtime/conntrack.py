"""Carry conntrack entries from an old object to a new one: only connections the new policy still allows.

The new programs decide, not a Python copy of their logic: every old entry
becomes its flow's first packet, run with BPF_PROG_TEST_RUN through the hook
that created it (``from_pod`` for egress entries, ``to_pod`` for ingress).
If the new policy lets it through, the new program records the connection
in its own conntrack map exactly as it would have; if not, the connection
is not carried over.  The test runs bump counters and emit events, so the
caller resets those before the new object sees real traffic.
"""
from __future__ import annotations

import ipaddress

from ..compiler.ir import Direction, Protocol
from ..compiler.layouts import layouts
from ..compiler.lower import DIR_CODE
from .libbpf import BPFObject, Map, RingBuffer, possible_cpus
from .testrun import SKB_CTX_BYTES, TC_ACT_OK, frame

_HOOK = {DIR_CODE[Direction.EGRESS]: "from_pod", DIR_CODE[Direction.INGRESS]: "to_pod"}
_ECHO_REQUEST = {4: 8, 6: 128}


def _ip(raw: bytes):
    ip = ipaddress.ip_address(raw)
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


def first_packet(fields: dict) -> bytes | None:
    """The frame that opened the connection recorded in one conntrack key (None: cannot be rebuilt)."""
    try:
        proto = Protocol(fields["proto"])
    except ValueError:
        return None
    src, dst = _ip(fields["saddr"]), _ip(fields["daddr"])
    if src.version != dst.version:
        return None
    dport = _ECHO_REQUEST[src.version] if proto in (Protocol.ICMP, Protocol.ICMPV6) else fields["dport"]
    try:
        return frame(src, dst, proto, fields["sport"], dport)
    except ValueError:
        return None


def migrate(old: Map, old_features: dict, new: BPFObject, seen: set[bytes]) -> tuple[int, int]:
    """Replay every old entry not yet in ``seen`` through the new programs; (kept, dropped).

    ``seen`` collects the keys replayed, so a second pass (after the swap) only
    handles the connections the old programs opened in between.
    """
    key_layout = layouts(16 if old_features.get("ipv6") else 4, bool(old_features.get("port_ranges")))["ct_key"]
    new_ct = new.map("conntrack")
    progs = {d: new.program(name) for d, name in _HOOK.items()}
    kept = dropped = 0
    new_size = new_ct.key_size
    for key in old.keys():
        if key in seen or (new_size == len(key) and new_ct.lookup(key) is not None):
            continue
        seen.add(key)
        fields = key_layout.unpack(key)
        data = first_packet(fields)
        prog = progs.get(fields["dir"])
        if data is None or prog is None:
            dropped += 1
            continue
        if prog.test_run(data, ctx=bytes(SKB_CTX_BYTES)).retval == TC_ACT_OK:
            kept += 1
        else:
            dropped += 1
    return kept, dropped


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
