"""Checks about Services (they need ``--inventory`` with Services and EndpointSlices).

Policy is decided after kube-proxy's translation, against the backend (R7.8): a CIDR written over a
Service address never matches a connection to the Service, and a ``toServices`` entry that names no
Service of the cluster allows nothing.  Both are silent in Cilium; here they are findings.
"""
from __future__ import annotations

import ipaddress

from ..ir import Action, CIDRPeer, Rule
from ..prefixes import PrefixIndex
from ..services import is_service_peer, matching
from .findings import Finding, Location


def _finding(check: str, rule: Rule, message: str, key: str) -> Finding:
    return Finding(check, message, Location.of(rule.origin), f"{rule.origin.policy_kind} {rule.origin.policy}",
                   (), None, key)


def cidr_covers(rules, held: list[tuple]):
    """``(rule, peer, [(address, owner), ...])`` for each CIDR peer (a default route, which means the world,
    left out) that covers some of ``held``: addresses its CIDR can never select, in ``held``'s order.
    The addresses inside each CIDR come from a prefix index, not a scan of ``held`` per peer."""
    index = PrefixIndex((ipaddress.ip_network(ip), n) for n, (ip, _) in enumerate(held))
    for rule in rules:
        for peer in rule.peers:
            if isinstance(peer, CIDRPeer) and peer.network.prefixlen != 0:
                inside = [held[n] for n in sorted(index.within(peer.network)) if peer.contains(held[n][0])]
                if inside:
                    yield rule, peer, inside


def check_cidr_services(ctx) -> list[Finding]:
    """PC022: a CIDR over Service addresses."""
    if ctx.inventory is None:
        return []
    held = [(ip, s) for s in ctx.inventory.services for ip in s.frontends]
    return [_finding("PC022", rule, f"{peer} covers {len(inside)} Service address(es) (e.g. {inside[0][0]} of "
                                    f"{inside[0][1].display}); connections to a Service are decided against its "
                                    "backends, so this CIDR never matches them", str(peer))
            for rule, peer, inside in cidr_covers(ctx.policy.rules, held)]


def check_unmatched_services(ctx) -> list[Finding]:
    """PC023: a toServices entry of an allow rule that no Service of the inventory matches."""
    if ctx.inventory is None:
        return []
    return [_finding("PC023", rule, f"toServices {peer.service} matches no Service of the inventory: the entry "
                                    "allows nothing until such a Service exists", str(peer.service))
            for rule in ctx.policy.rules if rule.action is Action.ALLOW
            for peer in rule.peers if is_service_peer(peer) and not matching(peer.service, ctx.inventory.services)]
