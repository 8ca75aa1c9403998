"""Verdicts as text and JSON: the "why" a user reads."""
from __future__ import annotations

import textwrap
from dataclasses import replace

from .cliselector import format_peer
from .evaluate import DirectionVerdict, Reason, Verdict
from .ir import Direction, Rule

WIDTH = 100  # explanation lines wrap here, continuation lines indented
_REASONS = {
    Reason.SELF: "traffic to itself never meets policy",
    Reason.NOT_ENDPOINT: "not a cluster endpoint: nothing enforces here",
    Reason.LOCALHOST: "the local node may always reach its pods (allow-localhost)",
    Reason.NOT_ENFORCED: "no policy puts this direction in default-deny",
    Reason.DENIED: "denied by",
    Reason.ALLOWED: "allowed by",
    Reason.DEFAULT_DENY: "default deny: no allow rule matches (default-deny from",
    Reason.AUTH_REQUIRED: "the mutual-authentication handshake fails, required by",
    Reason.REQUEST_DENIED: "the L7 proxy refuses this request; the connection is allowed by",
    Reason.NO_PACKET: "no such packet: ICMP needs IPv4 and ICMPv6 needs IPv6 at both ends",
}


def reason_text(reason: Reason) -> str:
    return _REASONS[reason]


def rule_ref(rule: Rule) -> str:
    o = rule.origin
    return f"{o.policy_kind} {o.policy} {o.path} ({o})"


def rule_json(rule: Rule) -> dict:
    o = rule.origin
    return {"id": rule.id, "kind": o.policy_kind, "namespace": o.namespace, "name": o.name,
            "path": o.path, "file": o.file, "line": o.line, "column": o.column}


def direction_text(v: DirectionVerdict) -> str:
    head = f"{v.direction.value:<7} {v.subject.display}: {v.action.value}, {_REASONS[v.reason]}"
    if v.rules and v.reason is not Reason.DEFAULT_DENY:
        head += " " + "; ".join(rule_ref(r) for r in v.rules)
    elif v.reason is Reason.DEFAULT_DENY:
        head += " " + "; ".join(f"{d.origin.policy_kind} {d.origin.policy} ({d.origin})"
                                for d in v.default_deny) + ")"
    if v.l7:
        head += f"; requests filtered by {', '.join(sorted({l.kind for l in v.l7}))} L7 rules (by Cilium's proxy)"
    return head


def ports_text(ports) -> str:
    """A rule's ports as the command line writes them (``80/TCP``, ``*/any``), L7 filters in words."""
    def one(pm) -> str:
        plain = str(replace(pm, l7=None))
        return f"{plain} with {pm.l7.kind.upper() if pm.l7.kind in ('http', 'dns') else pm.l7.kind} rules" \
            if pm.l7 else plain
    return ", ".join(one(pm) for pm in ports)


def near_miss_text(rule: Rule, missed: str, v: Verdict) -> str:
    """One rule that would have allowed the flow but for its port or its peer."""
    f = v.flow
    if missed == "port":
        return (f"{rule_ref(rule)} would have allowed this but for port {f.port}/{f.protocol.label} "
                f"(it allows {ports_text(rule.ports)})")
    peers = " | ".join(format_peer(p) for p in rule.peers)
    side = "from" if rule.direction is Direction.INGRESS else "to"
    return f"{rule_ref(rule)} allows this port, but only {side} {peers}"


def verdict_text(v: Verdict, near: dict | None = None) -> str:
    """The verdict, each side's reason and, for a default deny, the rules that nearly matched
    (``near``: direction -> [(rule, "port" | "peer")]); lines wrap at WIDTH."""
    f = v.flow
    port = f"{f.port}/{f.protocol.label}"
    lines = [f"{f.src.display} -> {f.dst.display} {port}: {v.action.value.upper()}"]
    for d in (v.egress, v.ingress):
        lines.append("  " + direction_text(d))
        lines += ["    near miss: " + near_miss_text(rule, why, v) for rule, why in (near or {}).get(d.direction, ())]
    return "\n".join(textwrap.fill(line, WIDTH, subsequent_indent=" " * (len(line) - len(line.lstrip()) + 4),
                                    break_on_hyphens=False, break_long_words=False) for line in lines)


def verdict_json(v: Verdict) -> dict:
    f = v.flow

    def side(d: DirectionVerdict) -> dict:
        return {"subject": d.subject.display, "verdict": d.action.value, "reason": d.reason.value,
                "rules": [rule_json(r) for r in d.rules],
                "default_deny_from": [{"policy": x.origin.policy, "file": x.origin.file, "line": x.origin.line}
                                      for x in d.default_deny],
                "l7": sorted({l.kind for l in d.l7})}

    return {"from": f.src.display, "to": f.dst.display, "port": f.port, "protocol": f.protocol.label,
            "verdict": v.action.value, "egress": side(v.egress), "ingress": side(v.ingress)}
