"""The NAT and filter rules kube-proxy writes in iptables mode (and its nftables table), for a node of
the netns model.

The shapes follow kube-proxy's iptables proxier (pkg/proxy/iptables/proxier.go and the dumps its
tests expect): ``KUBE-SERVICES`` from PREROUTING and OUTPUT, one ``KUBE-SVC-*`` chain per Service
port that picks an endpoint with ``statistic --mode random``, one ``KUBE-SEP-*`` chain per endpoint
that marks hairpin traffic for masquerade and DNATs, ``KUBE-NODEPORTS`` behind the last
``KUBE-SERVICES`` rule (``addrtype --dst-type LOCAL``), ``KUBE-EXT-*`` marking external traffic
(``externalTrafficPolicy: Cluster``), and ``KUBE-POSTROUTING`` masquerading what carries mark 0x4000.
A Service port with no ready endpoint gets no nat rule at all: the filter table REJECTs it
(``filter_rules``: ``KUBE-SERVICES`` from FORWARD and OUTPUT for its ClusterIP, ``KUBE-EXTERNAL-SERVICES``
from INPUT and FORWARD for its external IPs and NodePort, each "<svc> has no endpoints"), so the client is
refused with an ICMP port unreachable instead of waiting. Chain names are kube-proxy's hashes.
Endpoints are read from the EndpointSlices themselves (ready ones, matched by port name), not from
policyc's own backend resolution, so the datapath under test is fed what kube-proxy would feed it.
"""
from __future__ import annotations

import base64
import hashlib

from policyc.compiler.ir import Service, ServicePort

MASQ_MARK = "0x4000"


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def _port_name(service: Service, port: ServicePort) -> str:
    return f"{service.namespace}/{service.name}" + (f":{port.name}" if port.name else "")


def endpoints(service: Service, port: ServicePort, family: int) -> list[tuple[str, int, str]]:
    """``(address, port, host:port)`` of every ready endpoint serving ``port``, as kube-proxy reads
    EndpointSlices (``host:port`` is Go's JoinHostPort, which names its chain)."""
    return [(str(ip), sp.port, f"{ip}:{sp.port}" if family == 4 else f"[{ip}]:{sp.port}")
            for sl in service.slices for sp in sl.ports if sp.name == port.name and sp.protocol is port.protocol
            for e in sl.endpoints if e.ready for ip in e.addresses if ip.version == family]


def _sep(name: str, proto: str, target: str) -> str:
    return f"KUBE-SEP-{_hash(name + proto + target)}"


def nat_rules(services: tuple[Service, ...], cluster_cidr: str, family: int = 4) -> str:
    """``iptables-restore --noflush`` input (``ip6tables-restore`` for family 6) for the nat table."""
    chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    tail = []
    for service in services:
        for port in service.ports:
            name = _port_name(service, port)
            proto = port.protocol.name.lower()
            key = _hash(name + proto)
            svc, ext = f"KUBE-SVC-{key}", f"KUBE-EXT-{key}"
            seps = [(_sep(name, proto, target), addr, target) for addr, _, target in endpoints(service, port, family)]
            if not seps:
                continue  # no endpoints: no nat rule, the filter table rejects it (filter_rules)
            chains += [svc] + [c for c, _, _ in seps]
            for ip in (ip for ip in service.frontends if ip.version == family):
                rules.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" -m {proto} -p {proto} '
                             f"-d {ip} --dport {port.port} -j {svc}")
            rules += [f'-A {svc} -m comment --comment "{name} cluster IP" -m {proto} -p {proto} -d {ip} '
                      f"--dport {port.port} ! -s {cluster_cidr} -j KUBE-MARK-MASQ"
                      for ip in service.cluster_ips if ip.version == family]
            for i, (chain, addr, target) in enumerate(seps):
                left = len(seps) - i
                pick = f"-m statistic --mode random --probability {1 / left:.11f} " if left > 1 else ""
                rules.append(f'-A {svc} -m comment --comment "{name} -> {target}" {pick}-j {chain}')
                rules.append(f'-A {chain} -m comment --comment "{name}" -s {addr} -j KUBE-MARK-MASQ')
                rules.append(f'-A {chain} -m comment --comment "{name}" -m {proto} -p {proto} '
                             f"-j DNAT --to-destination {target}")
            if port.node_port is not None:
                chains.append(ext)
                tail.append(f'-A KUBE-NODEPORTS -m comment --comment "{name}" -m {proto} -p {proto} '
                            f"--dport {port.node_port} -j {ext}")
                rules.append(f'-A {ext} -m comment --comment "masquerade traffic for {name} external '
                             f'destinations" -j KUBE-MARK-MASQ')
                rules.append(f"-A {ext} -j {svc}")
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
                 'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    return "\n".join(["*nat", *(f":{c} - [0:0]" for c in chains), *rules, *tail, "COMMIT", ""])


def filter_rules(services: tuple[Service, ...], family: int = 4) -> str:
    """``iptables-restore --noflush`` input (``ip6tables-restore`` for family 6) for the filter table:
    kube-proxy's REJECT of every Service port with no ready endpoint (its ClusterIPs in ``KUBE-SERVICES``,
    its external IPs and NodePort in ``KUBE-EXTERNAL-SERVICES``) and the jumps to those chains from INPUT,
    FORWARD and OUTPUT (new connections only), as its iptables proxier writes them."""
    new = "-m conntrack --ctstate NEW"
    rules = [
        f'-A INPUT {new} -m comment --comment "kubernetes externally-visible service portals" '
        "-j KUBE-EXTERNAL-SERVICES",
        f'-A FORWARD {new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        f'-A FORWARD {new} -m comment --comment "kubernetes externally-visible service portals" '
        "-j KUBE-EXTERNAL-SERVICES",
        f'-A OUTPUT {new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    ]
    for service in services:
        for port in service.ports:
            if endpoints(service, port, family):
                continue
            name, proto = _port_name(service, port), port.protocol.name.lower()
            comment, match = f'-m comment --comment "{name} has no endpoints"', f"-m {proto} -p {proto}"
            rules += [f"-A KUBE-SERVICES {comment} {match} -d {ip} --dport {port.port} -j REJECT"
                      for ip in service.cluster_ips if ip.version == family]
            rules += [f"-A KUBE-EXTERNAL-SERVICES {comment} {match} -d {ip} --dport {port.port} -j REJECT"
                      for ip in service.external_ips if ip.version == family]
            if port.node_port is not None:
                rules.append(f"-A KUBE-EXTERNAL-SERVICES {comment} -m addrtype --dst-type LOCAL {match} "
                             f"--dport {port.node_port} -j REJECT")
    return "\n".join(["*filter", ":KUBE-SERVICES - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]", *rules, "COMMIT", ""])


def sep_chains(services: tuple[Service, ...], family: int = 4) -> dict[str, tuple[str, int]]:
    """``KUBE-SEP-*`` chain → (endpoint address, port): its packet counter counts the connections
    kube-proxy sent there (nat rules see only a connection's first packet)."""
    out = {}
    for service in services:
        for port in service.ports:
            name, proto = _port_name(service, port), port.protocol.name.lower()
            for addr, number, target in endpoints(service, port, family):
                out[_sep(name, proto, target)] = (addr, number)
    return out


def nft_rules(services: tuple[Service, ...], cluster_cidr: str, family: int = 4) -> str:
    """``nft -f`` input for kube-proxy's nftables mode: table ``ip kube-proxy`` (``ip6 kube-proxy`` for family
    6, as its IPv6 proxier names it, with ``ipv6_addr`` keys, ``ip6`` matches and ``::1`` for localhost) with
    the ``services`` verdict maps, a ``service-*`` chain per Service port picking an endpoint with ``numgen
    random``, and ``endpoint-*`` chains that mark hairpin traffic for masquerade and DNAT, as its nftables
    proxier does. A port with no ready endpoint has no chain: the ``no-endpoint-services`` and
    ``no-endpoint-nodeports`` maps send it to ``reject-chain`` from the filter chains of input, forward and
    output (priority 0), whose bare ``reject`` is an ICMP port unreachable (ICMPv6 in the ip6 table).
    Not modelled: newer kube-proxy's ``cluster-ips-check``, which also rejects a port a ClusterIP lacks and
    drops unallocated addresses of the Service CIDR (here such a packet reaches nf_node's FORWARD drop)."""
    def chain(name: str, *rules: str) -> list[str]:
        return [f"  chain {name} {{", *(f"    {r}" for r in rules), "  }"]

    ipx, addr_type, localhost = ("ip", "ipv4_addr", "127.0.0.0/8") if family == 4 else ("ip6", "ipv6_addr", "::1")
    body = chain("mark-for-masquerade", "meta mark set meta mark | 0x4000")
    body += chain("masquerading", "meta mark & 0x4000 == 0 return", "meta mark set meta mark ^ 0x4000",
                  "masquerade fully-random")
    body += chain("reject-chain", "reject")
    ips, nodeports, no_ips, no_nodeports = [], [], [], []
    for service in services:
        for port in service.ports:
            name, proto = _port_name(service, port), port.protocol.name.lower()
            key = f"{_hash(name + proto)[:8]}-{service.namespace}/{service.name}/{proto}/{port.name}"
            eps = endpoints(service, port, family)
            if not eps:
                no_ips += [f"{ip} . {proto} . {port.port} : goto reject-chain" for ip in service.frontends
                           if ip.version == family]
                no_nodeports += [f"{proto} . {port.node_port} : goto reject-chain"] if port.node_port else []
                continue
            ends = [f"endpoint-{_hash(name + proto + target)[:8]}-{key[9:]}__{addr.replace(':', '.')}/{number}"
                    for addr, number, target in eps]
            for end, (addr, _, target) in zip(ends, eps):
                body += chain(end, f"{ipx} saddr {addr} jump mark-for-masquerade",
                              f"meta l4proto {proto} dnat to {target}")
            masq = [f"{ipx} daddr {ip} {proto} dport {port.port} {ipx} saddr != {cluster_cidr} "
                    "jump mark-for-masquerade" for ip in service.cluster_ips if ip.version == family]
            pick = "numgen random mod %d vmap { %s }" % (len(ends), ", ".join(f"{i} : goto {e}"
                                                                            for i, e in enumerate(ends)))
            body += chain(f"service-{key}", *masq, pick)
            ips += [f'{ip} . {proto} . {port.port} : goto service-{key}' for ip in service.frontends
                    if ip.version == family]
            if port.node_port is not None:
                body += chain(f"external-{key}", "jump mark-for-masquerade", f"goto service-{key}")
                nodeports.append(f'{proto} . {port.node_port} : goto external-{key}')
    for name, kind, elements in (("service-ips", f"{addr_type} . inet_proto . inet_service", ips),
                                 ("service-nodeports", "inet_proto . inet_service", nodeports),
                                 ("no-endpoint-services", f"{addr_type} . inet_proto . inet_service", no_ips),
                                 ("no-endpoint-nodeports", "inet_proto . inet_service", no_nodeports)):
        body += [f"  map {name} {{", f"    type {kind} : verdict", *([f"    elements = {{ {', '.join(elements)} }}"]
                                                                  if elements else []), "  }"]
    local = f"fib daddr type local {ipx} daddr != {localhost}"
    body += chain("services", f"{ipx} daddr . meta l4proto . th dport vmap @service-ips",
                  f"{local} meta l4proto . th dport vmap @service-nodeports")
    body += chain("service-endpoints-check", f"{ipx} daddr . meta l4proto . th dport vmap @no-endpoint-services")
    body += chain("nodeport-endpoints-check", f"{local} meta l4proto . th dport vmap @no-endpoint-nodeports")
    for name, hook, prio, target in (("nat-prerouting", "prerouting", "dstnat", "services"),
                                     ("nat-output", "output", "-100", "services"),
                                     ("nat-postrouting", "postrouting", "srcnat", "masquerading")):
        body += chain(name, f"type nat hook {hook} priority {prio}; policy accept;", f"jump {target}")
    for name, hook, checks in (("filter-forward", "forward", ("service-endpoints-check",)),
                               ("filter-input", "input", ("nodeport-endpoints-check", "service-endpoints-check")),
                               ("filter-output", "output", ("service-endpoints-check",))):
        body += chain(name, f"type filter hook {hook} priority 0; policy accept;",
                      *(f"ct state new jump {c}" for c in checks))
    return "\n".join([f"table {ipx} kube-proxy {{", *body, "}", ""])
