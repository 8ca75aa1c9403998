"""`policyc verify PATH... --spec SPEC`: invariants written next to the policies, proved for every flow."""
from __future__ import annotations

import sys

import xml.etree.ElementTree as ET

from ..compiler.verify.findings import witness_json, witness_text
from ..compiler.verify.invariants import Outcome, prove
from ..compiler.diagnostics import Diagnostic, Severity
from ..compiler.evaluate import subject_labels
from ..compiler.verify.spec import Pods, load_spec
from .common import (add_inventory_arg, add_policy_args, load_inventory_arg, load_policy_args, structured,
                     subcommand)
from .terminal import say

EXAMPLES = """
policyc verify examples/shop/policies --inventory examples/shop/inventory.yaml --spec examples/shop/invariants.yaml
policyc verify policies/ --spec invariants.yaml -o junit > verify.xml   # one test case per invariant
"""


def register(sub) -> None:
    parser = subcommand(sub, "verify", "prove the invariants of spec files for every flow (Z3)", EXAMPLES,
                        answer_no="an invariant fails")
    add_policy_args(parser, ("text", "json", "yaml", "junit"))
    parser.add_argument("--spec", required=True, action="append", metavar="SPEC",
                        help="invariants: mustAllow, mustDeny, isolation, defaultDeny, worldOnly, noPath, "
                        "maxBlastRadius (docs/spec.md); repeatable: the invariants of every file")
    add_inventory_arg(parser, required=False)
    parser.set_defaults(run=run)


def _text(o: Outcome) -> str:
    inv = o.invariant
    lines = [f"{'PASS' if o.holds else 'FAIL'} {inv.kind} {inv.name!r} ({inv.location}): {o.message}"]
    if o.witness:
        lines.append(f"  {witness_text(o.witness)}")
    lines += [f"  {line}" for line in o.explanation.splitlines()]
    return "\n".join(lines)


def vacuous(spec, inventory) -> list[Diagnostic]:
    """Warnings for selectors and namespaces that match no pod of the inventory: their invariants hold
    for these pods only because there are none (a typo would pass as a proof)."""
    out = []
    namespaces = {ep.namespace for ep in inventory.pods}
    for inv in spec.invariants:
        empty = [str(peer) for peer in (getattr(inv, a) for a in ("src", "dst", "a", "b") if hasattr(inv, a))
                 if isinstance(peer, Pods) and not any(peer.selector.matches(subject_labels(ep))
                                                       for ep in inventory.pods)]
        empty += [f"namespace {ns!r}" for ns in getattr(inv, "namespaces", ()) if ns not in namespaces]
        loc = inv.location
        out += [Diagnostic(Severity.WARNING, f"{what} matches no pod of the inventory: {inv.kind} {inv.name!r} "
                           "holds for the inventory without checking anything", loc.file, loc.line, loc.column,
                           loc.field, "vacuous-invariant") for what in empty]
    return out


def render_text(outcomes: list[Outcome]) -> str:
    failed = sum(not o.holds for o in outcomes)
    return "\n".join([_text(o) for o in outcomes]
                     + [f"{len(outcomes)} invariant(s): {len(outcomes) - failed} hold, {failed} failed"])


def outcomes_data(outcomes: list[Outcome]) -> dict:
    def one(o: Outcome) -> dict:
        loc = o.invariant.location
        return {"name": o.invariant.name, "kind": o.invariant.kind, "holds": o.holds, "message": o.message,
                "location": {"file": loc.file, "line": loc.line, "column": loc.column, "field": loc.field},
                "witness": witness_json(o.witness) if o.witness else None, "explanation": o.explanation or None,
                **({"reach": o.reach} if o.reach is not None else {})}
    failed = sum(not o.holds for o in outcomes)
    return {"invariants": [one(o) for o in outcomes], "passed": len(outcomes) - failed, "failed": failed}


def render_junit(outcomes: list[Outcome]) -> str:
    """One test case per invariant; a failure's body is the witness and the evaluator's account of it."""
    failed = sum(not o.holds for o in outcomes)
    suites = ET.Element("testsuites", name="policyc verify", tests=str(len(outcomes)), failures=str(failed))
    suite = ET.SubElement(suites, "testsuite", name="policyc verify", tests=str(len(outcomes)),
                          failures=str(failed), errors="0", skipped="0")
    for o in outcomes:
        loc = o.invariant.location
        case = ET.SubElement(suite, "testcase", name=o.invariant.name, classname=f"policyc.verify.{o.invariant.kind}",
                             file=loc.file, line=str(loc.line))
        if not o.holds:
            failure = ET.SubElement(case, "failure", message=o.message, type=o.invariant.kind)
            failure.text = "\n".join(x for x in (f"{loc}: {o.message}",
                                                 witness_text(o.witness) if o.witness else "", o.explanation) if x)
        else:
            ET.SubElement(case, "system-out").text = o.message
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def run(args) -> int:
    spec = load_spec(args.spec)
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args) if args.inventory else None
    if inventory is not None and not args.quiet:
        for diag in vacuous(spec, inventory):
            print(diag, file=sys.stderr)
    outcomes = prove(policy, spec, inventory)
    if args.format in ("json", "yaml"):
        print(structured(outcomes_data(outcomes), args.format))
    elif args.format == "junit":
        print(render_junit(outcomes))
    else:
        say(render_text(outcomes))
    return 0 if all(o.holds for o in outcomes) else 1
