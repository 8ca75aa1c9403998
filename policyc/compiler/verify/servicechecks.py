"""Checks about Services (they need ``--inventory`` with Services and EndpointSlices).

Policy is decided after kube-proxy's translation, against the backend (R7.8): a CIDR written over a
Service address never matches a connection to the Service, and a ``toServices`` entry that names no
Service of the cluster allows nothing.  Both are silent in Cilium; here they are findings.
"""
from __future__ import annotations

from ..ir import Action, CIDRPeer, Rule
from ..services import is_service_peer, matching
from .findings import Finding, Location


def _finding(check: str, rule: Rule, message: str, key: str) -> Finding:
    return Finding(check, message, Location.of(rule.origin), f"{rule.origin.policy_kind} {rule.origin.policy}",
                   (), None, key)


def check_cidr_services(ctx) -> list[Finding]:
    """PC022: a CIDR (other than a default route, which means the world) over Service addresses."""
    if ctx.inventory is None:
        return []
    addresses = [(ip, s) for s in ctx.inventory.services for ip in s.frontends]
    out = []
    for rule in ctx.policy.rules:
        for peer in rule.peers:
            if not isinstance(peer, CIDRPeer) or peer.network.prefixlen == 0:
                continue
            inside = [(ip, s) for ip, s in addresses if peer.contains(ip)]
            if inside:
                ip, service = inside[0]
                out.append(_finding("PC022", rule, f"{peer} covers {len(inside)} Service address(es) (e.g. {ip} "
                                                   f"of {service.display}); connections to a Service are decided "
                                                   "against its backends, so this CIDR never matches them",
                                    str(peer)))
    return out


def check_unmatched_services(ctx) -> list[Finding]:
    """PC023: a toServices entry of an allow rule that no Service of the inventory matches."""
    if ctx.inventory is None:
        return []
    return [_finding("PC023", rule, f"toServices {peer.service} matches no Service of the inventory: the entry "
                                    "allows nothing until such a Service exists", str(peer.service))
            for rule in ctx.policy.rules if rule.action is Action.ALLOW
            for peer in rule.peers if is_service_peer(peer) and not matching(peer.service, ctx.inventory.services)]
