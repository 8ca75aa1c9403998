"""Translation validation: the kernel's verdicts on crafted packets against the concrete evaluator's.

For every probe the packet runs through each hook it would meet, and each
hook's verdict must equal the evaluator's verdict for that direction; the
reply of every allowed probe must pass every hook on its way back.  Nodes are never probed as local subjects: the host firewall is not
compiled, and which node is "host" is decided at load time; remote nodes are probed as peers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..compiler.evaluate import Evaluator, Flow
from ..compiler.inventory import Inventory, external
from ..compiler.ir import Endpoint, EndpointKind, PolicySet, Protocol
from ..compiler.lower import Datapath
from .artifact import open_artifact, read_manifest
from .testrun import Hooks, HookResult

ICMP_REPLY = {(Protocol.ICMP, 8): 0, (Protocol.ICMPV6, 128): 129}
FIRST_SPORT, SPORTS = 20000, 40000


@dataclass(frozen=True)
class Probe:
    src: Endpoint
    dst: Endpoint
    protocol: Protocol
    port: int

    def __str__(self) -> str:
        return f"{self.src.display} -> {self.dst.display} {self.port}/{self.protocol.label}"


@dataclass(frozen=True)
class Mismatch:
    probe: Probe
    hook: str
    kernel: str
    expected: str
    reply: bool = False

    def __str__(self) -> str:
        what = "reply of " if self.reply else ""
        return f"{what}{self.probe}: {self.hook} said {self.kernel}, the evaluator says {self.expected}"


def _ip_pairs(src: Endpoint, dst: Endpoint):
    """One address pair per family both ends have."""
    for family in (4, 6):
        s = [ip for ip in src.ips if ip.version == family]
        d = [ip for ip in dst.ips if ip.version == family]
        if s and d:
            yield s[0], d[0]


def _pod(ep: Endpoint) -> tuple:
    """The addresses whose hooks a packet meets at this end: a pod's, none for a node or outside."""
    return ep.ips if ep.kind is EndpointKind.POD else ()


def _word(passed: bool) -> str:
    return "allow" if passed else "deny"


def check_probe(hooks: Hooks, evaluator: Evaluator, probe: Probe, sport: int) -> list[Mismatch]:
    verdict = evaluator.evaluate(Flow(probe.src, probe.dst, probe.protocol, probe.port))
    out = []
    for sip, dip in _ip_pairs(probe.src, probe.dst):
        results = hooks.send(sip, dip, probe.protocol, sport, probe.port, _pod(probe.src), _pod(probe.dst),
                             probe.src.kind is EndpointKind.EXTERNAL)
        for r in results:
            want = (verdict.egress if r.hook == "from_pod" else verdict.ingress).allowed
            if r.passed != want:
                out.append(Mismatch(probe, r.hook, _word(r.passed), _word(want)))
        if verdict.allowed:
            out += _check_reply(hooks, probe, sip, dip, sport)
    return out


def _check_reply(hooks: Hooks, probe: Probe, sip, dip, sport: int) -> list[Mismatch]:
    """The answer of an allowed exchange passes every hook (conntrack), whatever the policy says."""
    if probe.protocol in (Protocol.ICMP, Protocol.ICMPV6):
        rsport, rdport = sport, ICMP_REPLY.get((probe.protocol, probe.port), probe.port)
    else:
        rsport, rdport = probe.port, sport
    results: list[HookResult] = hooks.send(dip, sip, probe.protocol, rsport, rdport, _pod(probe.dst),
                                           _pod(probe.src), probe.dst.kind is EndpointKind.EXTERNAL)
    return [Mismatch(probe, r.hook, "deny", "allow", reply=True) for r in results if not r.passed]


def run_probes(directory: Path, policy: PolicySet, probes: list[Probe], opener=open_artifact) -> list[Mismatch]:
    """Load the artifact once (``opener``: its object file, or bcc_loader.compile_and_load), run every
    probe (unique source ports keep conntrack entries apart)."""
    evaluator = Evaluator(policy)
    features = read_manifest(directory)["features"]
    obj = opener(directory)
    try:
        hooks = Hooks(obj, features)
        out = []
        for n, probe in enumerate(probes):
            if probe.src != probe.dst:
                out += check_probe(hooks, evaluator, probe, FIRST_SPORT + n % SPORTS)
        return out
    finally:
        obj.close()


# ---- probes for `policyc compile --validate` ----

def region_address(net, others, taken):
    """An address of ``net`` outside every more specific prefix of ``others`` and every endpoint address."""
    inner = [o for o in others if o != net and o.version == net.version and o.subnet_of(net)]
    candidates = [net.network_address, net.broadcast_address]
    for o in inner:
        candidates += [o.network_address - 1, o.broadcast_address + 1]
    for ip in candidates:
        if ip in net and ip not in taken and not any(ip in o for o in inner):
            return ip
    return None


def outside_endpoints(dp: Datapath, inventory: Inventory) -> list[Endpoint]:
    """One external address per world/CIDR region of the ipcache."""
    nets = [e.network for e in dp.ipcache if e.source in ("cidr", "world")]
    taken = {ip for ep in inventory.endpoints for ip in ep.ips}
    ips = [region_address(n, nets, taken) for n in nets]
    return [external(ip) for ip in dict.fromkeys(ip for ip in ips if ip is not None)]


def interesting_ports(policy: PolicySet, inventory: Inventory) -> list[tuple[Protocol, int]]:
    """Every rule port edge (first, last and their neighbours) and named port, plus 80 on TCP and UDP."""
    out = {(Protocol.TCP, 80), (Protocol.UDP, 80)}
    for r in policy.rules:
        for pm in r.ports:
            protos = (Protocol.TCP, Protocol.UDP) if pm.protocol is Protocol.ANY else (pm.protocol,)
            numbers = [np.port for ep in inventory.pods for np in ep.ports if np.name == pm.name] if pm.name \
                else [pm.first, pm.last, pm.first - 1, pm.last + 1]
            limit = 255 if pm.protocol in (Protocol.ICMP, Protocol.ICMPV6) else 65535
            out |= {(p, n) for p in protos for n in numbers if 0 <= n <= limit}
    return sorted(out)


def default_probes(policy: PolicySet, inventory: Inventory, dp: Datapath) -> list[Probe]:
    """Pods, remote nodes (nodes running none of the pods) and one address per world/CIDR region."""
    local = {p.node for p in inventory.pods}
    remote = [n for n in inventory.nodes if n.name not in local]
    peers = list(inventory.pods) + remote + outside_endpoints(dp, inventory)
    return [Probe(s, d, proto, port) for proto, port in interesting_ports(policy, inventory)
            for s in peers for d in peers
            if s != d and (s.kind is EndpointKind.POD or d.kind is EndpointKind.POD)]
