"""C generation from the Jinja templates, and the clang build of the BPF object.

Specialization happens here: the templates see the Features of the lowered
datapath and leave out whatever the policy set does not use (IPv6 parsing,
port-range look-ups, the deny path, the any-peer look-up, ICMP types).
Constants (identities, codes, rates) are baked in.
"""
from __future__ import annotations

import enum
import os
import shutil
import subprocess
from pathlib import Path

import jinja2

from .diagnostics import Diagnostic, PolicycError
from .entities import FIRST_CIDR_ID, RESERVED_IDS
from .evaluate import Reason
from .layouts import EVENT, addr_words
from .lower import (ACTION_CODE, ANY_PEER, DIR_CODE, EP_DEFAULT_DENY, FLAG_L7, HOST_ID, IPCACHE_LOCAL,
                    LEVEL_ANY, LEVEL_PORT, LEVEL_PROTO, SERVICE_ID, Datapath, fallback_levels)
from .mapdata import DROP_SLOTS, POLICY_PREFIX_BITS, STATS, MapSpec

EVENTS_PER_SECOND = 1000     # allow events, per CPU
DROP_EVENTS_PER_SECOND = 1000  # drop events, per CPU: a budget of their own, so allowed churn cannot hide drops


class DatapathReason(str, enum.Enum):
    """Drops no rule decides: what the datapath cannot parse or attribute (events, `drops` counters).

    A reason's code is its place in ``_CODE_ORDER``, which only grows at its end."""

    MALFORMED = "malformed-packet"                  # truncated or invalid IP/L4 header
    EXTHDR = "invalid-ipv6-extension-header"        # no next header, too many headers, two fragment headers
    FRAG_NOT_FOUND = "fragment-without-first"       # a later fragment whose first fragment was never seen
    IPV6_DISABLED = "ipv6-not-compiled"             # IPv6 in an artifact compiled without IPv6
    INVALID_SOURCE = "invalid-source"               # from_pod: a source address that is not the pod's own
    NOT_FOR_ENDPOINT = "not-for-endpoint"           # to_pod: unicast for an address the pod does not hold
    UNBOUND = "unbound-interface"                   # a pod hook on an interface no endpoint is bound to
    LOCAL_SOURCE_FROM_OUTSIDE = "local-source-from-outside"  # xdp_node, to_pod: a local address from outside
    SERVICE_NOT_TRANSLATED = "service-not-translated"  # nf_node: a Service address no DNAT rewrote and no
    # REJECT refused (FORWARD, LOCAL_IN), or one claimed as a source (PREROUTING)
    ICMP_OFF_PATH = "icmp-error-off-path"  # nf_node: an error about a Service connection from a pod not its peer
    VLAN = "vlan-tagged"                            # pod hooks: any VLAN tag; xdp_node: more than two
    UNKNOWN_L3 = "unknown-l3-protocol"              # pod hooks: an ethertype other than IPv4, IPv6 and ARP


# Event and `drops` reason codes, the evaluator's reasons and the datapath's own: a name's code is its
# place here, and this list only grows at its end, so a code read from a loaded artifact's events or
# counters keeps its meaning across versions whichever enum a new reason joins.
_CODE_ORDER = ("SELF", "NOT_ENDPOINT", "LOCALHOST", "NOT_ENFORCED", "DENIED", "ALLOWED", "DEFAULT_DENY",
               "HAIRPIN", "AUTH_REQUIRED", "REQUEST_DENIED", "NO_PACKET",
               "MALFORMED", "EXTHDR", "FRAG_NOT_FOUND", "IPV6_DISABLED", "INVALID_SOURCE", "NOT_FOR_ENDPOINT",
               "UNBOUND", "LOCAL_SOURCE_FROM_OUTSIDE", "SERVICE_NOT_TRANSLATED", "ICMP_OFF_PATH", "VLAN",
               "UNKNOWN_L3")
assert sorted(_CODE_ORDER) == sorted([*Reason.__members__, *DatapathReason.__members__]), \
    "a new reason takes the next code: append its name to _CODE_ORDER"
REASON_CODES = {name: n + 1 for n, name in enumerate(_CODE_ORDER)}
# the words `observe` prints: the evaluator's (`policyc query`, `matrix`) and the datapath's
REASON_WORDS = {code: (Reason[name] if name in Reason.__members__ else DatapathReason[name]).value
                for name, code in REASON_CODES.items()}
assert max(REASON_CODES.values()) < DROP_SLOTS
# Conntrack lifetimes after a flow's last packet, seconds (Cilium's defaults), and the TCP state bits.
CT_LIFETIMES = {"LIFETIME_TCP": 21600, "LIFETIME_NONTCP": 60, "SYN_TIMEOUT": 60, "CLOSE_TIMEOUT": 10}
CT_TCP_BITS = {"SEEN_NON_SYN": 1, "FIN_FORWARD": 2, "FIN_REPLY": 4, "CLOSING": 8}
# (name, ELF section, hook); nf_node only where the artifact has Service addresses (features.services)
PROGRAMS = (("from_pod", "tc", "tc-from-pod"), ("to_pod", "tc", "tc-to-pod"), ("xdp_node", "xdp", "xdp-node"))
# nf_node runs on three netfilter hooks: one program, one manifest entry per hook
NF_NODE = tuple(("nf_node", "netfilter", f"netfilter-{hook}") for hook in ("prerouting", "forward", "input"))


def programs(features: dict[str, bool]) -> tuple[tuple[str, str, str], ...]:
    """The programs of an artifact with these features, as its manifest lists them: one entry per hook."""
    return PROGRAMS + (NF_NODE if features.get("services") else ())

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("policyc", "templates"), undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(dp: Datapath, specs: list[MapSpec], version: str, inputs: list[str]) -> str:
    """The generated C source of one artifact."""
    structs = {}
    for s in specs:
        for lay in (s.key, s.value):
            if lay is not None:
                structs[lay.name] = lay.c_decl()
    structs["event"] = EVENT.c_decl()  # the ring buffer has no key or value type
    return _ENV.get_template("policyc.bpf.c.j2").render(
        version=version, inputs=inputs, features=dp.features.as_dict(),
        structs=list(structs.values()),
        maps=[{"name": s.name, "c_type": s.c_type, "key": _ctype(s, s.key), "value": _ctype(s, s.value),
               "max_entries": s.max_entries, "flags": s.flags}
              for s in specs],
        addr_words=addr_words(16 if dp.features.ipv6 else 4),
        dir={d.value: c for d, c in DIR_CODE.items()}, action={a.value: c for a, c in ACTION_CODE.items()},
        ep_dd={d.value: c for d, c in EP_DEFAULT_DENY.items()}, flag_l7=FLAG_L7, any_peer=ANY_PEER,
        host_id=HOST_ID, service_id=SERVICE_ID, world_ipv4_id=RESERVED_IDS["world-ipv4"], world_ipv6_id=RESERVED_IDS["world-ipv6"],
        first_cidr_id=FIRST_CIDR_ID, events_per_second=EVENTS_PER_SECOND,
        drop_events_per_second=DROP_EVENTS_PER_SECOND, stats=STATS,
        reasons=REASON_CODES, policy_prefix_bits=POLICY_PREFIX_BITS, ipcache_local=IPCACHE_LOCAL,
        ct_lifetimes=CT_LIFETIMES, ct_tcp_bits=CT_TCP_BITS,
        level={"port": LEVEL_PORT, "proto": LEVEL_PROTO, "any": LEVEL_ANY}, levels=fallback_levels(dp.rules))


def _ctype(spec: MapSpec, lay) -> str | None:
    """Array maps need a plain integer key type in BTF."""
    if lay is None:
        return None
    return "__u32" if spec.kind.endswith("array") and lay is spec.key else f"struct {lay.name}"


def clang() -> str:
    path = shutil.which("clang")
    if path is None:
        raise PolicycError(Diagnostic.simple("clang not found: install clang (and libbpf-dev) to compile datapaths"))
    return path


def clang_version() -> str:
    out = subprocess.run([clang(), "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].strip()


def include_dirs() -> list[str]:
    """asm/ headers live under the multiarch directory on Debian."""
    arch = subprocess.run([clang(), "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    multi = f"/usr/include/{arch or 'x86_64-linux-gnu'}"
    return [f"-I{multi}"] if os.path.isdir(multi) else []


# clang would merge the look-ups of two maps chosen by a branch (ct_tcp or ct_any) into one call on a map
# pointer that depends on the branch: SimplifyCFG sinks them, and the back end's tail merging does the same
# to the calls that reach one return. The verifier then cannot inline that look-up, and every packet pays
# the generic helper's indirect call. Kept apart, each call names one map (tests/test_inlined_lookups.py).
CLANG_OPTIMIZATION = ("-O2", "-mllvm", "-sink-common-insts=false", "-mllvm", "-enable-tail-merge=false")


def build_object(directory: Path, source: str, obj: str) -> None:
    """clang -O2 -g -target bpf in ``directory``; debug paths are made relative for reproducibility."""
    cmd = [clang(), *CLANG_OPTIMIZATION, "-g", "-target", "bpf", "-Wall", "-Werror", *include_dirs(),
           f"-fdebug-prefix-map={directory}=.", "-fdebug-compilation-dir=.", "-c", source, "-o", obj]
    res = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-20:])
        raise PolicycError(Diagnostic.simple(f"clang failed on the generated {source}:\n{tail}"))
