"""`policyc verify PATH... --spec SPEC`: invariants written next to the policies, proved for every flow."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from ..compiler.verify.findings import witness_json, witness_text
from ..compiler.verify.invariants import Outcome, prove
from ..compiler.verify.spec import load_spec
from .common import add_inventory_arg, add_policy_args, bind_services, load_inventory_arg, load_policy_args


def register(sub) -> None:
    parser = sub.add_parser("verify", help="prove the invariants of a spec file for every flow (Z3)")
    add_policy_args(parser, ("text", "json", "junit"))
    parser.add_argument("--spec", required=True, metavar="SPEC",
                        help="invariants: mustAllow, mustDeny, isolation, defaultDeny, worldOnly (docs/spec.md)")
    add_inventory_arg(parser, required=False)
    parser.set_defaults(run=run)


def _text(o: Outcome) -> str:
    inv = o.invariant
    lines = [f"{'PASS' if o.holds else 'FAIL'} {inv.kind} {inv.name!r} ({inv.location}): {o.message}"]
    if o.witness:
        lines.append(f"  {witness_text(o.witness)}")
    lines += [f"  {line}" for line in o.explanation.splitlines()]
    return "\n".join(lines)


def render_text(outcomes: list[Outcome]) -> str:
    failed = sum(not o.holds for o in outcomes)
    return "\n".join([_text(o) for o in outcomes]
                     + [f"{len(outcomes)} invariant(s): {len(outcomes) - failed} hold, {failed} failed"])


def render_json(outcomes: list[Outcome]) -> str:
    def one(o: Outcome) -> dict:
        loc = o.invariant.location
        return {"name": o.invariant.name, "kind": o.invariant.kind, "holds": o.holds, "message": o.message,
                "location": {"file": loc.file, "line": loc.line, "column": loc.column, "field": loc.field},
                "witness": witness_json(o.witness) if o.witness else None, "explanation": o.explanation or None}
    failed = sum(not o.holds for o in outcomes)
    return json.dumps({"invariants": [one(o) for o in outcomes], "passed": len(outcomes) - failed,
                       "failed": failed}, indent=2)


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


_RENDER = {"text": render_text, "json": render_json, "junit": render_junit}


def run(args) -> int:
    spec = load_spec(args.spec)
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args) if args.inventory else None
    policy = bind_services(args, policy, inventory)
    outcomes = prove(policy, spec, inventory)
    print(_RENDER[args.format](outcomes))
    return 0 if all(o.holds for o in outcomes) else 1
