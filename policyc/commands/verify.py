"""`policyc verify PATH... --spec SPEC`: invariants written next to the policies, proved for every flow."""
from __future__ import annotations

import sys

import xml.etree.ElementTree as ET

from ..compiler.verify.findings import witness_json, witness_text
from ..compiler.verify.invariants import Outcome, prove
from ..compiler.diagnostics import Diagnostic, Severity
from ..compiler.verify.spec import load_spec
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
    parser.add_argument("--allow-vacuous", action="store_true",
                        help="an invariant that checked nothing (its selector matches no pod of the inventory) "
                             "does not fail the run; it is reported VACUOUS, skipped in JUnit")
    parser.set_defaults(run=run)


def _status(o: Outcome) -> str:
    return "FAIL" if not o.holds else "VACUOUS" if o.vacuous else "PASS"


def _text(o: Outcome) -> str:
    inv = o.invariant
    lines = [f"{_status(o)} {inv.kind} {inv.name!r} ({inv.location}): {o.message}"
             + (f" (vacuous: {o.vacuous})" if o.vacuous else "")]
    if o.witness:
        lines.append(f"  {witness_text(o.witness)}")
    lines += [f"  {line}" for line in o.explanation.splitlines()]
    return "\n".join(lines)


def vacuous(outcomes: list[Outcome]) -> list[Diagnostic]:
    """Warnings for invariants that checked nothing (a selector for no pod of the inventory, an
    address no place holds): a typo would otherwise pass as a proof."""
    out = []
    for o in outcomes:
        if o.vacuous:
            loc = o.invariant.location
            out.append(Diagnostic(Severity.WARNING, f"{o.vacuous}: {o.invariant.kind} {o.invariant.name!r} holds "
                                  "for the inventory without checking anything", loc.file, loc.line, loc.column,
                                  loc.field, "vacuous-invariant"))
    return out


def _counts(outcomes: list[Outcome]) -> tuple[int, int, int]:
    """(held, vacuous, failed)."""
    failed = sum(not o.holds for o in outcomes)
    empty = sum(bool(o.vacuous) for o in outcomes)
    return len(outcomes) - failed - empty, empty, failed


def render_text(outcomes: list[Outcome]) -> str:
    held, empty, failed = _counts(outcomes)
    return "\n".join([_text(o) for o in outcomes]
                     + [f"{len(outcomes)} invariant(s): {held} hold, " + (f"{empty} vacuous, " if empty else "")
                        + f"{failed} failed"])


def outcomes_data(outcomes: list[Outcome]) -> dict:
    def one(o: Outcome) -> dict:
        loc = o.invariant.location
        return {"name": o.invariant.name, "kind": o.invariant.kind, "holds": o.holds,
                "vacuous": bool(o.vacuous), "message": o.message + (f" (vacuous: {o.vacuous})" if o.vacuous else ""),
                "location": {"file": loc.file, "line": loc.line, "column": loc.column, "field": loc.field},
                "witness": witness_json(o.witness) if o.witness else None, "explanation": o.explanation or None,
                **({"reach": o.reach} if o.reach is not None else {})}
    held, empty, failed = _counts(outcomes)
    return {"invariants": [one(o) for o in outcomes], "passed": held, "vacuous": empty, "failed": failed}


def render_junit(outcomes: list[Outcome], allow_vacuous: bool = False) -> str:
    """One test case per invariant; a failure's body is the witness and the evaluator's account of it.
    A vacuous invariant is skipped with ``--allow-vacuous``, a failure (type ``vacuous``) otherwise."""
    _, empty, failed = _counts(outcomes)
    failures, skipped = (failed, empty) if allow_vacuous else (failed + empty, 0)
    suites = ET.Element("testsuites", name="policyc verify", tests=str(len(outcomes)), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name="policyc verify", tests=str(len(outcomes)),
                          failures=str(failures), errors="0", skipped=str(skipped))
    for o in outcomes:
        loc = o.invariant.location
        case = ET.SubElement(suite, "testcase", name=o.invariant.name, classname=f"policyc.verify.{o.invariant.kind}",
                             file=loc.file, line=str(loc.line))
        if not o.holds:
            failure = ET.SubElement(case, "failure", message=o.message, type=o.invariant.kind)
            failure.text = "\n".join(x for x in (f"{loc}: {o.message}",
                                                 witness_text(o.witness) if o.witness else "", o.explanation) if x)
        elif o.vacuous:
            message = f"checked nothing: {o.vacuous}"
            ET.SubElement(case, "skipped" if allow_vacuous else "failure", message=message,
                          **({} if allow_vacuous else {"type": "vacuous"})).text = f"{loc}: {message}"
        else:
            ET.SubElement(case, "system-out").text = o.message
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def run(args) -> int:
    spec = load_spec(args.spec)
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args) if args.inventory else None
    outcomes = prove(policy, spec, inventory)
    for diag in vacuous(outcomes) if not args.quiet else ():
        print(diag, file=sys.stderr)
    if args.format in ("json", "yaml"):
        print(structured(outcomes_data(outcomes), args.format))
    elif args.format == "junit":
        print(render_junit(outcomes, args.allow_vacuous))
    else:
        say(render_text(outcomes))
    refused = any(not o.holds or (o.vacuous and not args.allow_vacuous) for o in outcomes)
    return 1 if refused else 0
