"""Map specs and their initial contents: lowered tables → keys and values, readable and binary.

The readable form goes to maps.json, the binary form to maps.bin (format in
docs/artifact.md): a loader writes the binary entries with no knowledge of
their meaning.  Key and value bytes come from layouts.py, the same
descriptions the C structs are rendered from.
"""
from __future__ import annotations

import ipaddress
import math
import struct
from dataclasses import dataclass
from typing import Callable, Iterable

from .diagnostics import Diagnostic, PolicycError
from .layouts import Layout, layouts
from .lower import (ACTION_CODE, DIR_CODE, EP_DEFAULT_DENY, FLAG_L7, LEVEL_ANY,
                    LEVEL_PORT, LEVEL_PROTO, Datapath, EndpointEntry, IPCacheEntry, PolicyEntry)

MAPS_BIN_MAGIC = b"PCMAPS\x00\x01"
RINGBUF_BYTES = 256 * 1024
# The smallest capacity of each sizable map; a map whose initial entries need more gets the next power
# of two above entries × HEADROOM (run-time endpoint changes add entries without a recompile).
# Conntrack: answered TCP and other flows in maps of their own, unanswered flows (TCP handshakes, a UDP
# request without reply) apart, so a flood of unanswered packets evicts only its kind (docs/artifact.md).
DEFAULT_SIZES = {"ipcache": 16384, "ipcache_hosts": 16384, "endpoints": 4096, "policy": 65536, "interfaces": 1024,
                 "ct_tcp": 65536, "ct_any": 32768, "ct_new": 16384, "fragments": 8192}
CT_MAPS = ("ct_tcp", "ct_any", "ct_new")
HEADROOM = 1.25
# Slots of the `stats` map (STAT_* in the C): what no rule counter sees, for `status` and metrics;
# ct_*_full: conntrack inserts the kernel refused, per table.
STATS = ("events_lost", "events_ratelimited_allow", "events_ratelimited_drop", "nd_passed", "icmp_related",
         "frag_map_full", "ct_tcp_full", "ct_any_full", "ct_new_full", "service_deferred")
DROP_SLOTS = 64  # the `drops` map: packets and bytes per drop reason code (codegen.REASON_CODES)
POLICY_PREFIX_BITS = 96  # the whole LPM policy key: look-ups use every bit
BLOWUP_ENTRIES = 1024  # warn when one rule decides more policy entries than this ...
BLOWUP_SHARE = 0.1     # ... and than this share of the policy map


@dataclass(frozen=True)
class MapSpec:
    name: str
    kind: str          # the BPF map type without its prefix, lower case (lpm_trie, hash, ...)
    key: Layout | None
    value: Layout | None
    max_entries: int
    flags: str = ""
    entries: tuple[tuple[bytes, bytes], ...] = ()
    readable: Callable[[], Iterable[dict]] = lambda: ()  # the entries decoded, made when maps.json is written

    @property
    def c_type(self) -> str:
        return "BPF_MAP_TYPE_" + self.kind.upper()

    def manifest(self) -> dict:
        return {"name": self.name, "type": self.kind, "key_size": self.key.size if self.key else 0,
                "value_size": self.value.size if self.value else 0, "max_entries": self.max_entries,
                "entries": len(self.entries)}


def addr_bytes(ip, addr_len: int) -> bytes:
    """4 bytes in an IPv4-only artifact, else 16 with IPv4 as ::ffff:a.b.c.d."""
    if addr_len == 4:
        return ip.packed
    return ip.packed if ip.version == 6 else ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed).packed


def prefix_len(net, addr_len: int) -> int:
    return net.prefixlen + (96 if addr_len == 16 and net.version == 4 else 0)


def port_text(e: PolicyEntry) -> str:
    if e.protocol is None or e.port_bits == 0:
        return "*"
    last = e.port + (1 << (16 - e.port_bits)) - 1
    return str(e.port) if last == e.port else f"{e.port}-{last}"


def policy_key(lay: Layout, e: PolicyEntry, port_lpm: bool) -> bytes:
    fields = dict(policy_id=e.policy_id, peer=e.peer, dir=DIR_CODE[e.direction],
                  proto=e.protocol or 0, port=e.port)
    if port_lpm:  # 72 bits of (policy, peer, direction), then protocol, then the port prefix
        fields["prefixlen"] = 72 if e.protocol is None else 80 + e.port_bits
    else:
        fields["level"] = LEVEL_ANY if e.protocol is None else LEVEL_PORT if e.port_bits == 16 else LEVEL_PROTO
    return lay.pack(**fields)


def policy_value(lay: dict[str, Layout], e: PolicyEntry) -> bytes:
    return lay["policy_value"].pack(action=ACTION_CODE[e.verdict.action], rule=e.verdict.rule,
                                    flags=FLAG_L7 if e.verdict.l7 else 0)


def endpoint_value(lay: dict[str, Layout], e: EndpointEntry) -> bytes:
    return lay["endpoint_value"].pack(endpoint_id=e.endpoint_id, identity=e.identity, policy_id=e.policy_id,
                                      flags=sum(EP_DEFAULT_DENY[d] for d in e.default_deny))


def ipcache_key(lay: dict[str, Layout], net, addr_len: int) -> bytes:
    """The LPM key of one prefix (the ``ipcache`` trie holds every prefix that is not a host route)."""
    return lay["ipcache_key"].pack(prefixlen=prefix_len(net, addr_len), addr=addr_bytes(net.network_address, addr_len))


def ipcache_host_key(lay: dict[str, Layout], ip, addr_len: int) -> bytes:
    """The ``ipcache_hosts`` key of one address: pod and node addresses live in this hash, not in the trie.

    A host route is the longest match wherever one exists, so a hash hit is the
    trie's answer, in one look-up instead of a walk as deep as the trie is full.
    """
    return lay["ipcache_host_key"].pack(addr=addr_bytes(ip, addr_len))


def is_host_route(net) -> bool:
    return net.prefixlen == net.max_prefixlen


def build_maps(dp: Datapath, sizes: dict[str, int]) -> tuple[list[MapSpec], list[str]]:
    """Every map with its initial entries; raises when a map would overflow, warns on blow-ups."""
    addr_len = 16 if dp.features.ipv6 else 4
    port_lpm = dp.features.port_ranges
    lay = layouts(addr_len, port_lpm)

    def spec(name, kind, key, value, items, pack, describe, flags=""):
        return MapSpec(name, kind, lay[key], lay[value], capacity(name, len(items), sizes), flags,
                       tuple(map(pack, items)), lambda: map(describe, items))

    def prefix_row(e: IPCacheEntry) -> dict:
        return {"prefix": str(e.network), "identity": e.identity, "source": e.source}

    def identity(e: IPCacheEntry) -> bytes:
        return lay["ipcache_value"].pack(identity=e.identity)

    prefixes = [e for e in dp.ipcache if not is_host_route(e.network)]
    hosts = [e for e in dp.ipcache if is_host_route(e.network)]
    specs = [
        spec("ipcache", "lpm_trie", "ipcache_key", "ipcache_value", prefixes,
             lambda e: (ipcache_key(lay, e.network, addr_len), identity(e)), prefix_row, "BPF_F_NO_PREALLOC"),
        spec("ipcache_hosts", "hash", "ipcache_host_key", "ipcache_value", hosts,
             lambda e: (ipcache_host_key(lay, e.network.network_address, addr_len), identity(e)), prefix_row),
        spec("endpoints", "hash", "endpoint_key", "endpoint_value", dp.endpoints,
             lambda e: (lay["endpoint_key"].pack(addr=addr_bytes(e.ip, addr_len)), endpoint_value(lay, e)),
             lambda e: {"ip": str(e.ip), "endpoint": e.name, "endpoint_id": e.endpoint_id, "identity": e.identity,
                        "policy_id": e.policy_id, "default_deny": [d.value for d in e.default_deny]}),
        spec("policy", "lpm_trie" if port_lpm else "hash", "policy_key", "policy_value", dp.policy,
             lambda e: (policy_key(lay["policy_key"], e, port_lpm), policy_value(lay, e)),
             lambda e: {"policy_id": e.policy_id, "peer": e.peer, "direction": e.direction.value,
                        "protocol": "any" if e.protocol is None else e.protocol, "ports": port_text(e),
                        "action": e.verdict.action.value, "rule": e.verdict.rule, "l7": e.verdict.l7},
             "BPF_F_NO_PREALLOC" if port_lpm else ""),
        spec("interfaces", "hash", "interface_key", "interface_value", [], None, None),
        *(spec(name, "lru_hash", "ct_key", "ct_value", [], None, None) for name in CT_MAPS),
        MapSpec("revision", "array", lay["index_key"], lay["revision"], 1),
        MapSpec("counters", "percpu_array", lay["index_key"], lay["counter"], len(dp.rules) + 1),
        MapSpec("ratelimit", "percpu_array", lay["index_key"], lay["ratelimit"], 1),
        spec("fragments", "lru_hash", "frag_key", "frag_value", [], None, None),
        MapSpec("stats", "percpu_array", lay["index_key"], lay["counter"], len(STATS)),
        MapSpec("drops", "percpu_array", lay["index_key"], lay["counter"], DROP_SLOTS),
        MapSpec("events", "ringbuf", None, None, RINGBUF_BYTES),
    ]
    check_capacity(specs, sizes)
    return specs, blowup_warnings(dp, next(s.max_entries for s in specs if s.name == "policy"))


def capacity(name: str, entries: int, sizes: dict[str, int]) -> int:
    """``--map-size`` when given (check_capacity refuses one too small), else room for the entries and more."""
    if name in sizes:
        return sizes[name]
    return max(DEFAULT_SIZES[name], _next_pow2(math.ceil(entries * HEADROOM)))


def check_capacity(specs: list[MapSpec], sizes: dict[str, int]) -> None:
    unknown = sorted(set(sizes) - set(DEFAULT_SIZES))
    if unknown:
        raise PolicycError(Diagnostic.simple(f"--map-size: unknown map {unknown[0]!r}; sizable maps: "
                                             + ", ".join(DEFAULT_SIZES)))
    for s in specs:
        if len(s.entries) > s.max_entries:
            raise PolicycError(Diagnostic.simple(
                f"map {s.name!r} needs {len(s.entries)} entries but holds {s.max_entries}: "
                f"raise it with --map-size {s.name}={_next_pow2(len(s.entries))}"))


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


def blowup_warnings(dp: Datapath, policy_size: int) -> list[str]:
    """Rules whose expansion (peer identities × port blocks) fills the policy map, named by origin."""
    per: dict[int, list[PolicyEntry]] = {}
    for e in dp.policy:
        per.setdefault(e.verdict.rule, []).append(e)
    out = []
    for rule_id, entries in sorted(per.items()):
        if rule_id and len(entries) > max(BLOWUP_ENTRIES, policy_size * BLOWUP_SHARE):
            rule = dp.rules[rule_id - 1]
            peers = len({e.peer for e in entries})
            blocks = len({(e.protocol, e.port, e.port_bits) for e in entries})
            out.append(f"{rule.origin}: rule {rule_id} ({rule.origin.policy}) expands to {len(entries)} policy "
                       f"entries ({peers} peer identities × {blocks} port blocks, "
                       f"{len(entries) * 100 // policy_size}% of the policy map): merge CIDRs or use port ranges")
    return out


def encode_maps_bin(specs: list[MapSpec]) -> bytes:
    """maps.bin: magic, map count, then per map its name, key/value sizes and raw entries."""
    out = bytearray(MAPS_BIN_MAGIC) + struct.pack("<I", len(specs))
    for s in specs:
        name = s.name.encode()
        ksize = s.key.size if s.key else 0
        vsize = s.value.size if s.value else 0
        out += struct.pack("<B", len(name)) + name + struct.pack("<III", ksize, vsize, len(s.entries))
        for k, v in s.entries:
            out += k + v
    return bytes(out)


def decode_maps_bin(data: bytes) -> dict[str, list[tuple[bytes, bytes]]]:
    """The inverse of encode_maps_bin: map name → [(key, value)]; raises ValueError on a bad file."""
    if not data.startswith(MAPS_BIN_MAGIC):
        raise ValueError("not a policyc maps.bin (bad magic)")
    pos = len(MAPS_BIN_MAGIC)
    (count,) = struct.unpack_from("<I", data, pos)
    pos += 4
    out = {}
    for _ in range(count):
        nlen = data[pos]
        name = data[pos + 1:pos + 1 + nlen].decode()
        pos += 1 + nlen
        ksize, vsize, n = struct.unpack_from("<III", data, pos)
        pos += 12
        rows = []
        for _ in range(n):
            rows.append((data[pos:pos + ksize], data[pos + ksize:pos + ksize + vsize]))
            pos += ksize + vsize
        out[name] = rows
    if pos != len(data):
        raise ValueError("maps.bin has trailing bytes")
    return out
