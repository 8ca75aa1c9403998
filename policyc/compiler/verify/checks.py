"""`policyc check`: the catalogue's checks over one policy set.

Syntactic checks run first and cost nothing; semantic ones ask Z3 small
questions about one rule and its neighbours (``prefilter.Index``).  Rules are
visited once each: a rule reported for deletion is simply left out of later
covering sets, so equal rules report only the later one.

A finding that recommends deleting something (PC001-PC003, PC005, PC018,
PC019) is only made after one more question proves the deletion changes no
verdict (``_deletable``): for any request, DNS name or authentication outcome,
and with the default-deny the rule may be the only one to imply (R3.6).
The deletions hold together, not only one at a time: findings are a sequence
of deletions (``Context.deleted``), and each is proved, and its premises
asked, over the policy with every earlier one already made, as well as over
the whole policy; so deleting all reported rules at once changes no verdict.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import ContextManager

import z3

from .. import explain
from ..cliselector import format_selector
from ..entities import RESERVED_IDS, reserved_label, world_labels
from ..evaluate import ALWAYS_FAIL, Evaluator, LabelIndex, sees_lookups, subject_labels
from ..inventory import Inventory
from ..ir import (NAMESPACE_KEY, Action, Direction, EndpointKind, FQDNPeer, Op, PolicySet,
                  Requirement, Rule, Selector, SelectorPeer, SubjectKind)
from . import exposure, prefilter, regex
from .encode import (Kind, Request, Space, SymbolicFlow, SymbolicSpace, View, disj, fresh_flow, new_flow,
                     space_for)
from .findings import Finding, Location, Witness, rule_location
from .servicechecks import check_cidr_services, check_unmatched_services, cidr_covers

CCNP = "CiliumClusterwideNetworkPolicy"


@dataclass(frozen=True)
class Prover:
    """One solver over one flow for a family of questions: the flow's well-formedness is asserted once,
    and each question is a scope pushed on it and popped.  A fresh solver per question spent most of
    its time taking in the same constraints again (issue 15: 2.2 s of solving for the 500 deletion
    proofs of a 1,000-pod Cilium cluster, 0.4 s in scopes)."""

    space: Space
    flow: SymbolicFlow
    solver: z3.Solver
    request: Request = field(default_factory=Request)  # for questions that decode no witness (its fields
    # decode only where some formula read them): their L7 formulas are then built once (Space.rule_matches)

    @classmethod
    def over(cls, space: Space) -> "Prover":
        solver = z3.Solver()
        return cls(space, new_flow(space, solver), solver)

    @contextlib.contextmanager
    def scope(self) -> Iterator[tuple[SymbolicFlow, z3.Solver]]:
        """One question's (flow, solver): what it adds, checks under assumptions or pushes itself is
        popped with the scope; the flow starts unread (``fresh_flow``)."""
        self.solver.push()
        try:
            yield fresh_flow(self.space), self.solver
        finally:
            self.solver.pop()

    def unsat(self, *constraints) -> bool:
        """No flow satisfies ``constraints`` (unknown counts as satisfiable: no proof)."""
        with self.scope() as (_, solver):
            solver.add(*constraints)
            return solver.check() == z3.unsat


@contextlib.contextmanager
def _alone(space: Space) -> Iterator[tuple[SymbolicFlow, z3.Solver]]:
    """A fresh solver for a space built for one question (the symbolic spaces: their domains are the
    question's own selectors, so nothing could be shared)."""
    solver = z3.Solver()
    yield new_flow(space, solver), solver


@dataclass
class Context:
    policy: PolicySet
    inventory: Inventory | None = None
    deleted: set = field(default_factory=set)    # rule ids reported for deletion so far (duplicates, shadowed,
    # dead, ineffective): later questions are asked over the policy without them (``_deletable``)
    bypassed: set = field(default_factory=set)   # rule ids whose L7 is bypassed (reported as PC013 only)

    def __post_init__(self) -> None:
        self.evaluator = Evaluator(self.policy)
        self.index = prefilter.Index([r for r in self.policy.rules])
        self.dd_index = prefilter.Index(self.policy.default_deny)
        # One inventory space per model for every query: it remembers which endpoints each selector picks;
        # and one solver over its flow, which each query uses in a scope of its own (``query``).
        self._inventory = {u: Prover.over(space_for((), (), self.policy.cluster, self.inventory, unknowns=u))
                           for u in (False, True)} if self.inventory else {}

    @functools.cached_property
    def deletions(self) -> "Prover":
        """Every possible endpoint any rule could name, for ``_deletable``: one space, flow and solver for
        all its queries, so each rule's formula and the flow's constraints are built once, not per query."""
        return Prover.over(space_for(self.policy.rules, self.policy.default_deny, self.policy.cluster, None,
                                     unknowns=True))

    def space(self, rules, dds=(), selectors=(), unknowns: bool = False) -> Space:
        shared = self._inventory.get(unknowns)
        return shared.space if shared else space_for(rules, dds, self.policy.cluster, self.inventory, selectors,
                                                     unknowns)

    def query(self, space: Space) -> ContextManager[tuple[SymbolicFlow, z3.Solver]]:
        """A (flow, solver) for one question over ``space``: over the inventory a scope on its one solver,
        whose well-formedness constraints are taken in once, not again per question (issue 15: with a
        fresh solver each, asserting and freeing them was most of PC005's own cost); else a new solver."""
        shared = next((p for p in self._inventory.values() if p.space is space), None)
        return shared.scope() if shared else _alone(space)

    def decode(self, flow, model, request: Request | None = None):
        """A witness flow, its request cut to what the L7 filters on its way read."""
        concrete = flow.decode(model, request)
        if concrete.request is None:
            return concrete
        return replace(concrete, request=concrete.request.keep(self.evaluator.l7_kinds(concrete)))

    def neighbours(self, rule: Rule, action: Action) -> list[Rule]:
        """The rules of ``action`` that may meet ``rule``, once the rules reported for deletion so far are
        gone: a finding never cites one reported before it (one reported after it is marked,
        ``_noting_deletions``)."""
        return [r for r in self.index.overlapping(rule)
                if r.action is action and r.id != rule.id and r.id not in self.deleted]

    def default_denies(self, rule: Rule) -> list:
        """The default-deny entries of the subjects ``rule`` selects left once the rules reported for
        deletion are gone: an entry only they implied went with them (``DefaultDeny.goes_with``)."""
        return [d for d in self.dd_index.near(rule.direction, rule.subject_kind, rule.subject)
                if not d.goes_with(self.deleted)]


def _policy_ref(pol) -> tuple[str, str]:
    """A policy as its rules' origins name it: (kind, namespace/name or name)."""
    return pol.kind, f"{pol.namespace}/{pol.name}" if pol.namespace else pol.name


def _policy_name(origin) -> str:
    return f"{origin.policy_kind} {origin.policy}"


def _finding(check: str, rule: Rule, message: str, related=(), witness=None, key: str = "") -> Finding:
    return Finding(check, message, Location.of(rule.origin), _policy_name(rule.origin), tuple(related),
                   witness, key)


def _matches_nothing(rule: Rule) -> bool:
    """No peer can match: FQDNs statically (R10.2c), toServices that no Service matches (PC023 says so)."""
    return rule.is_empty or all(isinstance(p, FQDNPeer) or (isinstance(p, SelectorPeer) and p.service is not None
                                                            and not p.selectors) for p in rule.peers)


# ------------------------------------------------------------------ duplicates (syntactic)

def _rule_key(r: Rule) -> tuple:
    return (r.subject, r.subject_kind, r.direction, r.action, frozenset(r.peers), frozenset(r.ports), r.auth)


def check_duplicates(ctx: Context) -> list[Finding]:
    by_policy: dict = {}
    for r in ctx.policy.rules:
        by_policy.setdefault((r.origin.policy_kind, r.origin.policy), []).append(r)
    dds: dict = {}
    for d in ctx.policy.default_deny:
        dds.setdefault((d.origin.policy_kind, d.origin.policy), set()).add((d.subject, d.subject_kind, d.direction))
    out, seen_policy = [], {}
    for pol in ctx.policy.policies:
        ref = _policy_ref(pol)
        rules = by_policy.get(ref, [])
        key = (frozenset(_rule_key(r) for r in rules), frozenset(dds.get(ref, ())))
        if not rules:
            continue
        if key in seen_policy:
            first = seen_policy[key]
            ctx.deleted.update(r.id for r in rules)
            out.append(Finding("PC004", f"policy {ref[1]} has exactly the rules of {first.kind} "
                                        f"{first.namespace + '/' if first.namespace else ''}{first.name}",
                               Location.of(pol.origin), f"{pol.kind} {ref[1]}",
                               (Location.of(first.origin, "the earlier policy"),), key=first.name))
        else:
            seen_policy[key] = pol
    first_rule: dict = {}
    for r in ctx.policy.rules:
        if r.id in ctx.deleted:
            continue
        key = _rule_key(r)
        if key in first_rule and _deletable(ctx, r):
            ctx.deleted.add(r.id)
            other = first_rule[key]
            witness = _allowed_example(ctx, r, also=(other,)) if r.action is Action.ALLOW else None
            out.append(_finding("PC003", r, f"{r.direction.value} {r.action.value} rule repeats "
                                            f"{explain.rule_ref(other)}",
                                (rule_location(other, "the earlier rule"),), witness, key=other.origin.path))
        else:
            first_rule.setdefault(key, r)
    return out


# ------------------------------------------------------------------ Z3 helpers

def _deletable(ctx: Context, rule: Rule) -> bool:
    """Deleting ``rule`` from its source changes no verdict in its direction, for any request, DNS name or
    authentication outcome: the question every finding that recommends deleting it must settle first.

    Asked twice: after the deletions already reported (``ctx.deleted``), so that by induction all of
    them together change no verdict (of two deny rules that together imply their subject's default-deny,
    or a duplicate and the rule it repeats, not both are deletable); and of the whole policy, so that
    each one alone changes none either.  Only subjects ``rule`` selects can change, so only their neighbouring
    rules and default-deny entries enter; a default-deny entry only the deleted rules implied goes with
    them (``PolicySet.without``). The question is asked over every possible endpoint, even with an
    inventory: the rule also decides for pods created after the deletion, which today's inventory
    does not hold.
    """
    near = _near(ctx, rule)
    if any(_service_pending(p) for r in near.rules if r.action is Action.ALLOW for p in r.peers):
        return False
    joint, alone = _split(near, rule, ctx.deleted), _split(near, rule, ())
    return all(_deny_meets_no_allow(rule, *pair) or _proves_deletable(ctx, rule, *pair)
               for pair in ((joint,) if joint == alone else (joint, alone)))


def _service_pending(peer) -> bool:
    """A ``toServices`` peer no Service of the inventory answers yet: it allows nothing today (PC023) and
    the backends of the Service once created, so no deletion near it can be proved for later."""
    return isinstance(peer, SelectorPeer) and peer.service is not None and not peer.selectors


def _near(ctx: Context, rule: Rule) -> PolicySet:
    """The rules and default-deny entries of the subjects ``rule`` selects."""
    return PolicySet(tuple(ctx.index.near(rule.direction, rule.subject_kind, rule.subject)),
                     tuple(ctx.dd_index.near(rule.direction, rule.subject_kind, rule.subject)), (), ctx.policy.cluster)


def _split(near: PolicySet, rule: Rule, deleted) -> tuple[PolicySet, PolicySet]:
    """``near`` once the rules ``deleted`` are gone, before and after ``rule``'s deletion too: both from
    ``near``, since an entry that ``deleted`` and ``rule`` imply together goes only with all of them."""
    gone = {i for i in [r.id for r in near.rules] + [i for d in near.default_deny for i in d.implied_by]
            if i in deleted}  # those that matter here: ``deleted`` is the whole policy's
    return near.without(gone), near.without(gone | {rule.id})


def _always_default_deny(rule: Rule, dds) -> bool:
    """Every subject ``rule`` selects is default-deny in its direction by one of ``dds``, read off the
    selectors: an entry whose requirements are all among the rule's (a rule's own policy makes one)."""
    return any(d.direction is rule.direction and d.subject_kind is rule.subject_kind
               and set(d.subject.requirements) <= set(rule.subject.requirements) for d in dds)


def _deny_meets_no_allow(rule: Rule, near: PolicySet, after: PolicySet) -> bool:
    """Deleting deny ``rule`` plainly changes no verdict, as ``_deletable``'s query would prove: a
    default-deny entry left after the deletion selects every subject it selects, and no allow rule of
    those subjects can match a flow it matches (``prefilter.rules_overlap``), so such a flow is denied
    with it and without it, and any other flow meets the same rules and default-deny before and after.
    A toFQDNs peer may match any outside address in the gate's model, which ``rules_overlap`` does not
    read: with one among the rules, the query decides (issue 15:
    most deny rules of a cluster are of this kind, and their proofs were a third of ``check``)."""
    return (rule.action is Action.DENY
            and _always_default_deny(rule, after.default_deny)
            and not any(isinstance(p, FQDNPeer) for r in near.rules for p in r.peers)
            and not any(r.action is Action.ALLOW and prefilter.rules_overlap(rule, r) for r in near.rules))


def _proves_deletable(ctx: Context, rule: Rule, near: PolicySet, after: PolicySet) -> bool:
    """``_deletable``'s question asked of Z3, over the rules ``near`` the rule and ``after`` its deletion."""
    space, flow = ctx.deletions.space, ctx.deletions.flow
    request = ctx.deletions.request if any(pm.filtered for r in near.rules for pm in r.ports) else None
    subject, _ = space.sides(flow, rule.direction)
    return ctx.deletions.unsat(z3.Not(flow.same), space.selects(rule.subject_kind, rule.subject, subject),
                               space.direction_allows(near, rule.direction, flow, request)
                               != space.direction_allows(after, rule.direction, flow, request))


def _decided(space: Space, flow, direction: Direction) -> z3.BoolRef:
    """Policy decides the flow in ``direction``: not a flow to itself (R11.5), nor one nothing enforces.
    Built once per flow and direction (``flow.memo``): most questions ask it again."""
    return flow.cached(("decided", direction), lambda: z3.And(z3.Not(flow.same), space.enforced(direction, flow)))


def _sat_with(solver: z3.Solver, *constraints) -> bool:
    """Some flow satisfies ``constraints`` besides what ``solver`` holds; they are popped again."""
    solver.push()
    try:
        solver.add(*constraints)
        return solver.check() == z3.sat
    finally:
        solver.pop()


def _minimal_core(solver: z3.Solver, lits: list) -> list:
    """Deletion-based minimisation of an unsat core: each literal left is needed."""
    solver.check(*lits)
    keep = [x for x in lits if any(x.eq(c) for c in solver.unsat_core())]
    for lit in list(keep):
        trial = [x for x in keep if not x.eq(lit)]
        if solver.check(*trial) == z3.unsat:
            keep = trial
    return keep


def _blocks(rule: Rule) -> bool:
    """A rule that drops what it matches: a deny, or an allow whose handshake always fails."""
    return rule.action is Action.DENY or rule.auth == ALWAYS_FAIL


def _matching(model, matches: dict) -> tuple[str, ...]:
    return tuple(rid for rid, expr in matches.items() if z3.is_true(model.eval(expr, model_completion=True)))


def _allowed_example(ctx: Context, rule: Rule, peer_kind: Kind | None = None, also=()) -> Witness | None:
    """A flow ``rule`` (an allow) matches and its direction lets through: no neighbouring deny matches it.

    ``peer_kind`` restricts the peer (world for exposure checks); ``also`` are rules claimed to match too.
    """
    # a matching deny drops the flow, and so does a matching allow whose handshake always fails (R10.11)
    blockers = ctx.neighbours(rule, Action.DENY) + [r for r in ctx.neighbours(rule, Action.ALLOW) if _blocks(r)]
    space = ctx.space([rule, *blockers])
    with ctx.query(space) as (flow, solver):
        _, peer = space.sides(flow, rule.direction)
        solver.add(space.rule_matches(rule, flow), _decided(space, flow, rule.direction),
                   space.authenticated([rule], flow),  # test-always-fail: the rule never lets anything through
                   *[z3.Not(space.rule_matches(d, flow)) for d in blockers])
        if peer_kind is not None:
            solver.add(peer.is_kind(peer_kind))
        if solver.check() != z3.sat:
            return None
        return Witness(flow.decode(flow.minimal_model(solver)), rule.direction, True,
                       (rule.id,) + tuple(r.id for r in also))


# ------------------------------------------------------------------ shadowed and dead allows

def _sees_local_node(rule: Rule) -> bool:
    """An ingress rule whose peers may be the local node: the traffic it matches may never meet policy (R3.9)."""
    host = frozenset({reserved_label("host")})
    return rule.direction is Direction.INGRESS and any(
        isinstance(p, SelectorPeer) and any(s.matches(host) for s in p.selectors) for p in rule.peers)


def _redundancy(ctx: Context, rule: Rule) -> Finding | None:
    denies = ctx.neighbours(rule, Action.DENY)
    # an allow whose handshake always fails covers nothing: what it matches is denied where policy is enforced
    allows = [r for r in ctx.neighbours(rule, Action.ALLOW) if not _blocks(r)]
    if not denies and not allows and not _sees_local_node(rule):
        return None  # nothing covers it, and policy decides some of its flows
    space = ctx.space([rule] + denies + allows)
    request = Request()
    with ctx.query(space) as (flow, solver):
        own = space.rule_matches(rule, flow, request)
        others = [space.rule_matches(r, flow, request if r.action is Action.ALLOW else None) for r in denies + allows]
        if _sat_with(solver, own, _decided(space, flow, rule.direction), z3.Not(disj(others))):
            return None  # the usual answer, in one check: a flow it matches is decided by no other rule
        solver.add(own)
        if solver.check() != z3.sat:
            return None  # matches nothing at all: other checks say why
        never = solver.model()  # decoded only for a finding: a witness replays the flow over all the subject's rules
        solver.add(_decided(space, flow, rule.direction))
        if solver.check() == z3.unsat:
            return _finding("PC001", rule, "everything this rule allows is always allowed: a pod's traffic to itself "
                                           "(R11.5), the local node's to its pods (allow-localhost, R3.9)", (),
                            Witness(ctx.decode(flow, never, request), rule.direction, True, (rule.id,)),
                            key="always-allowed")
        matches, lits = {}, {}
        for i, other in enumerate(denies + allows):
            expr = space.rule_matches(other, flow, request if other.action is Action.ALLOW else None)
            lit = z3.Bool(f"cover{i}")
            solver.add(z3.Implies(lit, z3.Not(expr)))
            matches[other.id], lits[other.id] = expr, lit
        deny_lits = [lits[r.id] for r in denies]
        by_lit = {lits[r.id].get_id(): r for r in denies + allows}
        if solver.check(*deny_lits) == z3.unsat:
            solver.check()
            model = solver.model()
            cover = [by_lit[x.get_id()] for x in _minimal_core(solver, deny_lits)]
            witness = Witness(ctx.decode(flow, model, request), rule.direction, False,
                              (rule.id,) + _matching(model, matches))
            return _finding("PC002", rule, f"every flow this allow rule matches is denied by "
                                           f"{len(cover)} deny rule(s)", [rule_location(c) for c in cover],
                            witness, key=",".join(sorted(c.origin.path for c in cover)))
        model = solver.model()
        if solver.check(*deny_lits, *[lits[r.id] for r in allows]) == z3.sat:
            return None
        cover = [by_lit[x.get_id()] for x in _minimal_core(solver, list(lits.values()))]
        witness = Witness(ctx.decode(flow, model, request), rule.direction, True,
                          (rule.id,) + _matching(model, matches))
        differs = any(c.action is Action.DENY for c in cover)
        note = " (some of them deny: their action differs)" if differs else ""
        return _finding("PC001", rule, f"everything this rule allows is already decided by {len(cover)} other "
                                       f"rule(s){note}",
                        [rule_location(c, f"covers it ({c.action.value}): {explain.rule_ref(c)}") for c in cover],
                        witness, key=",".join(sorted(f"{c.origin.policy}:{c.origin.path}" for c in cover)))


def _removable(ctx: Context, rules, find) -> list[Finding]:
    """``find``'s findings, later rules first so that of two rules covering each other the later one is
    reported; a reported rule leaves later covering sets, and only a deletable one is reported."""
    out = []
    for rule in reversed(rules):
        finding = find(ctx, rule)
        if finding and _deletable(ctx, rule):
            ctx.deleted.add(rule.id)
            out.append(finding)
    return out[::-1]


def check_redundant_allows(ctx: Context) -> list[Finding]:
    return _removable(ctx, [r for r in ctx.policy.rules if r.action is Action.ALLOW and r.id not in ctx.deleted
                            and not _matches_nothing(r) and r.id not in ctx.bypassed
                            and not any(isinstance(p, FQDNPeer) for p in r.peers)], _redundancy)


# ------------------------------------------------------------------ denies without effect

def _shadowed_deny(ctx: Context, rule: Rule) -> Finding | None:
    """Every flow the deny drops (where policy decides) is dropped by other deny rules too."""
    denies = ctx.neighbours(rule, Action.DENY)
    if not denies:
        return None
    space = ctx.space([rule] + denies)
    with ctx.query(space) as (flow, solver):
        solver.add(space.rule_matches(rule, flow), _decided(space, flow, rule.direction))
        if solver.check() != z3.sat:
            return None  # never decides anything: PC005 says so
        matches = {r.id: space.rule_matches(r, flow) for r in denies}
        lits = {r.id: z3.Bool(f"cover{i}") for i, r in enumerate(denies)}
        for rid, lit in lits.items():
            solver.add(z3.Implies(lit, z3.Not(matches[rid])))
        if solver.check(*lits.values()) != z3.unsat:
            return None
        by_lit = {lits[r.id].get_id(): r for r in denies}
        cover = [by_lit[x.get_id()] for x in _minimal_core(solver, list(lits.values()))]
        solver.check()
        model = solver.model()
        witness = Witness(flow.decode(model), rule.direction, False, (rule.id,) + _matching(model, matches))
        return _finding("PC018", rule, f"every flow this deny rule drops is also dropped by {len(cover)} other "
                                       "deny rule(s)",
                        [rule_location(c, f"covers it: {explain.rule_ref(c)}") for c in cover],
                        witness, key=",".join(sorted(f"{c.origin.policy}:{c.origin.path}" for c in cover)))


def check_shadowed_denies(ctx: Context) -> list[Finding]:
    return _removable(ctx, [r for r in ctx.policy.rules if r.action is Action.DENY and r.id not in ctx.deleted
                            and not r.is_empty], _shadowed_deny)


def check_ineffective_denies(ctx: Context) -> list[Finding]:
    out = []
    for rule in ctx.policy.rules:
        if rule.action is not Action.DENY or rule.id in ctx.deleted:
            continue
        if _ineffective(ctx, rule) and _deletable(ctx, rule):
            ctx.deleted.add(rule.id)
            out.append(_finding("PC005", rule, "nothing this deny rule matches would be allowed without it"))
    return out


def _ineffective(ctx: Context, rule: Rule) -> bool:
    """Nothing deny ``rule`` matches (where policy decides) would be allowed without it: its subjects are
    default-deny and no allow rule matches the flow, once the rules reported for deletion are gone.  With
    no allow rule meeting it and a default-deny entry that selects all its subjects, that is plain without
    a query (``_always_default_deny``)."""
    allows = ctx.neighbours(rule, Action.ALLOW)
    dds = ctx.default_denies(rule)
    return (not allows and _always_default_deny(rule, dds)) or _proves_ineffective(ctx, rule, allows, dds)


def _proves_ineffective(ctx: Context, rule: Rule, allows: list[Rule], dds) -> bool:
    """``_ineffective``'s question asked of Z3, with the rule's allow neighbours and default-deny entries."""
    space = ctx.space([rule] + allows, dds)
    with ctx.query(space) as (flow, solver):
        subject, _ = space.sides(flow, rule.direction)
        would_allow = z3.Or(z3.Not(space.default_deny(dds, rule.direction, subject)),
                            *[space.rule_matches(a, flow) for a in allows])
        solver.add(space.rule_matches(rule, flow), _decided(space, flow, rule.direction), would_allow)
        return solver.check() == z3.unsat


# ------------------------------------------------------------------ selectors

def _rule_selectors(rule: Rule):
    yield "subject", rule.subject
    for peer in rule.peers:
        if isinstance(peer, SelectorPeer) and peer.kind != "entity":
            for sel in peer.selectors:
                yield "peer", sel


def _repeats_a_key(sel: Selector) -> bool:
    keys = [r.key for r in sel.requirements]
    return len(keys) != len(set(keys))


def _satisfiable(sel: Selector, role: str, kind: SubjectKind, cluster: str) -> bool:
    space = SymbolicSpace.for_rules((), (), cluster, (sel,))
    solver = z3.Solver()
    term = space.term("x")
    solver.add(*term.wellformed())
    if role == "subject":
        solver.add(space.selects(kind, sel, term))
    else:
        solver.add(z3.Or(term.match(sel, View.PEER), term.match(sel, View.HOST)))
    return solver.check() == z3.sat


def check_contradictory(ctx: Context) -> list[Finding]:
    out, cache = [], {}
    for rule in ctx.policy.rules:
        for role, sel in _rule_selectors(rule):
            if not _repeats_a_key(sel):
                continue
            key = (role, sel, rule.subject_kind)
            if key not in cache:
                cache[key] = _satisfiable(sel, role, rule.subject_kind, ctx.policy.cluster)
            if not cache[key]:
                out.append(_finding("PC006", rule, f"the {role} selector {format_selector(sel)} can never match",
                                    key=str(sel)))
    return out


def check_inventory_selectors(ctx: Context) -> list[Finding]:
    inv = ctx.inventory
    if inv is None:
        return []
    reserved = [frozenset({reserved_label(n)}) for n in RESERVED_IDS] + [world_labels(4), world_labels(6)]
    identities = LabelIndex(list(dict.fromkeys([ep.identity.labels for ep in inv.endpoints] + reserved)))
    wanted = {SubjectKind.ENDPOINT: EndpointKind.POD, SubjectKind.NODE: EndpointKind.NODE}
    subjects = {kind: LabelIndex(list({subject_labels(ep) for ep in inv.endpoints if ep.kind is ep_kind}))
                for kind, ep_kind in wanted.items()}  # selects(), one index per subject kind
    seen: dict[tuple, bool] = {}
    out = []
    for rule in ctx.policy.rules:
        for role, sel in _rule_selectors(rule):
            key = (role == "subject", sel, rule.subject_kind)
            if key not in seen:
                seen[key] = bool((subjects[rule.subject_kind] if key[0] else identities).matching(sel))
            if not seen[key]:
                out.append(_finding("PC007", rule, f"the {role} selector {format_selector(sel)} matches no endpoint "
                                    "of the inventory",
                                    key=f"{role}:{sel}"))
    return out


# ------------------------------------------------------------------ default deny

def _first_policy(ctx: Context, namespace: str):
    return next((p for p in ctx.policy.policies if p.namespace == namespace), None)


_DD_CHECK = {Direction.INGRESS: "PC008", Direction.EGRESS: "PC009"}


def _missing_dd_inventory(ctx: Context) -> list[Finding]:
    evaluator = Evaluator(ctx.policy)
    out = []
    for direction in Direction:
        open_pods: dict = {}
        for ep in ctx.inventory.pods:
            if not evaluator.is_default_deny(ep, direction):
                open_pods.setdefault(ep.namespace, []).append(ep)
        for ns, pods in sorted(open_pods.items()):
            pol = _first_policy(ctx, ns)
            names = ", ".join(p.name for p in pods[:5]) + (", …" if len(pods) > 5 else "")
            out.append(Finding(_DD_CHECK[direction], f"{len(pods)} pod(s) of namespace {ns} are not default-deny "
                                                     f"in {direction.value}: {names}",
                               Location.of(pol.origin) if pol else None,
                               f"{pol.kind} {ns}/{pol.name}" if pol else "", (), Witness(endpoint=pods[0]),
                               key=f"{ns}:{direction.value}"))
    return out


def _missing_dd_symbolic(ctx: Context) -> list[Finding]:
    out = []
    for ns in sorted({p.namespace for p in ctx.policy.policies if p.namespace}):
        in_ns = Selector((Requirement("k8s", NAMESPACE_KEY, Op.IN, (ns,)),))
        for direction in Direction:
            dds = ctx.dd_index.near(direction, SubjectKind.ENDPOINT, in_ns)
            denies = [r for r in ctx.index.near(direction, SubjectKind.ENDPOINT, in_ns) if r.action is Action.DENY]
            space = ctx.space(denies, dds, (in_ns,))
            with ctx.query(space) as (flow, solver):
                subject, _ = space.sides(flow, direction)
                solver.add(space.selects(SubjectKind.ENDPOINT, in_ns, subject),
                           z3.Not(space.default_deny(dds, direction, subject)),
                           *[z3.Not(space.rule_matches(r, flow)) for r in denies])
                if solver.check() != z3.sat:
                    continue
                pol = _first_policy(ctx, ns)
                witness = Witness(flow.decode(flow.minimal_model(solver)), direction, True)
                out.append(Finding(_DD_CHECK[direction], f"some pods of namespace {ns} are not default-deny in "
                                                         f"{direction.value} (no policy with an {direction.value} "
                                                         "section selects them)",
                                   Location.of(pol.origin), f"{pol.kind} {ns}/{pol.name}", (), witness,
                                   key=f"{ns}:{direction.value}"))
    return out


def check_default_deny(ctx: Context) -> list[Finding]:
    return _missing_dd_inventory(ctx) if ctx.inventory is not None else _missing_dd_symbolic(ctx)


# ------------------------------------------------------------------ exposure

def check_exposure(ctx: Context) -> list[Finding]:
    out = []
    for rule in ctx.policy.rules:
        if rule.direction is not Direction.INGRESS or rule.action is not Action.ALLOW or rule.is_empty:
            continue
        world = exposure.world_peers(rule)
        witness = _allowed_example(ctx, rule, Kind.EXTERNAL) if world else None
        if witness is not None:  # without one, deny rules drop all of it
            protocols = exposure.open_protocols(rule)
            if any(pm.is_l3_only for pm in rule.ports):
                out.append(_finding("PC011", rule, f"every port and protocol is open to {', '.join(world)}",
                                    witness=witness))
            elif protocols:
                out.append(_finding("PC011", rule, f"every {'/'.join(p.label for p in protocols)} port is open "
                                                   f"to {', '.join(world)}", witness=witness))
            else:
                out.append(_finding("PC010", rule, f"admits {', '.join(world)} on {explain.ports_text(rule.ports)}",
                                    witness=witness))
        if rule.origin.policy_kind == CCNP:
            for peer in rule.peers:
                if isinstance(peer, SelectorPeer) and peer.kind == "endpoints" and any(
                        all(r.key == NAMESPACE_KEY and r.op is Op.EXISTS for r in s.requirements)
                        for s in peer.selectors):
                    out.append(_finding("PC012", rule, "fromEndpoints: [{}] in a clusterwide policy admits every "
                                                       "pod of every namespace",
                                        witness=_allowed_example(ctx, rule, Kind.POD)))
    return out


# ------------------------------------------------------------------ L7

def _feeds_fqdn(ctx: Context, rule: Rule) -> bool:
    """A DNS rule whose subject may also be one of a toFQDNs rule's: bypassed or not, it is what sends the
    lookups through the proxy, without which toFQDNs matches nothing (R9.3, R10.1): never "ineffective"."""
    return sees_lookups(rule) and any(
        isinstance(p, FQDNPeer) for r in ctx.index.near(rule.direction, rule.subject_kind, rule.subject)
        if r.action is Action.ALLOW for p in r.peers)


def _l7_ineffective(ctx: Context, rule: Rule) -> Finding | None:
    if _feeds_fqdn(ctx, rule):
        return None
    l7_ports = tuple(pm for pm in rule.ports if pm.l7 is not None)
    plain = [(r, tuple(pm for pm in r.ports if pm.l7 is None)) for r in [rule] + ctx.neighbours(rule, Action.ALLOW)]
    plain = [(r, ps) for r, ps in plain if ps and prefilter.rules_overlap(rule, r, l7_ports, ps)]
    if not plain:
        return None
    denies = ctx.neighbours(rule, Action.DENY)
    dds = ctx.dd_index.near(rule.direction, rule.subject_kind, rule.subject)
    space = ctx.space([rule] + [r for r, _ in plain] + denies, dds)
    with ctx.query(space) as (flow, solver):
        subject, _ = space.sides(flow, rule.direction)
        wildcards = {r.id: space.rule_matches(r, flow, ports=ps) for r, ps in plain}
        solver.add(space.rule_matches(rule, flow, ports=l7_ports), z3.Or(list(wildcards.values())),
                   space.default_deny(dds, rule.direction, subject), _decided(space, flow, rule.direction),
                   *[z3.Not(space.rule_matches(d, flow)) for d in denies])
        if solver.check() != z3.sat:
            return None
        model = solver.model()
        culprits = _matching(model, wildcards)
        related = [rule_location(r, f"allows the same peer and port without L7: {explain.rule_ref(r)}")
                   for r, _ in plain if r.id in culprits]
        return _finding("PC013", rule, "its L7 rules are bypassed: another entry allows the same peer and port "
                                       "without L7 (every request passes)", related,
                        Witness(flow.decode(model), rule.direction, True, (rule.id,) + culprits),
                        key=",".join(sorted(culprits)))


def _entry_text(entry) -> str:
    """An HTTP entry or DNS pattern as its YAML fields."""
    yaml_name = {"match_name": "matchName", "match_pattern": "matchPattern", "header_matches": "headerMatches"}
    fields = ", ".join(f"{yaml_name.get(k, k)}: {'[' + ', '.join(v) + ']' if isinstance(v, tuple) else v}"
                       for k, v in vars(entry).items() if v not in (None, ()))
    return f"{{{fields}}}"


def _covered_entries(l7) -> list[tuple[int, list[int]]]:
    """(entry, covering entries) for each HTTP entry or DNS pattern of ``l7`` whose requests the other entries
    all admit; the later of two equal entries is the one reported, a covered entry never covers another."""
    entries = l7.http if l7.kind == "http" else l7.dns
    solver, request = z3.Solver(), Request()
    admits = [request.http_rule(e) if l7.kind == "http" else request.dns_rule(e) for e in entries]
    lits = [z3.Bool(f"entry{i}") for i in range(len(entries))]
    for lit, expr in zip(lits, admits):
        solver.add(z3.Implies(lit, z3.Not(expr)))
    out, covered = [], set()
    for i in reversed(range(len(entries))):
        others = [lits[j] for j in range(len(entries)) if j != i and j not in covered]
        solver.push()
        solver.add(admits[i])
        if others and solver.check(*others) == z3.unsat:
            core = _minimal_core(solver, others)
            covered.add(i)
            out.append((i, sorted(lits.index(x) for x in lits if any(x.eq(c) for c in core))))
        solver.pop()
    return out[::-1]


def _l7_entries(ctx: Context, rule: Rule) -> list[Finding]:
    out = []
    for l7 in dict.fromkeys(pm.l7 for pm in rule.ports if pm.l7 and pm.l7.kind in ("http", "dns")):
        entries = l7.http if l7.kind == "http" else l7.dns
        for i, cover in _covered_entries(l7) if len(entries) > 1 else ():
            names = ", ".join(f"{l7.kind}[{j}] ({_entry_text(entries[j])})" for j in cover)
            out.append(_finding("PC019", rule, f"{l7.kind}[{i}] ({_entry_text(entries[i])}) admits no request "
                                               f"that {names} does not", witness=_l7_example(ctx, rule, l7, i),
                                key=f"{l7.kind}[{i}]"))
    return out


def _l7_example(ctx: Context, rule: Rule, l7, index: int) -> Witness | None:
    """A flow the rule lets through carrying a request the covered entry admits."""
    denies = ctx.neighbours(rule, Action.DENY)
    space = ctx.space([rule, *denies])
    request = Request()
    with ctx.query(space) as (flow, solver):
        entry = (l7.http if l7.kind == "http" else l7.dns)[index]
        solver.add(space.rule_matches(rule, flow, ports=tuple(pm for pm in rule.ports if pm.l7 == l7)),
                   request.http_rule(entry) if l7.kind == "http" else request.dns_rule(entry),
                   _decided(space, flow, rule.direction), *[z3.Not(space.rule_matches(d, flow)) for d in denies])
        if solver.check() != z3.sat:
            return None
        return Witness(ctx.decode(flow, flow.minimal_model(solver, request=request), request), rule.direction, True,
                       (rule.id,))


def check_l7(ctx: Context) -> list[Finding]:
    out = []
    for rule in ctx.policy.rules:
        if rule.action is not Action.ALLOW or rule.id in ctx.deleted or rule.is_empty:
            continue
        has_l7 = any(pm.l7 is not None for pm in rule.ports)
        if has_l7 and any(isinstance(p, SelectorPeer) and p.kind == "entity" for p in rule.peers):
            out.append(_finding("PC015", rule, "entity peers combined with L7 rules",
                                witness=_allowed_example(ctx, rule)))
        for pm in rule.ports:
            for http in (pm.l7.http if pm.l7 else ()):
                for what in ("method", "path", "host"):
                    problem = regex.check(getattr(http, what) or "")
                    if problem:
                        out.append(_finding("PC017", rule, f"HTTP {what}: {problem}", key=f"{what}:{problem}"))
        if has_l7 and not any(isinstance(p, FQDNPeer) for p in rule.peers):
            finding = _l7_ineffective(ctx, rule)
            if finding:
                ctx.bypassed.add(rule.id)
                out.append(finding)
        if has_l7:
            out += _l7_entries(ctx, rule)
    return out


def _is_dns_rule(rule: Rule) -> bool:
    return (rule.direction is Direction.EGRESS and rule.action is Action.ALLOW
            and any(pm.l7 is not None and pm.l7.kind == "dns" for pm in rule.ports))


def check_fqdn(ctx: Context) -> list[Finding]:
    out = []
    for rule in ctx.policy.rules:
        if rule.action is not Action.ALLOW or not any(isinstance(p, FQDNPeer) for p in rule.peers):
            continue
        dns = [r for r in ctx.index.near(rule.direction, rule.subject_kind, rule.subject) if _is_dns_rule(r)]
        space = ctx.space([rule] + dns)
        with ctx.query(space) as (flow, solver):
            subject, _ = space.sides(flow, rule.direction)
            solver.add(space.selects(rule.subject_kind, rule.subject, subject),
                       *[z3.Not(space.selects(r.subject_kind, r.subject, subject)) for r in dns])
            if solver.check() == z3.sat:
                src = flow.decode(flow.minimal_model(solver)).src
                out.append(_finding("PC014", rule, "toFQDNs never matches: no egress rule with DNS L7 rules selects "
                                                   "this subject, so no lookup is seen", witness=Witness(endpoint=src)))
    return out


def check_cidr_pods(ctx: Context) -> list[Finding]:
    if ctx.inventory is None:
        return []
    held = [(ip, ep) for ep in ctx.inventory.endpoints if ep.kind is not EndpointKind.EXTERNAL for ip in ep.ips]
    return [_finding("PC016", rule, f"{peer} covers {len(inside)} address(es) of pods or nodes (e.g. {inside[0][0]} "
                                    f"of {inside[0][1].display}), which CIDR rules never select", key=str(peer))
            for rule, peer, inside in cidr_covers(ctx.policy.rules, held)]


CHECKS = (check_duplicates, check_contradictory, check_inventory_selectors, check_l7, check_redundant_allows,
          check_shadowed_denies, check_ineffective_denies, check_default_deny, check_exposure, check_fqdn,
          check_cidr_pods, check_cidr_services, check_unmatched_services)


def run_checks(policy: PolicySet, inventory: Inventory | None = None) -> list[Finding]:
    """Every check, sorted by location; duplicates first, L7 before shadowing and shadowed denies before
    ineffective ones, so later checks skip what earlier ones reported."""
    ctx = Context(policy, inventory)
    findings = [f for check in CHECKS for f in check(ctx)]
    findings = _noting_deletions(ctx, findings)
    return sorted(findings, key=lambda f: ((f.location.file, f.location.line, f.location.column)
                                           if f.location else ("", 0, 0), f.check))


DELETED_TOO = " (reported for deletion too: deleting every rule check reports keeps every verdict)"


def _noting_deletions(ctx: Context, findings: list[Finding]) -> list[Finding]:
    """``findings`` with each rule they cite that a later finding recommends deleting said to be: a cover,
    or the earlier rule a duplicate repeats, may go too (each deletion was proved after the earlier ones,
    so all of them hold together), and the message should not suggest that it stays."""
    gone = {Location.of(r.origin) for r in ctx.policy.rules if r.id in ctx.deleted}
    kept = {(r.origin.policy_kind, r.origin.policy) for r in ctx.policy.rules if r.id not in ctx.deleted}
    gone |= {Location.of(p.origin) for p in ctx.policy.policies  # PC004 cites the earlier policy
             if _policy_ref(p) not in kept}

    def noted(f: Finding) -> Finding:
        related = tuple(replace(loc, message=loc.message + DELETED_TOO)
                        if replace(loc, message="") in gone and replace(loc, message="") != f.location else loc
                        for loc in f.related)
        return f if related == f.related else replace(f, related=related)
    return [noted(f) for f in findings] if gone else findings


def suppress(findings: list[Finding], policy: PolicySet, baseline: set[str] = frozenset()) -> list[Finding]:
    """Drop findings named in their policy's ``policyc.io/ignore`` annotation or in the baseline."""
    ignores = {f"{p.kind} {p.namespace + '/' if p.namespace else ''}{p.name}": set(p.ignore)
               for p in policy.policies}
    out = []
    for f in findings:
        ids = ignores.get(f.policy, set())
        if f.check in ids or "all" in ids or f.fingerprint in baseline:
            continue
        out.append(f)
    return out

