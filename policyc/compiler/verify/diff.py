"""Semantic diff of two policy sets: which traffic a change newly allows or newly denies.

Changes are computed per enforcement point (the source's egress, the
destination's ingress): a flow's verdict there either changed or not, and
only subjects that a changed rule or default-deny could select are looked at
(``prefilter``), so unchanged parts of a large policy set cost nothing.

Each change is one group: the flows whose verdict changed for the same
reason on both sides (the same deciding rules, default-deny or lack of it).
Z3 finds a flow, the concrete evaluator names its reason, the whole group is
blocked and the search goes on; the group's ports are found per elementary
port interval of the rules involved.
"""
from __future__ import annotations

from dataclasses import dataclass

import z3

from .. import explain
from ..cliselector import format_peer, format_selector
from ..evaluate import DirectionVerdict, Evaluator, Reason
from ..inventory import Inventory
from ..ir import Action, Direction, PolicySet, Protocol, Rule
from . import prefilter
from .encode import FLOW_PROTOCOLS, Space, SymbolicFlow, new_flow, space_for
from .findings import Finding, Location, Witness, rule_location

MAX_GROUPS = 200
MAX_INTERVALS = 256


@dataclass(frozen=True)
class Change:
    widened: bool
    direction: Direction
    subject: str
    peer: str
    ports: tuple[str, ...]
    cause: str
    location: Location | None
    witness: Witness
    connection: bool  # some flow of the group also changes whether the connection is made (both sides)

    def finding(self) -> Finding:
        verb = "newly allowed" if self.widened else "newly denied"
        msg = (f"{verb}: {self.direction.value} of {self.subject}, peer {self.peer}, "
               f"ports {', '.join(self.ports) or '-'} ({self.cause})")
        if not self.connection:
            other = "ingress" if self.direction is Direction.EGRESS else "egress"
            msg += (f"; no connection changes: the {other} side "
                    + ("still denies these flows" if self.widened else "already denied them"))
        return Finding("PC020" if self.widened else "PC021", msg, self.location, "", (), self.witness,
                       key=f"{self.direction.value}|{self.subject}|{self.peer}|{','.join(self.ports)}")


def _rule_key(r: Rule) -> tuple:
    return (r.subject, r.subject_kind, r.direction, r.action, frozenset(r.peers), frozenset(r.ports), r.auth)


def _dd_key(d) -> tuple:
    return (d.subject, d.subject_kind, d.direction)


def _relevant(old: PolicySet, new: PolicySet, direction: Direction) -> tuple[PolicySet, PolicySet] | None:
    """The parts of both sets whose subjects a changed rule or default-deny could share; None if nothing changed."""
    old_rules = {_rule_key(r) for r in old.rules_for(direction)}
    new_rules = {_rule_key(r) for r in new.rules_for(direction)}
    old_dd = {_dd_key(d) for d in old.default_deny if d.direction is direction}
    new_dd = {_dd_key(d) for d in new.default_deny if d.direction is direction}
    changed = [(k[1], k[0]) for k in (old_rules ^ new_rules) | (old_dd ^ new_dd)]
    if not changed:
        return None

    def near(item) -> bool:
        return any(item.subject_kind is kind and not prefilter.selectors_disjoint(item.subject, sel)
                   for kind, sel in changed)

    def part(ps: PolicySet) -> PolicySet:
        return PolicySet(tuple(r for r in ps.rules_for(direction) if near(r)),
                         tuple(d for d in ps.default_deny if d.direction is direction and near(d)), ps.policies,
                         ps.cluster)
    return part(old), part(new)


class _Side:
    """One policy set's decision in one direction, with the pieces a reason is made of."""

    def __init__(self, space: Space, policy: PolicySet, direction: Direction, flow: SymbolicFlow):
        subject, _ = space.sides(flow, direction)
        self.rules = {r: space.rule_matches(r, flow) for r in policy.rules}
        self.deny = z3.Or([e for r, e in self.rules.items() if r.action is Action.DENY])
        self.allow = z3.Or([e for r, e in self.rules.items() if r.action is Action.ALLOW])
        self.dd = space.default_deny(policy.default_deny, direction, subject)
        self.enforced = space.enforced(direction, flow)
        self.allowed = z3.Or(z3.Not(self.enforced), z3.And(z3.Not(self.deny), z3.Or(z3.Not(self.dd), self.allow)))

    def reason(self, v: DirectionVerdict) -> z3.BoolRef:
        """The set of flows decided for the same reason as ``v`` (by any of the same rules)."""
        deciding = z3.Or([self.rules[r] for r in v.rules if r in self.rules])
        decided = z3.And(self.enforced, z3.Not(self.deny))
        if v.reason is Reason.DENIED:
            return z3.And(self.enforced, deciding)
        if v.reason is Reason.ALLOWED:
            return z3.And(decided, self.dd, deciding)
        if v.reason is Reason.DEFAULT_DENY:
            return z3.And(decided, self.dd, z3.Not(self.allow))
        if v.reason is Reason.NOT_ENFORCED:
            return z3.And(decided, z3.Not(self.dd))
        return z3.Not(self.enforced)


def _describe(v_old: DirectionVerdict, v_new: DirectionVerdict, widened: bool) -> tuple[str, str, str, Location | None]:
    """subject, peer and cause of a group, from the rule that makes the difference."""
    if widened:
        rules = v_new.rules if v_new.reason is Reason.ALLOWED else v_old.rules
        what = ("allowed by " if v_new.reason is Reason.ALLOWED else "no longer denied by ") if rules else ""
    else:
        rules = v_new.rules if v_new.reason is Reason.DENIED else v_old.rules
        what = ("denied by " if v_new.reason is Reason.DENIED else "no longer allowed by ") if rules else ""
    if rules:
        rule = rules[0]
        peers = " | ".join(format_peer(p) for p in rule.peers)
        return format_selector(rule.subject), peers, what + explain.rule_ref(rule), rule_location(rule)
    side = v_new if v_new.default_deny else v_old
    dd = side.default_deny[0] if side.default_deny else None
    cause = {Reason.NOT_ENFORCED: "no policy puts it in default-deny any more",
             Reason.DEFAULT_DENY: "default-deny now applies"}.get(v_new.reason, v_new.reason.value)
    subject = format_selector(dd.subject) if dd else v_new.subject.display
    return subject, "any", cause, Location.of(dd.origin) if dd else None


def _intervals(rules) -> list[tuple[int, int]]:
    cuts = {0, 65536}
    for r in rules:
        for pm in r.ports:
            if pm.name is None and pm.protocol is not Protocol.ANY:
                cuts.update((pm.first, pm.last + 1))
    cuts = sorted(cuts)
    return list(zip(cuts, [c - 1 for c in cuts[1:]]))


def _port_text(proto: Protocol, lo: int, hi: int) -> str:
    if (lo, hi) == (0, 65535):
        return f"*/{proto.label}"
    return f"{lo}/{proto.label}" if lo == hi else f"{lo}-{hi}/{proto.label}"


def _ports(solver: z3.Solver, flow: SymbolicFlow, group: z3.BoolRef, rules) -> tuple[str, ...]:
    """The group's protocols and ports, merged into ranges."""
    spans = _intervals(rules)
    if len(spans) > MAX_INTERVALS:
        return ()
    out = []
    for proto in FLOW_PROTOCOLS:
        solver.push()
        solver.add(group, flow.protocol == int(proto))
        if solver.check() == z3.sat:
            hits = []
            for lo, hi in spans:
                if solver.check(z3.ULE(lo, flow.port), z3.ULE(flow.port, hi)) == z3.sat:
                    if hits and hits[-1][1] == lo - 1:
                        hits[-1] = (hits[-1][0], hi)
                    else:
                        hits.append((lo, hi))
            out += [_port_text(proto, lo, hi) for lo, hi in hits]
        solver.pop()
    return tuple(out)


def _direction_changes(old: PolicySet, new: PolicySet, direction: Direction,
                       inventory: Inventory | None) -> list[Change]:
    parts = _relevant(old, new, direction)
    if parts is None:
        return []
    old_d, new_d = parts
    other = Direction.INGRESS if direction is Direction.EGRESS else Direction.EGRESS
    space = space_for(old_d.rules + new_d.rules + old.rules_for(other) + new.rules_for(other),
                      old_d.default_deny + new_d.default_deny + old.default_deny + new.default_deny,
                      new.cluster, inventory)
    solver = z3.Solver()
    flow = new_flow(space, solver)
    solver.add(z3.Not(flow.same))
    a, b = _Side(space, old_d, direction, flow), _Side(space, new_d, direction, flow)
    # A connection needs both sides: a widening counts when the new policy's other side lets the flow
    # through, a narrowing when the old one did.
    other_allows = {True: space.direction_allows(new, other, flow), False: space.direction_allows(old, other, flow)}
    ev_old, ev_new = Evaluator(old), Evaluator(new)
    out = []
    for widened in (True, False):
        solver.push()
        solver.add(b.allowed if widened else a.allowed, z3.Not(a.allowed if widened else b.allowed))
        while len(out) < MAX_GROUPS and solver.check() == z3.sat:
            model = solver.model()
            concrete = flow.decode(model)
            side = "egress" if direction is Direction.EGRESS else "ingress"
            v_old = getattr(ev_old.evaluate(concrete), side)
            v_new = getattr(ev_new.evaluate(concrete), side)
            group = z3.And(a.reason(v_old), b.reason(v_new))
            if not z3.is_true(model.eval(group, model_completion=True)):
                raise AssertionError(f"encoding and evaluator disagree on {concrete}")  # never loop forever
            subject, peer, cause, location = _describe(v_old, v_new, widened)
            ports = _ports(solver, flow, group, old_d.rules + new_d.rules)
            connection = solver.check(group, other_allows[widened]) == z3.sat
            if connection:  # the witness shows a connection that really changes
                concrete = flow.decode(flow.minimal_model(solver, group, other_allows[widened]))
                v_new = getattr(ev_new.evaluate(concrete), side)
            matching = tuple(r.id for r in v_new.rules)
            out.append(Change(widened, direction, subject, peer, ports, cause, location,
                              Witness(concrete, direction, v_new.allowed, matching), connection))
            solver.add(z3.Not(group))
        solver.pop()
    return out


def semantic_diff(old: PolicySet, new: PolicySet, inventory: Inventory | None = None) -> list[Change]:
    """Every group of traffic whose verdict differs, egress groups first."""
    return [c for d in (Direction.EGRESS, Direction.INGRESS) for c in _direction_changes(old, new, d, inventory)]


def render_markdown(changes: list[Change]) -> str:
    """A pull-request comment: one table per kind of change."""
    if not changes:
        return "### policyc diff\n\nNo change in allowed traffic.\n"
    lines = ["### policyc diff", ""]
    for widened, title in ((True, "Newly allowed"), (False, "Newly denied")):
        rows = [c for c in changes if c.widened is widened]
        if not rows:
            continue
        lines += [f"#### {title} ({len(rows)})", "", "| direction | subject | peer | ports | because | example |",
                  "|---|---|---|---|---|---|"]
        for c in rows:
            f = c.witness.flow
            example = f"{f.src.display} → {f.dst.display} {f.port}/{f.protocol.label}"
            cause = c.cause if c.connection else f"{c.cause}; the other side decides as before, no connection changes"
            cells = [c.direction.value, f"`{c.subject}`", f"`{c.peer}`", ", ".join(c.ports) or "-", cause, example]
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        lines.append("")
    return "\n".join(lines)
