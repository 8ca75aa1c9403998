"""`policyc verify`: the spec's invariants proved over every flow with Z3.

Each invariant becomes one or two questions "is there a flow in this set
whose verdict is not the one promised?": unsat is a proof (for every possible
pod without an inventory, for exactly the inventory's endpoints with one);
sat gives a counterexample, which is decoded, replayed through the concrete
evaluator (an encoding bug must never be reported as a policy bug) and
returned with the evaluator's explanation.

Only rules whose subjects could select the invariant's endpoints enter a
query (``prefilter``), so a spec costs little more on a large policy set.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import z3

from .. import explain
from ..diagnostics import Diagnostic, PolicycError, Severity
from ..evaluate import Evaluator, selects
from ..inventory import Inventory
from ..ir import Direction, PolicySet, SubjectKind
from . import prefilter
from .encode import Kind, Space, SymbolicFlow, Term, new_flow, space_for
from .findings import Witness
from .multihop import MultiHop
from .spec import (MULTI_HOP, Addresses, DefaultDenyIn, Invariant, Isolation, MustAllow, MustDeny, NamedPod, Peer,
                   Pods, PortRange, Spec, WORLD, WorldOnly, namespace_pods)


@dataclass(frozen=True)
class Outcome:
    """One invariant's result; a failure carries a witness and the evaluator's account of it."""

    invariant: Invariant
    holds: bool
    message: str
    witness: Witness | None = None
    explanation: str = ""
    reach: dict | None = None  # noPath: the chain; maxBlastRadius: what the worst pod reaches (JSON)
    vacuous: str = ""  # why an invariant that holds checked nothing (a peer that names nothing)


class _Prover:
    def __init__(self, policy: PolicySet, inventory: Inventory | None):
        self.policy = policy
        self.inventory = inventory
        self.evaluator = Evaluator(policy)
        self.index = prefilter.Index(policy.rules)
        self.dd_index = prefilter.Index(policy.default_deny)

    # ---- the endpoints an invariant talks about

    def _pod(self, peer: NamedPod):
        return self.inventory.find(peer.ref)

    def bad_refs(self, inv: Invariant) -> list[Diagnostic]:
        """``pod: ns/name`` names an inventory pod: without one, or when it is missing, the spec is bad."""
        out = []
        if isinstance(inv, MULTI_HOP) and self.inventory is None:
            loc = inv.location
            out.append(Diagnostic(Severity.ERROR, f"{inv.kind} needs --inventory: a chain passes through the "
                                  "cluster's pods, which only an inventory lists", loc.file, loc.line, loc.column,
                                  loc.field))
        for peer in (getattr(inv, a) for a in ("src", "dst", "a", "b") if hasattr(inv, a)):
            if not isinstance(peer, NamedPod):
                continue
            loc = peer.location
            if self.inventory is None:
                problem = f"{peer} needs --inventory (without one, write a selector such as namespace=NS,app=X)"
            elif peer.ref in self.inventory.host_network and not isinstance(inv, MULTI_HOP):
                problem = (f"{peer} is a hostNetwork pod (its traffic is node "
                           f"{self.inventory.host_network[peer.ref]}'s): {inv.kind} takes pods only")
            elif peer.ref not in self.inventory.host_network and not any(
                    ep.display == peer.ref for ep in self.inventory.pods):
                problem = f"{peer} is not a pod of the inventory"
            else:
                continue
            out.append(Diagnostic(Severity.ERROR, problem, loc.file, loc.line, loc.column, loc.field))
        return out

    def member(self, space: Space, peer: Peer, term: Term) -> z3.BoolRef:
        if isinstance(peer, Pods):
            return space.selects(SubjectKind.ENDPOINT, peer.selector, term)
        if isinstance(peer, NamedPod):
            return z3.And(space.pin(term, self._pod(peer)))
        return z3.And(term.is_kind(Kind.EXTERNAL), z3.Or([term.in_network(n) for n in peer.networks]))

    def _subjects(self, direction: Direction, peer: Peer) -> PolicySet:
        """The rules and default-deny entries that could decide ``direction`` at an endpoint of ``peer``.

        Addresses outside the cluster enforce nothing, so they need none.
        """
        if isinstance(peer, Addresses):
            return PolicySet((), (), (), self.policy.cluster)
        if isinstance(peer, NamedPod):
            ep = self._pod(peer)
            keep = lambda x: selects(x.subject_kind, x.subject, ep)  # noqa: E731
            rules = [r for r in self.policy.rules_for(direction) if keep(r)]
            dds = [d for d in self.policy.default_deny if d.direction is direction and keep(d)]
        else:
            rules = self.index.near(direction, SubjectKind.ENDPOINT, peer.selector)
            dds = self.dd_index.near(direction, SubjectKind.ENDPOINT, peer.selector)
        return PolicySet(tuple(rules), tuple(dds), (), self.policy.cluster)

    def _relevant(self, src: Peer, dst: Peer) -> PolicySet:
        eg, ing = self._subjects(Direction.EGRESS, src), self._subjects(Direction.INGRESS, dst)
        return PolicySet(eg.rules + ing.rules, eg.default_deny + ing.default_deny, (), self.policy.cluster)

    def _space(self, policy: PolicySet, *peers: Peer, unknowns: bool = False) -> Space:
        selectors = [p.selector for p in peers if isinstance(p, Pods)]
        return space_for(policy.rules, policy.default_deny, policy.cluster, self.inventory, selectors, unknowns)

    # ---- flows

    @staticmethod
    def _ports(flow: SymbolicFlow, ports: tuple[PortRange, ...]) -> z3.BoolRef:
        if not ports:
            return z3.BoolVal(True)
        return z3.Or([z3.And(flow.protocol == int(p.protocol), z3.ULE(p.first, flow.port), z3.ULE(flow.port, p.last))
                      for p in ports])

    def counterexample(self, src: Peer, dst: Peer, ports: tuple[PortRange, ...], promised: bool,
                       other_ports: bool) -> tuple[bool, Witness | None, str]:
        """(some flow src → dst on ``ports`` (or on any other port) exists,
        one whose verdict is not ``promised`` or None, the evaluator's account of it)."""
        policy = self._relevant(src, dst)
        # A deny is proved in the gate's model: a toFQDNs peer may be any outside address a DNS answer
        # names (R10.1), so no FQDN allow can break the proof; an allow needs no such freedom.
        space = self._space(policy, src, dst, unknowns=not promised)
        solver = z3.Solver()
        flow = new_flow(space, solver)
        in_ports = self._ports(flow, ports)
        solver.add(z3.Not(flow.same), self.member(space, src, flow.src), self.member(space, dst, flow.dst),
                   z3.Not(in_ports) if other_ports else in_ports)
        if solver.check() != z3.sat:
            return False, None, ""
        solver.add(space.allows(policy, flow) != promised)
        if solver.check() != z3.sat:
            return True, None, ""
        concrete = flow.decode(flow.minimal_model(solver))
        verdict = self.evaluator.evaluate(concrete)
        if verdict.allowed == promised:
            raise AssertionError(f"the Z3 encoding and the evaluator disagree on {concrete}")
        if promised:  # the witness is denied: name the side that drops it and its rules
            side = verdict.egress if not verdict.egress.allowed else verdict.ingress
            witness = Witness(concrete, side.direction, False, tuple(r.id for r in side.rules))
        else:
            witness = Witness(concrete, None, True)
        return True, witness, explain.verdict_text(verdict)

    def flows(self, inv, src: Peer, dst: Peer, ports, promised: bool, other_ports: bool = False) -> Outcome:
        what = "allowed" if promised else "denied"
        exists, witness, why = self.counterexample(src, dst, ports, promised, other_ports)
        if witness is not None:
            return Outcome(inv, False, f"a flow from {src} to {dst} is {'denied' if promised else 'allowed'}",
                           witness, why)
        if not exists and promised:
            return Outcome(inv, False, f"no flow from {src} to {dst}{_on(ports)} exists"
                                       f"{' in the inventory' if self.inventory else ''}: nothing to allow")
        vacuous = "" if exists else " (vacuously: no such flow exists)"
        return Outcome(inv, True, f"every flow from {src} to {dst}{_on(ports, other_ports)} is {what}{vacuous}")

    # ---- invariants

    def prove(self, inv: Invariant) -> Outcome:
        if isinstance(inv, MustAllow):
            return self.flows(inv, inv.src, inv.dst, inv.ports, True)
        if isinstance(inv, MustDeny):
            return self.flows(inv, inv.src, inv.dst, inv.ports, False)
        if isinstance(inv, Isolation):
            there = self.flows(inv, inv.a, inv.b, (), False)
            if not there.holds:
                return there
            back = self.flows(inv, inv.b, inv.a, (), False)
            if not back.holds:
                return back
            return Outcome(inv, True, f"no flow between {inv.a} and {inv.b} is allowed, in either direction")
        if isinstance(inv, WorldOnly):
            world = Addresses(WORLD["world"], "world")
            return self.flows(inv, world, inv.dst, inv.ports, False, other_ports=True)
        return self.default_deny(inv)

    def default_deny(self, inv: DefaultDenyIn) -> Outcome:
        for ns in inv.namespaces:
            pods = Pods(namespace_pods(ns), f"namespace={ns}")
            for direction in inv.directions:
                local = self._subjects(direction, pods)
                space = self._space(local, pods)
                solver = z3.Solver()
                flow = new_flow(space, solver)
                subject, _ = space.sides(flow, direction)
                solver.add(self.member(space, pods, subject),
                           z3.Not(space.default_deny(local.default_deny, direction, subject)))
                if solver.check() != z3.sat:
                    continue
                concrete = flow.decode(solver.model())
                ep = concrete.src if direction is Direction.EGRESS else concrete.dst
                if self.evaluator.is_default_deny(ep, direction):
                    raise AssertionError(f"the Z3 encoding and the evaluator disagree on {ep}")
                return Outcome(inv, False, f"a pod of namespace {ns} is not default-deny in {direction.value} "
                                           f"(no policy with an {direction.value} section selects it)",
                               Witness(endpoint=ep, direction=direction))
        dirs = " and ".join(d.value for d in inv.directions)
        return Outcome(inv, True, f"every pod of {', '.join(inv.namespaces)} is default-deny in {dirs}")


def _on(ports, other: bool = False) -> str:
    if not ports:
        return ""
    text = ", ".join(map(str, ports))
    return f" except on {text}" if other else f" on {text}"


def prove(policy: PolicySet, spec: Spec, inventory: Inventory | None = None) -> list[Outcome]:
    """Every invariant of the spec, in order."""
    prover = _Prover(policy, inventory)
    bad = [d for inv in spec.invariants for d in prover.bad_refs(inv)]
    if bad:
        raise PolicycError(*bad)
    multi = [inv for inv in spec.invariants if isinstance(inv, MULTI_HOP)]
    graph = MultiHop(policy, inventory, multi) if multi else None
    out = []
    for inv in spec.invariants:
        outcome = _chains(graph, inv) if isinstance(inv, MULTI_HOP) else prover.prove(inv)
        reasons = vacuity(inv, inventory) + (graph.empty(inv) if isinstance(inv, MULTI_HOP) else [])
        out.append(replace(outcome, vacuous="; ".join(reasons)) if outcome.holds and reasons else outcome)
    return out


def vacuity(inv: Invariant, inventory: Inventory | None) -> list[str]:
    """Peers that match no pod of the inventory: with one, the proof is over its pods only, so the
    invariant then holds without checking anything (what a typo in a selector looks like)."""
    if inventory is None:
        return []
    peers = [getattr(inv, a) for a in ("src", "dst", "a", "b") if hasattr(inv, a)]
    namespaces = {ep.namespace for ep in inventory.pods}
    return [f"{p} matches no pod of the inventory" for p in peers
            if isinstance(p, Pods) and not inventory.select(p.selector)] + [
        f"namespace {ns!r} matches no pod of the inventory" for ns in getattr(inv, "namespaces", ())
        if ns not in namespaces]


def _chains(graph: MultiHop, inv: Invariant) -> Outcome:
    """A multi-hop invariant: its counter-example is a chain of flows, so it has no one-flow witness."""
    holds, message, explanation, reach = graph.prove(inv)
    return Outcome(inv, holds, message, explanation=explanation, reach=reach)
