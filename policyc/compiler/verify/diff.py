"""Semantic diff of two policy sets: which traffic a change newly allows or newly denies.

Changes are computed per enforcement point (the source's egress, the
destination's ingress): a flow's verdict there either changed or not, and
only subjects that a changed rule or default-deny could select are looked at
(``prefilter``), so unchanged parts of a large policy set cost nothing.

Each change is one group: the flows whose verdict changed for the same
reason on both sides (the same deciding rules, default-deny or lack of it).
Z3 finds a flow, the concrete evaluator names its reason, the whole group is
blocked and the search goes on; the group's ports are found by bisecting the
elementary port intervals of the rules involved.

The diff is the merge gate's model, so it leaves free what concrete answers
cannot know (``encode``: ``unknowns``): HTTP and DNS requests, the DNS names
toFQDNs peers match, the outcome of mutual authentication.  Widenings that
change a whole connection (the other side lets the flow through too) are
searched first, so a capped search still finds new access before anything
else; every cap that stops a search is reported (``Truncation``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import z3

from .. import explain
from ..cliselector import format_peer, format_selector
from ..evaluate import DirectionVerdict, Evaluator, Reason, sees_lookups
from ..inventory import Inventory
from ..ir import Action, Direction, FQDNPeer, PolicySet, Protocol, Rule, SelectorPeer, SubjectKind
from . import prefilter
from .encode import FLOW_PROTOCOLS, Request, Space, SymbolicFlow, new_flow, space_for
from .findings import Finding, Location, Witness, request_text, rule_location


@dataclass(frozen=True)
class Limits:
    """Caps on one diff's search: groups per direction and kind of change, port intervals per group."""

    max_groups: int = 200
    max_port_intervals: int = 4096


@dataclass(frozen=True)
class Truncation:
    """A search that stopped before it was complete; ``gate`` when it could hide new access."""

    direction: Direction
    widened: bool
    message: str
    gate: bool

    def __str__(self) -> str:
        kind = "widenings" if self.widened else "narrowings"
        return f"{self.direction.value} {kind}: {self.message}"


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
    before: DirectionVerdict | None = None  # the changed side's verdict on the witness, old and new
    after: DirectionVerdict | None = None

    def finding(self) -> Finding:
        verb = "newly allowed" if self.widened else "newly denied"
        msg = (f"{verb}: {self.direction.value} of {self.subject}, peer {self.peer}, "
               f"ports {', '.join(self.ports) or '-'} ({self.cause})")
        if not self.connection:
            other = "ingress" if self.direction is Direction.EGRESS else "egress"
            msg += (f"; no connection changes: the {other} side "
                    + ("still denies these flows" if self.widened else "already denied them"))
        related = tuple(rule_location(r, f"{'opens' if self.widened else 'closes'} it: {explain.rule_ref(r)}")
                        for r in self.deciding[1:])
        return Finding("PC020" if self.widened else "PC021", msg, self.location, "", related, self.witness,
                       key=f"{self.direction.value}|{self.subject}|{self.peer}|{','.join(self.ports)}")

    @property
    def deciding(self) -> tuple[Rule, ...]:
        """The rules that make the difference: the new side's when it allows (or denies), else the old side's."""
        return _deciding(self.before, self.after, self.widened)[0] if self.before and self.after else ()


@dataclass(frozen=True)
class DiffResult:
    changes: tuple[Change, ...]
    truncations: tuple[Truncation, ...] = ()

    @property
    def new_connections(self) -> tuple[Change, ...]:
        """Groups that make a connection possible that was not: what ``--no-new-access`` fails on."""
        return tuple(c for c in self.changes if c.widened and c.connection)

    @property
    def gate_complete(self) -> bool:
        """Whether the search for new connections finished (a cap or Z3 giving up can hide one)."""
        return not any(t.gate for t in self.truncations)


def _rule_key(r: Rule) -> tuple:
    return (r.subject, r.subject_kind, r.direction, r.action, frozenset(r.peers), frozenset(r.ports), r.auth)


def _dd_key(d) -> tuple:
    return (d.subject, d.subject_kind, d.direction)


def _changed(old: PolicySet, new: PolicySet, direction: Direction) -> tuple[list[Rule], list[tuple]] | None:
    """The rules in one set only, and the (subject kind, subject) of default-denies in one set only."""
    old_rules = {_rule_key(r): r for r in old.rules_for(direction)}
    new_rules = {_rule_key(r): r for r in new.rules_for(direction)}
    old_dd = {_dd_key(d) for d in old.default_deny if d.direction is direction}
    new_dd = {_dd_key(d) for d in new.default_deny if d.direction is direction}
    rules = [r for k, r in old_rules.items() if k not in new_rules] + \
            [r for k, r in new_rules.items() if k not in old_rules]
    dds = [(k[1], k[0]) for k in old_dd ^ new_dd]
    return (rules, dds) if rules or dds else None


def _names(rule: Rule) -> bool:
    return any(isinstance(p, FQDNPeer) for p in rule.peers)


def _relevant(ps: PolicySet, direction: Direction, changed: list[Rule], changed_dd: list[tuple]) -> PolicySet:
    """The part of ``ps`` that can decide a flow whose verdict changed in ``direction``.

    A verdict changes only where a changed rule matches the flow or a changed default-deny selects its
    subject.  Every rule matching such a flow meets that changed rule (``rules_overlap``) or shares that
    subject, so only those rules are encoded; an unchanged rule is kept on both sides or on neither,
    so no other flow can seem to change.  The indexes find them without a scan per changed item.
    ``rules_overlap`` reads toFQDNs as matching nothing, as concrete answers do; in the gate's model
    a name may resolve to any address, so a rule with a toFQDNs peer meets every rule of its subjects,
    and the DNS rules of its subjects stay (they decide whether it can match at all, R10.1).
    """
    rules = ps.rules_for(direction)
    dds = tuple(d for d in ps.default_deny if d.direction is direction)
    rule_index, dd_index = prefilter.Index(rules), prefilter.Index(dds)
    keep = {id(r) for c in changed for r in rule_index.overlapping(c)}
    named_index = prefilter.Index([r for r in rules if _names(r)])
    keep |= {id(r) for c in changed
             for r in (rule_index if _names(c) else named_index).near(direction, c.subject_kind, c.subject)}
    keep |= {id(r) for kind, sel in changed_dd for r in rule_index.near(direction, kind, sel)}
    lookups = prefilter.Index([r for r in rules if sees_lookups(r)])  # whether a kept toFQDNs peer can match
    keep |= {id(d) for r in rules if id(r) in keep and _names(r)
             for d in lookups.near(direction, r.subject_kind, r.subject)}
    subjects = [(r.subject_kind, r.subject) for r in changed] + changed_dd
    keep_dd = {id(d) for kind, sel in subjects for d in dd_index.near(direction, kind, sel)}
    return PolicySet(tuple(r for r in rules if id(r) in keep), tuple(d for d in dds if id(d) in keep_dd),
                     ps.policies, ps.cluster)


def _other_end(ps: PolicySet, other: Direction, changed: list[Rule], changed_dd: list[tuple]) -> PolicySet:
    """The part of ``ps`` in the ``other`` direction that can decide a flow of a changed group.

    The other end enforces at the changed rule's peer, against the rule's subject: pods have the same
    labels as subjects and as peers, so an endpoint rule is kept when it meets the changed rule seen
    from that end (subject: its peer selectors, peer: its subject, the same ports).  Peers outside the
    cluster enforce nothing.  A node's labels differ between the two views, so host rules, and every
    rule when a changed rule or default-deny selects the host, are kept whole.
    """
    rules = ps.rules_for(other)
    dds = tuple(d for d in ps.default_deny if d.direction is other)
    if any(c.subject_kind is not SubjectKind.ENDPOINT for c in changed) or changed_dd:
        return PolicySet(rules, dds, ps.policies, ps.cluster)
    mirrors = [replace(c, direction=other, subject=sel, peers=(SelectorPeer((c.subject,)),))
               for c in changed for p in c.peers if isinstance(p, SelectorPeer) for sel in p.selectors]
    rule_index, dd_index = prefilter.Index(rules), prefilter.Index(dds)
    keep = {id(r) for m in mirrors for r in rule_index.overlapping(m)}
    keep |= {id(r) for r in rules if r.subject_kind is not SubjectKind.ENDPOINT}
    keep_dd = {id(d) for m in mirrors for d in dd_index.near(other, SubjectKind.ENDPOINT, m.subject)}
    keep_dd |= {id(d) for d in dds if d.subject_kind is not SubjectKind.ENDPOINT}
    return PolicySet(tuple(r for r in rules if id(r) in keep), tuple(d for d in dds if id(d) in keep_dd),
                     ps.policies, ps.cluster)


class _Side:
    """One policy set's decision in one direction (Evaluator.direction), with the pieces a reason is made of."""

    def __init__(self, space: Space, policy: PolicySet, direction: Direction, flow: SymbolicFlow,
                 request: Request | None):
        subject, _ = space.sides(flow, direction)
        allows = [r for r in policy.rules if r.action is Action.ALLOW]
        names = space.sees_lookups(allows, flow, direction)  # per side: a new DNS rule can wake toFQDNs up
        self.match = {r: space.rule_matches(r, flow, names=names) for r in policy.rules}
        self.admit = {r: space.rule_matches(r, flow, request, names=names) if request else self.match[r]
                      for r in allows}
        self.deny = z3.Or([e for r, e in self.match.items() if r.action is Action.DENY])
        self.allow = z3.Or([self.match[r] for r in allows])
        self.admitted = z3.Or(list(self.admit.values()))
        self.auth = space.authenticated(allows, flow, names)
        self.dd = space.default_deny(policy.default_deny, direction, subject)
        self.enforced = space.enforced(direction, flow)
        # R3.4c: without default deny the proxy still filters the requests of redirected ports
        self.filtered = z3.And(self.allow, z3.Not(self.admitted))
        self.allowed = z3.Or(z3.Not(self.enforced),
                             z3.And(z3.Not(self.deny), z3.If(self.dd, z3.And(self.admitted, self.auth),
                                                             z3.Not(self.filtered))))

    def reason(self, v: DirectionVerdict) -> z3.BoolRef:
        """The set of flows decided for the same reason as ``v`` (by any of the same rules)."""
        def by(table) -> z3.BoolRef:
            return z3.Or([table[r] for r in v.rules if r in table])
        decided = z3.And(self.enforced, z3.Not(self.deny))
        proxied = z3.And(decided, self.dd, self.allow)
        return {
            Reason.DENIED: lambda: z3.And(self.enforced, by(self.match)),
            Reason.ALLOWED: lambda: z3.And(decided, self.dd, self.auth, by(self.admit)),
            Reason.AUTH_REQUIRED: lambda: z3.And(proxied, z3.Not(self.auth), by(self.match)),
            Reason.REQUEST_DENIED: lambda: z3.And(decided, self.filtered, z3.Or(z3.Not(self.dd), self.auth),
                                                  by(self.match)),
            Reason.DEFAULT_DENY: lambda: z3.And(decided, self.dd, z3.Not(self.allow)),
            Reason.NOT_ENFORCED: lambda: z3.And(decided, z3.Not(self.dd), z3.Not(self.filtered)),
        }.get(v.reason, lambda: z3.Not(self.enforced))()


def _deciding(v_old: DirectionVerdict, v_new: DirectionVerdict, widened: bool) -> tuple[tuple[Rule, ...], bool]:
    """The new side's rules when they decide (allow on a widening, deny on a narrowing), else the old side's;
    and whether they are the new side's."""
    now = v_new.reason is Reason.ALLOWED if widened else (v_new.action is Action.DENY and bool(v_new.rules))
    return (v_new.rules, True) if now else (v_old.rules, False)


_WAS = {Reason.DENIED: "no longer denied by ", Reason.AUTH_REQUIRED: "no longer requires authentication: ",
        Reason.REQUEST_DENIED: "its L7 filter now admits the request, was ", Reason.ALLOWED: "no longer allowed by "}
_NOW = {Reason.ALLOWED: "allowed by ", Reason.DENIED: "denied by ", Reason.AUTH_REQUIRED: "requires authentication: ",
        Reason.REQUEST_DENIED: "the request is refused by the L7 filter of "}


def _describe(v_old: DirectionVerdict, v_new: DirectionVerdict, widened: bool) -> tuple[str, str, str, Location | None]:
    """subject, peer and cause of a group, from the rules that make the difference."""
    rules, now = _deciding(v_old, v_new, widened)
    if rules:
        what = (_NOW if now else _WAS).get((v_new if now else v_old).reason, "")
        rule = rules[0]
        peers = " | ".join(format_peer(p) for p in rule.peers)
        return (format_selector(rule.subject), peers, what + "; ".join(explain.rule_ref(r) for r in rules),
                rule_location(rule))
    side = v_new if v_new.default_deny else v_old
    dd = side.default_deny[0] if side.default_deny else None
    cause = {Reason.NOT_ENFORCED: "no policy puts it in default-deny any more",
             Reason.DEFAULT_DENY: "default-deny now applies"}.get(v_new.reason, v_new.reason.value)
    subject = format_selector(dd.subject) if dd else v_new.subject.display
    return subject, "any", cause, Location.of(dd.origin) if dd else None


# ---- ports

def _cuts(rules, proto: Protocol, top: int, numbers) -> list[tuple[int, int]]:
    """Elementary port intervals of ``proto`` within 0..top: the verdict is constant inside each."""
    cuts = {0, top + 1}
    for r in rules:
        for pm in r.ports:
            if pm.name is None and pm.protocol is proto:
                cuts.update(c for c in (pm.first, pm.last + 1) if c <= top)
    for n in numbers:
        cuts.update((n, n + 1))
    cuts = sorted(cuts)
    return list(zip(cuts, [c - 1 for c in cuts[1:]]))


def _bisect(solver: z3.Solver, port, spans: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], bool]:
    """The spans some flow of the solver's current assertions uses, merged into runs; False if Z3 gave up."""
    hits: list[tuple[int, int]] = []
    complete = True

    def visit(lo: int, hi: int) -> None:
        nonlocal complete
        answer = solver.check(z3.ULE(spans[lo][0], port), z3.ULE(port, spans[hi][1]))
        if answer == z3.unsat:
            return
        if answer == z3.unknown:
            complete = False
        if lo == hi or answer == z3.unknown:
            for first, last in spans[lo:hi + 1] if answer == z3.unknown else [spans[lo]]:
                if hits and hits[-1][1] == first - 1:
                    hits[-1] = (hits[-1][0], last)
                else:
                    hits.append((first, last))
            return
        mid = (lo + hi) // 2
        visit(lo, mid)
        visit(mid + 1, hi)

    visit(0, len(spans) - 1)
    return hits, complete


def _port_text(proto: Protocol, lo: int, hi: int, top: int) -> str:
    if (lo, hi) == (0, top):
        return f"*/{proto.label}"
    return f"{lo}/{proto.label}" if lo == hi else f"{lo}-{hi}/{proto.label}"


def _ports(solver: z3.Solver, space: Space, flow: SymbolicFlow, group: z3.BoolRef, rules,
           limits: Limits) -> tuple[tuple[str, ...], bool]:
    """The group's protocols and ports (ICMP types for ICMP), merged into ranges; named ports by name
    where the destination's numbers are unknown; False when they could not all be enumerated."""
    out: list[str] = []
    complete = True
    for proto in FLOW_PROTOCOLS:
        solver.push()
        solver.add(group, flow.protocol == int(proto))
        answer = solver.check()
        if answer != z3.sat:
            complete &= answer == z3.unsat
            solver.pop()
            continue
        top = 255 if proto.family else 65535
        names = sorted({pm.name for r in rules for pm in r.ports
                        if pm.name and pm.protocol in (proto, Protocol.ANY) and not proto.family})
        known = {n: space.named_numbers(n, proto) for n in names}
        unresolved = [n for n, nums in known.items() if nums is None]
        spans = _cuts(rules, proto, top, [x for nums in known.values() if nums for x in nums])
        if len(spans) > limits.max_port_intervals:
            out.append(f"?/{proto.label}")
            complete = False
            solver.pop()
            continue
        solver.push()
        solver.add(*[z3.Not(flow.dst.named_port(n, flow.protocol, flow.port)) for n in unresolved])
        hits, done = _bisect(solver, flow.port, spans)
        solver.pop()
        complete &= done
        out += [_port_text(proto, lo, hi, top) for lo, hi in hits]
        if hits != [(0, top)]:  # every number already: a name adds nothing
            out += [f"{n}/{proto.label}" for n in unresolved
                    if solver.check(flow.dst.named_port(n, flow.protocol, flow.port)) != z3.unsat]
        solver.pop()
    return tuple(out), complete


# ---- the search

def _has_l7(rules) -> bool:
    return any(pm.filtered for r in rules for pm in r.ports)


def _direction_changes(old: PolicySet, new: PolicySet, direction: Direction, inventory: Inventory | None,
                       limits: Limits) -> tuple[list[Change], list[Truncation]]:
    changes = _changed(old, new, direction)
    if changes is None:
        return [], []
    old_d, new_d = (_relevant(ps, direction, *changes) for ps in (old, new))
    other = Direction.INGRESS if direction is Direction.EGRESS else Direction.EGRESS
    involved = old_d.rules + new_d.rules + old.rules_for(other) + new.rules_for(other)
    space = space_for(involved, old_d.default_deny + new_d.default_deny + old.default_deny + new.default_deny,
                      new.cluster, inventory, unknowns=True)
    solver = z3.Solver()
    flow = new_flow(space, solver)
    request = Request() if _has_l7(involved) else None
    solver.add(z3.Not(flow.same))
    a, b = _Side(space, old_d, direction, flow, request), _Side(space, new_d, direction, flow, request)
    # A connection needs both sides: a widening counts when the new policy's other side lets the flow
    # through, a narrowing when the old one did.
    other_allows = {widened: space.direction_allows(_other_end(ps, other, *changes), other, flow, request)
                    for widened, ps in ((True, new), (False, old))}
    search = _Search(solver, space, flow, request, a, b, Evaluator(old), Evaluator(new), direction,
                     old_d.rules + new_d.rules, limits)
    for widened in (True, False):
        found: list[z3.BoolRef] = []
        for connection in (True, False):  # connection-changing groups first: the gate needs them all
            solver.push()
            solver.add(b.allowed if widened else a.allowed, z3.Not(a.allowed if widened else b.allowed),
                       *[z3.Not(g) for g in found])
            if connection:
                solver.add(other_allows[widened])
            capped = search.groups(widened, connection, other_allows[widened], found)
            solver.pop()
            if capped:
                break  # the cap covers both searches of this kind
    return search.changes, search.cut


class _Search:
    """The group-by-group search of one direction; collects changes and every cap it hits."""

    def __init__(self, solver, space, flow, request, a: _Side, b: _Side, ev_old, ev_new, direction, rules, limits):
        self.solver, self.space, self.flow, self.request = solver, space, flow, request
        self.a, self.b, self.ev_old, self.ev_new = a, b, ev_old, ev_new
        self.direction, self.rules, self.limits = direction, rules, limits
        self.side = "egress" if direction is Direction.EGRESS else "ingress"
        self.changes: list[Change] = []
        self.cut: list[Truncation] = []

    def _verdicts(self, concrete):
        return getattr(self.ev_old.evaluate(concrete), self.side), getattr(self.ev_new.evaluate(concrete), self.side)

    def _shown(self, concrete):
        """The witness with only the request parts an L7 filter on its way reads, before or after."""
        if concrete.request is None:
            return concrete
        kinds = self.ev_old.l7_kinds(concrete) | self.ev_new.l7_kinds(concrete)
        return replace(concrete, request=concrete.request.keep(kinds))

    def groups(self, widened: bool, connection: bool, connected, found: list) -> bool:
        """Find, describe and block groups until none is left; True when the cap stopped the search."""
        solver, gate = self.solver, widened and connection
        while True:
            answer = solver.check()
            if answer == z3.unsat:
                return False
            if answer == z3.unknown:
                self.cut.append(Truncation(self.direction, widened, f"Z3 gave up ({solver.reason_unknown()})", gate))
                return False
            if len(found) >= self.limits.max_groups:
                self.cut.append(Truncation(self.direction, widened, f"stopped after {self.limits.max_groups} "
                                           "groups (--max-groups); more flows change", gate))
                return True
            model = self.flow.minimal_model(solver, request=self.request)
            concrete = self.flow.decode(model, self.request)
            v_old, v_new = self._verdicts(concrete)
            group = z3.And(self.a.reason(v_old), self.b.reason(v_new))
            if not z3.is_true(model.eval(group, model_completion=True)):
                raise AssertionError(f"encoding and evaluator disagree on {concrete}")  # never loop forever
            subject, peer, cause, location = _describe(v_old, v_new, widened)
            ports, complete = _ports(solver, self.space, self.flow, group, self.rules, self.limits)
            if not complete:
                self.cut.append(Truncation(self.direction, widened, "ports of one group not enumerated "
                                           f"(--max-port-intervals {self.limits.max_port_intervals}, or Z3 gave up)",
                                           False))
            changes = connection or solver.check(group, connected) == z3.sat
            if changes and not connection:  # the witness shows a connection that really changes
                concrete = self.flow.decode(self.flow.minimal_model(solver, group, connected, request=self.request),
                                            self.request)
            concrete = self._shown(concrete)
            v_old, v_new = self._verdicts(concrete)
            self.changes.append(Change(widened, self.direction, subject, peer, ports, cause, location,
                                       Witness(concrete, self.direction, v_new.allowed,
                                               tuple(r.id for r in v_new.rules)),
                                       changes, v_old, v_new))
            found.append(group)
            solver.add(z3.Not(group))


def semantic_diff(old: PolicySet, new: PolicySet, inventory: Inventory | None = None,
                  limits: Limits = Limits()) -> DiffResult:
    """Every group of traffic whose verdict differs, egress groups first, and the searches a cap cut short."""
    changes: list[Change] = []
    cut: list[Truncation] = []
    for d in (Direction.EGRESS, Direction.INGRESS):
        found, stopped = _direction_changes(old, new, d, inventory, limits)
        changes += found
        cut += stopped
    return DiffResult(tuple(changes), tuple(cut))


# ---- rendering

def connection_text(c: Change) -> str:
    """One new (or lost) connection: who reaches whom on what, and the rules that made the difference."""
    f = c.witness.flow
    what = f"{f.src.display} -> {f.dst.display} {f.port}/{f.protocol.label}"
    if f.request is not None:
        what += request_text(f.request)
    if c.before is not None and c.before.reason is Reason.AUTH_REQUIRED:
        what += " (without mutual authentication)"
    return f"{what}: {c.cause}"


def gate_lines(result: DiffResult) -> list[str]:
    """What ``--no-new-access`` decided and why, one line each."""
    news = result.new_connections
    if not news and result.gate_complete:
        return ["no-new-access: PASS: no connection becomes possible"]
    lines = [f"no-new-access: FAIL: {len(news)} group(s) of connections become possible"
             + ("" if result.gate_complete else "; the search did not finish, so more may")]
    lines += [f"  new connection: {connection_text(c)}" for c in news]
    lines += [f"  incomplete: {t}" for t in result.truncations if t.gate]
    return lines


def render_markdown(result: DiffResult, gate: bool = False) -> str:
    """A pull-request comment: the gate's verdict, one table per kind of change, and what was cut short."""
    lines = ["### policyc diff", ""]
    if gate:
        lines += [f"**{gate_lines(result)[0]}**", ""] + [f"- {x.strip()}" for x in gate_lines(result)[1:]]
        lines.append("")
    if not result.changes:
        lines += ["No change in allowed traffic.", ""]
    for widened, title in ((True, "Newly allowed"), (False, "Newly denied")):
        rows = [c for c in result.changes if c.widened is widened]
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
    if result.truncations:
        lines += ["#### Incomplete", ""] + [f"- {t}" for t in result.truncations] + [""]
    return "\n".join(lines)
