"""Binary layouts shared by the generated C and the Python side, defined once.

Every map key and value and the ring-buffer event are described here; the
templates render the C structs from these descriptions and Python packs and
unpacks with the matching ``struct`` format, so the two cannot drift apart.
Fields are laid out in order, each at a multiple of its own size and the
struct a multiple of its largest field (explicit ``_pad`` fields make it so):
the C structs are naturally aligned, not packed, so the programs read a field
with one load rather than byte by byte, and C and Python still agree to the
byte (the C asserts every offset and size at compile time). ``be`` fields
are big-endian, the rest native (little-endian on every BPF target policyc
supports).
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

_CTYPES = {"u8": ("__u8", "B"), "u16": ("__u16", "H"), "u32": ("__u32", "I"), "u64": ("__u64", "Q"),
           "be16": ("__be16", "H"), "be32": ("__be32", "I")}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str       # a key of _CTYPES
    count: int = 1
    array: bool = False  # declared as an array even with one element (addresses)
    hint: bool = False   # a value the datapath recomputes when it is zero or absent (a record of older layout)

    @property
    def size(self) -> int:
        return struct.calcsize(_CTYPES[self.kind][1]) * self.count


    @property
    def align(self) -> int:
        return struct.calcsize(_CTYPES[self.kind][1])

    @property
    def optional(self) -> bool:
        """Padding, or a hint: a record of an older layout may end before it (``Layout.fit``, ``unpack``)."""
        return self.name.startswith("_pad") or self.hint


@dataclass(frozen=True)
class Layout:
    """A naturally aligned C struct: its declaration for the templates and its codec for Python."""

    name: str
    fields: tuple[Field, ...]

    def __post_init__(self):
        for f, offset in zip(self.fields, self.offsets()):
            if offset % f.align:
                raise ValueError(f"layout {self.name}: {f.name} at offset {offset} is not {f.align}-aligned")
        if self.size % max(f.align for f in self.fields):
            raise ValueError(f"layout {self.name}: {self.size} bytes need tail padding to their alignment")

    def offsets(self) -> list[int]:
        out, offset = [], 0
        for f in self.fields:
            out.append(offset)
            offset += f.size
        return out

    @property
    def size(self) -> int:
        return sum(f.size for f in self.fields)

    def c_decl(self) -> str:
        """The struct, and asserts that the compiler laid it out as Python packs it."""
        lines = [f"struct {self.name} {{"]
        for f in self.fields:
            ctype = _CTYPES[f.kind][0]
            lines.append(f"\t{ctype} {f.name}{f'[{f.count}]' if f.count > 1 or f.array else ''};")
        lines.append("};")
        for f, offset in zip(self.fields, self.offsets()):
            lines.append(f"_Static_assert(__builtin_offsetof(struct {self.name}, {f.name}) == {offset}, "
                         f"\"layouts.py: {self.name}.{f.name}\");")
        lines.append(f"_Static_assert(sizeof(struct {self.name}) == {self.size}, \"layouts.py: {self.name}\");")
        return "\n".join(lines)

    @functools.cached_property
    def _codecs(self) -> tuple[tuple[Field, struct.Struct, bool], ...]:
        """(field, struct, is an array) per field, compiled once: maps of 100,000 entries pack every key."""
        out = []
        for f in self.fields:
            endian = ">" if f.kind.startswith("be") else "<"
            array = f.count > 1 or f.array
            out.append((f, struct.Struct(f"{endian}{f.count if array else ''}{_CTYPES[f.kind][1]}"), array))
        return tuple(out)

    def pack(self, **values) -> bytes:
        """Fields missing from ``values`` are zero; arrays take a sequence or bytes."""
        out = []
        for f, codec, array in self._codecs:
            value = values.get(f.name, 0)
            if not array:
                out.append(codec.pack(value))
            elif isinstance(value, (bytes, bytearray)):
                assert len(value) == f.size, (self.name, f.name)
                out.append(bytes(value))
            else:
                out.append(codec.pack(*(value or [0] * f.count)))
        return b"".join(out)

    def fit(self, data: bytes, size: int) -> bytes:
        """``data`` packed by this layout, for a map whose records are ``size`` bytes: an artifact compiled
        before the tail padding existed (a 20-byte ct_value) takes the record without it. Only trailing
        padding and hints may go: anything else means the two layouts differ, and is refused."""
        if size == len(data):
            return data
        kept = 0
        for f, offset in zip(self.fields, self.offsets()):
            if not f.optional:
                kept = offset + f.size
        if not kept <= size < len(data):
            raise ValueError(f"layout {self.name}: a record of {size} bytes cannot hold this one's {len(data)}")
        return data[:size]

    def unpack(self, data: bytes) -> dict:
        """Padding is skipped, not read: a record written before its tail padding existed (a 20-byte
        ct_value, an 84-byte event of a policyc before aligned layouts) decodes the same, its missing
        hints as zero."""
        values, offset = {}, 0
        for f in self.fields:
            chunk = data[offset:offset + f.size]
            offset += f.size
            if f.name.startswith("_pad"):
                continue
            if f.hint and len(chunk) < f.size:
                values[f.name] = 0
                continue
            if f.count > 1 or f.array:
                values[f.name] = bytes(chunk)
            else:
                endian = ">" if f.kind.startswith("be") else "<"
                values[f.name] = struct.unpack(endian + _CTYPES[f.kind][1], chunk)[0]
        return values


# The ring-buffer event: addresses always 16 bytes (IPv4 in the first word), independent of the artifact.
EVENT = Layout("event", (Field("ts", "u64"), Field("src_identity", "u32"), Field("dst_identity", "u32"),
               Field("rule", "u32"), Field("endpoint_id", "u32"), Field("verdict", "u8"),
               Field("dir", "u8"), Field("proto", "u8"), Field("flags", "u8"),
               Field("reason", "u8"), Field("family", "u8"), Field("sport", "be16"),
               Field("dport", "be16"), Field("svc_port", "be16"),
               Field("saddr", "be32", 4), Field("daddr", "be32", 4),
               Field("svc_addr", "be32", 4),  # the Service address the client asked for (nf_node), 0 if none
               Field("_pad", "u32")))


# An endpoint's record; the by-interface record starts with the same fields, so the C code reads both as one.
ENDPOINT_FIELDS = (Field("endpoint_id", "u32"), Field("identity", "u32"), Field("policy_id", "u32"),
                   Field("flags", "u32"))


def addr_words(addr_len: int) -> int:
    return addr_len // 4


def layouts(addr_len: int, port_lpm: bool) -> dict[str, Layout]:
    """All layouts of one artifact: addresses are 4 bytes (IPv4 only) or 16 (v4-mapped IPv6)."""
    words = addr_words(addr_len)
    addr = lambda name: Field(name, "be32", words, array=True)  # noqa: E731
    policy_key = (Field("prefixlen", "u32"),) if port_lpm else ()
    policy_key += (Field("policy_id", "u32"), Field("peer", "u32"), Field("dir", "u8"),
                   Field("proto", "u8"), Field("port", "be16"))
    if not port_lpm:  # exact mode: which fall-back level this entry is (see lower.py)
        policy_key += (Field("level", "u8"), Field("_pad", "u8", 3))
    return {
        "ipcache_key": Layout("ipcache_key", (Field("prefixlen", "u32"), addr("addr"))),
        "ipcache_value": Layout("ipcache_value", (Field("identity", "u32"), Field("flags", "u32"))),
        "ipcache_host_key": Layout("ipcache_host_key", (addr("addr"),)),
        "endpoint_key": Layout("endpoint_key", (addr("addr"),)),
        "endpoint_value": Layout("endpoint_value", ENDPOINT_FIELDS),
        # a hook's endpoint by the interface it runs on: the endpoint's record and its (at most two) addresses
        "interface_key": Layout("interface_key", (Field("ifindex", "u32"),)),
        "interface_value": Layout("interface_value", ENDPOINT_FIELDS + (Field("addrs", "be32", 2 * words),)),
        "policy_key": Layout("policy_key", policy_key),
        "policy_value": Layout("policy_value", (Field("action", "u8"), Field("flags", "u8"),
                                                Field("_pad", "u16"), Field("rule", "u32"))),
        "ct_key": Layout("ct_key", (Field("endpoint", "u32"), addr("saddr"), addr("daddr"), Field("sport", "be16"),
                                    Field("dport", "be16"), Field("proto", "u8"), Field("dir", "u8"),
                                    Field("_pad", "u16"))),
        "ct_value": Layout("ct_value", (Field("last_seen", "u64"), Field("rule", "u32"), Field("revision", "u32"),
                                        Field("port", "u16"), Field("flags", "u8"), Field("tcp", "u8"),
                                        Field("checked", "u32", hint=True))),
        "revision": Layout("revision", (Field("value", "u32"),)),
        "index_key": Layout("index_key", (Field("index", "u32"),)),
        "counter": Layout("counter", (Field("packets", "u64"), Field("bytes", "u64"))),
        "ratelimit": Layout("ratelimit", (Field("window_start", "u64"), Field("allowed", "u32"),
                                          Field("dropped", "u32"))),
        # first fragments' ports, for the later fragments of the same datagram (IP id)
        "frag_key": Layout("frag_key", (addr("saddr"), addr("daddr"), Field("id", "be32"), Field("proto", "u8"),
                                        Field("_pad", "u8", 3))),
        # keyed by the protocol the fragments name (IPv6: the fragment header's next header), which
        # later fragments also carry; ``proto`` is the L4 protocol the first fragment's walk found
        "frag_value": Layout("frag_value", (Field("sport", "u16"), Field("dport", "u16"), Field("port", "u16"),
                                            Field("proto", "u8"), Field("_pad", "u8"))),
        "event": EVENT,
    }
