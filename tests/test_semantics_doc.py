"""docs/semantics.md defines every rule number that code, messages, tests and docs cite."""
from __future__ import annotations

import re

from cases import ROOT

RULE = re.compile(r"\b(R\d+\.\d+[a-z]?|V\d+)\b")
DEFINED = re.compile(r"^- \*\*(R\d+\.\d+[a-z]?|V\d+)\*\*", re.M)


def cited() -> dict[str, str]:
    """Rule number -> one file citing it, over the package, the tests and the other docs."""
    out: dict[str, str] = {}
    files = [*ROOT.glob("policyc/**/*.py"), *ROOT.glob("policyc/templates/*.j2"), *ROOT.glob("tests/*.py"),
             *ROOT.glob("docs/*.md"), ROOT / "README.md"]
    for path in files:
        if path.name in ("semantics.md", "benchmarks.md"):  # benchmarks: V1 etc. are not rules there
            continue
        for number in RULE.findall(path.read_text(errors="replace")):
            out.setdefault(number, str(path.relative_to(ROOT)))
    return out


def test_every_cited_rule_is_defined():
    defined = set(DEFINED.findall((ROOT / "docs" / "semantics.md").read_text()))
    missing = {n: f for n, f in cited().items() if n not in defined}
    assert not missing, f"cited but not defined in docs/semantics.md: {missing}"


def test_rules_are_defined_once():
    numbers = DEFINED.findall((ROOT / "docs" / "semantics.md").read_text())
    assert len(numbers) == len(set(numbers)) and len(numbers) > 150
