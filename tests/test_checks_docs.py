"""docs/checks.md cannot drift: every check id `policyc check` emits has a failing and a passing example
under tests/data/checks/<ID>/, the failing one yields exactly that id at the marked line (with a witness
that replays), the passing one yields nothing, and the docs show both files verbatim."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_verify_checks import replay

from policyc.cli import main
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import load_inventory
from policyc.compiler.source import load_documents
from policyc.compiler.verify.checks import run_checks
from policyc.compiler.verify.findings import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = Path(__file__).parent / "data" / "checks"
DOCS = ROOT / "docs" / "checks.md"
DIFF_ONLY = {"PC020", "PC021"}  # reported by `policyc diff`, not by `check`
CHECK_IDS = sorted(set(CATALOGUE) - DIFF_ONLY)


def _args(folder: Path, name: str) -> list[str]:
    inv = folder / "inventory.yaml"
    return [str(folder / name)] + (["--inventory", str(inv)] if inv.exists() else [])


def _findings(folder: Path, name: str, capsys) -> list[dict]:
    assert main(["check", *_args(folder, name), "--format", "json", "--fail-on", "never"]) == 0
    return json.loads(capsys.readouterr().out)["findings"]


def test_every_check_has_examples():
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()) == CHECK_IDS


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_failing_example_yields_exactly_its_id(check_id, capsys):
    folder = EXAMPLES / check_id
    text = (folder / "fail.yaml").read_text()
    marked = [(m.group(1), i) for i, line in enumerate(text.splitlines(), 1)
              for m in re.finditer(r"expect: (PC\d{3})", line)]
    assert [m[0] for m in marked] == [check_id]
    got = [(f["id"], f["location"]["line"]) for f in _findings(folder, "fail.yaml", capsys)]
    assert got == marked
    policy = build_policy_set(load_documents([folder / "fail.yaml"])).policy
    inv = folder / "inventory.yaml"
    for finding in run_checks(policy, load_inventory([inv]) if inv.exists() else None):
        replay(policy, finding)


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_passing_example_yields_nothing(check_id, capsys):
    assert _findings(EXAMPLES / check_id, "pass.yaml", capsys) == []


def test_docs_show_every_example_verbatim():
    docs = DOCS.read_text()
    for check_id in sorted(CATALOGUE):
        info = CATALOGUE[check_id]
        assert f"## {check_id} {info.name}" in docs, check_id
        assert f"Severity: **{info.level.value}**" in docs.split(f"## {check_id} ")[1].split("\n## ")[0], check_id
    for check_id in CHECK_IDS:
        for name in ("fail.yaml", "pass.yaml"):
            assert (EXAMPLES / check_id / name).read_text() in docs, (check_id, name)


def said(check_id: str) -> str:
    """The block under "`policyc check` says:" in the check's section of the docs."""
    section = DOCS.read_text().split(f"\n## {check_id} ")[1].split("\n## ")[0]
    found = re.search(r"`policyc check` says:\n\n```\n(.*?)```", section, re.S)
    assert found, f"docs/checks.md shows no output for {check_id}"
    return found.group(1)


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_docs_show_the_whole_finding(check_id):
    """Everything `check` prints for the failing example but the count line (location, message, related
    locations, witness) is the docs' block, verbatim: the first line alone let witnesses drift. Run as a
    reader runs it, in a fresh process: a witness is one model of Z3's, and within one process earlier
    queries may lead Z3 to another, equally valid one."""
    folder = EXAMPLES.relative_to(ROOT) / check_id
    done = subprocess.run([sys.executable, "-m", "policyc.cli", "check", *_args(folder, "fail.yaml"), "--fail-on",
                           "never"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    printed = done.stdout.splitlines()
    assert re.match(r"\d+ finding\(s\): ", printed[-1]), done.stderr
    assert said(check_id) == "\n".join(printed[:-1]) + "\n"
