"""Values shared by the kinds: CIDRs, FQDN names, ports, protocols and ICMP types."""
from __future__ import annotations

import difflib
import ipaddress
import re

from ..ir import CIDRPeer, FQDNPeer, PortMatch, Protocol, unmapped
from .reader import UNSUPPORTED, FieldReader, Invalid, kind_of

MAX_PORTS = 40  # R1.5 PortRule.ports and R1.27 ICMP fields
_IANA_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^[a-z0-9_.-]+\.?$")
_DNS_PATTERN = re.compile(r"^[a-z0-9_.*-]+\.?$")

# R1.27: ICMP type names per family.
ICMP_TYPES = {
    4: {"EchoReply": 0, "DestinationUnreachable": 3, "Redirect": 5, "Echo": 8, "EchoRequest": 8,
        "RouterAdvertisement": 9, "RouterSelection": 10, "TimeExceeded": 11, "ParameterProblem": 12,
        "Timestamp": 13, "TimestampReply": 14, "Photuris": 40, "ExtendedEchoRequest": 42,
        "ExtendedEchoReply": 43},
    6: {"DestinationUnreachable": 1, "PacketTooBig": 2, "TimeExceeded": 3, "ParameterProblem": 4,
        "EchoRequest": 128, "EchoReply": 129, "MulticastListenerQuery": 130, "MulticastListenerReport": 131,
        "MulticastListenerDone": 132, "RouterSolicitation": 133, "RouterAdvertisement": 134,
        "NeighborSolicitation": 135, "NeighborAdvertisement": 136, "RedirectMessage": 137,
        "RouterRenumbering": 138, "ICMPNodeInformationQuery": 139, "ICMPNodeInformationResponse": 140,
        "InverseNeighborDiscoverySolicitation": 141, "InverseNeighborDiscoveryAdvertisement": 142,
        "HomeAgentAddressDiscoveryRequest": 144, "HomeAgentAddressDiscoveryReply": 145,
        "MobilePrefixSolicitation": 146, "MobilePrefixAdvertisement": 147,
        "DuplicateAddressRequestCodeSuffix": 157, "DuplicateAddressConfirmationCodeSuffix": 158,
        "ExtendedEchoRequest": 160, "ExtendedEchoReply": 161},
}


def parse_cidr(r: FieldReader, value, path: tuple, bare_ip_ok: bool):
    text = r.text(value, path, "CIDR")
    try:
        if "/" not in text:
            if not bare_ip_ok:
                r.fail(path, f"{text!r} is not in prefix notation (a.b.c.d/n or x::/n)")
            ip = ipaddress.ip_address(text)
            return ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        r.fail(path, f"invalid CIDR {text!r}")

def policy_cidr(r: FieldReader, value, path: tuple, bare_ip_ok: bool):
    """A CIDR of a policy rule; an IPv4-mapped IPv6 one is kept as written (Cilium keeps the families
    apart, so it matches only IPv6 packets carrying such addresses) but warned about: it never matches
    the IPv4 traffic its author meant."""
    net = parse_cidr(r, value, path, bare_ip_ok)
    if unmapped(net) != net:
        r.warn(path, f"{value} is an IPv4-mapped IPv6 prefix: it matches no IPv4 packet (traffic to "
                     f"{unmapped(net)} carries IPv4 addresses, which Cilium keeps apart from IPv6); write "
                     f"{unmapped(net)} (R1.24b)", "ipv4-mapped-cidr")
    return net


def parse_cidr_rule(r: FieldReader, value, path: tuple, cidr_key: str = "cidr") -> CIDRPeer:
    """A CIDRRule (R1.25, R1.26) or a KNP ipBlock (R12.5)."""
    obj = r.mapping(value, path, (cidr_key, "except"))
    if cidr_key not in obj:
        if any(key in UNSUPPORTED for key in obj):
            raise Invalid  # a CIDR group instead of a cidr: already reported as unsupported
        r.fail(path, f"missing field {cidr_key!r}")
    net = policy_cidr(r, obj[cidr_key], path + (cidr_key,), bare_ip_ok=False)
    excepts = []
    for i, ex in enumerate(r.sequence(obj, "except", path)):
        where = path + ("except", i)
        sub = policy_cidr(r, ex, where, bare_ip_ok=False)
        if sub.version != net.version:
            r.fail(where, f"except {sub} is not the same address family as {net}")
        if not sub.subnet_of(net):
            r.fail(where, f"except {sub} is outside its CIDR {net}")
        excepts.append(sub)
    return CIDRPeer(net, tuple(sorted(set(excepts), key=lambda n: (n.network_address, n.prefixlen))))

def parse_fqdn(r: FieldReader, value, path: tuple) -> FQDNPeer:
    obj = r.mapping(value, path, ("matchName", "matchPattern"))
    if ("matchName" in obj) == ("matchPattern" in obj):
        r.fail(path, "needs exactly one of matchName or matchPattern")
    key = "matchName" if "matchName" in obj else "matchPattern"
    name = r.text(obj[key], path + (key,)).lower()
    pattern = _DNS_NAME if key == "matchName" else _DNS_PATTERN
    if not pattern.match(name):
        r.fail(path + (key,), f"{name!r} is not a valid DNS {'name' if key == 'matchName' else 'pattern'}")
    name = name.rstrip(".")
    return FQDNPeer(match_name=name) if key == "matchName" else FQDNPeer(match_pattern=name)

def parse_port_number(r: FieldReader, value, path: tuple, allow_names: bool) -> tuple[int, str | None]:
    """(number, None) or (0, name) for a named port (R1.17); YAML may give ints or strings."""
    if isinstance(value, bool) or value is None:
        r.fail(path, f"port must be a number or a port name, not {kind_of(value)}")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        r.fail(path, f"port must be a number or a port name, not {kind_of(value)}")
    if re.fullmatch(r"-?[0-9]+", text):
        number = _go_port(r, text, path)
        if not 0 <= number <= 65535:
            r.fail(path, f"port {number} is out of range 0-65535")
        return number, None
    if allow_names and _IANA_NAME.match(text.lower()):
        return 0, text.lower()
    r.fail(path, f"port {value!r} is neither a number 0-65535 nor a valid port name "
                 "(letters, digits and single hyphens, at most 15 characters)")

def _go_port(r: FieldReader, text: str, path: tuple) -> int:
    """Cilium parses port strings with Go's ParseUint(s, 0, 16): a leading 0 means octal ("010" is 8)."""
    if len(text) < 2 or not text.startswith("0"):
        return int(text)
    if not re.fullmatch(r"0[0-7]+", text):
        r.fail(path, f"port {text!r} is not a valid octal number (Cilium reads a leading 0 as octal)")
    number = int(text, 8)
    if number != int(text):
        r.warn(path, f"port {text!r} is octal to Cilium: port {number}, not {int(text)}", "octal-port")
    return number

def port_range(r: FieldReader, obj: dict, path: tuple, number: int, knp: bool = False) -> tuple[int, int]:
    """[port, endPort]; an endPort below port is the single port in Cilium, an error in Kubernetes (R8.3)."""
    if number == 0:
        return 0, 65535  # R5.7, R8.7: port 0 means every port
    end = obj.get("endPort")
    if end is None:
        return number, number
    if isinstance(end, bool) or not isinstance(end, int):
        r.fail(path + ("endPort",), f"endPort must be a number, not {kind_of(end)}")
    if not 0 <= end <= 65535:
        r.fail(path + ("endPort",), f"endPort {end} is out of range 0-65535")
    if end and end < number:
        if knp:  # the API server's NetworkPolicy validation rejects it
            r.fail(path + ("endPort",), f"endPort {end} is less than port {number}")
        r.warn(path + ("endPort",), f"endPort {end} is less than port {number}: Cilium accepts this and "
                                    f"matches the single port {number} (R8.3)", "endport-below-port")
    return number, max(end, number)

EXTENDED_PROTOCOLS = ("VRRP", "IGMP", "GRE", "IPIP", "IPV6", "ESP", "AH")  # V7: IP protocols without ports


def parse_protocol(r: FieldReader, value, path: tuple, knp: bool) -> tuple[Protocol, ...]:
    """CNP: TCP/UDP/SCTP/ANY, ANY = TCP+UDP+SCTP (R1.18, R8.2); KNP: TCP/UDP/SCTP, default TCP.

    Both CRDs take upper case only: Cilium's Go code would upper-case ``tcp``, but the API server
    rejects the object first (R1.1c), so lower case is an error, not a silent fix-up.
    """
    if value is None or value == "":
        return (Protocol.TCP,) if knp else (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
    text = r.text(value, path, "protocol")
    choices = ("TCP", "UDP", "SCTP") if knp else ("TCP", "UDP", "SCTP", "ANY")
    if not knp and text.upper() in EXTENDED_PROTOCOLS:
        r.fail(path, f"protocol {text!r} is an extended IP protocol (no port; Cilium needs the agent option "
                     "enable-extended-ip-protocols, V7) that policyc does not model: its verdicts would be wrong",
                     "unsupported-protocol")
    if text not in choices:
        schema = "NetworkPolicy's protocol is" if knp else "the CRD's enum is"
        hint = f"; write {text.upper()!r}: {schema} upper case and the API server rejects {text!r}" \
            if text.upper() in choices else ""
        r.fail(path, f"unknown protocol {text!r}: expected one of {', '.join(choices)}{hint}", "invalid-protocol")
    if text == "ANY":
        return (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
    return (Protocol[text],)

def parse_icmps(r: FieldReader, items: list, path: tuple) -> tuple[PortMatch, ...]:
    out = []
    for i, item in enumerate(items):
        where = path + (i,)
        obj = r.mapping(item, where, ("fields",))
        fields = r.sequence(obj, "fields", where)
        if len(fields) > MAX_PORTS:
            r.fail(where + ("fields",), f"at most {MAX_PORTS} ICMP fields, found {len(fields)}")
        for j, f in enumerate(fields):
            fwhere = where + ("fields", j)
            f = r.mapping(f, fwhere, ("family", "type"))
            family = f.get("family") or "IPv4"
            if family not in ("IPv4", "IPv6"):
                r.fail(fwhere + ("family",), f"family must be IPv4 or IPv6, not {family!r}")
            version = 4 if family == "IPv4" else 6
            t = f.get("type")
            if isinstance(t, str) and t in ICMP_TYPES[version]:
                number = ICMP_TYPES[version][t]
            elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 255:
                number = t
            elif isinstance(t, str) and t.isdigit() and int(t) <= 255:
                number = int(t)
            else:
                close = difflib.get_close_matches(str(t), ICMP_TYPES[version], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                r.fail(fwhere + ("type",), f"invalid {family} ICMP type {t!r}: a number 0-255 or a "
                                           f"{family} type name{hint}")
            out.append(PortMatch(Protocol.ICMP if version == 4 else Protocol.ICMPV6, number, number))
    return tuple(dict.fromkeys(out))
