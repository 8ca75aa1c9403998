"""docs/diagnostics.md shows what policyc really prints: every example is run again here.

Each example is marked `<!-- diag: FILE exit N -->`, followed by the file's content (a yaml block,
except for binary input) and a console block `$ policyc validate FILE` with the diagnostic lines.
"""
from __future__ import annotations

import json
import re

import pytest

from cases import ROOT
from policyc.cli import main

DOC = ROOT / "docs" / "diagnostics.md"
DATA = ROOT / "tests" / "data" / "diagnostics"
MARK = re.compile(r"<!-- diag: (\S+) exit (\d) -->\n(?:```yaml\n(.*?)```\n)?.*?```console\n\$ policyc validate (\S+)\n"
                  r"(.*?)```", re.S)


def examples() -> list[tuple]:
    return MARK.findall(DOC.read_text())


def run_validate(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(DATA)
    code = main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out + err


def test_every_example_file_is_documented():
    documented = {e[0] for e in examples()}
    assert len(documented) >= 25
    assert documented == {p.name for p in DATA.iterdir()}


@pytest.mark.parametrize("name,status,content,command_file,output", examples(), ids=[e[0] for e in examples()])
def test_documented_output(name, status, content, command_file, output, capsys, monkeypatch):
    assert command_file == name
    if content:
        assert (DATA / name).read_text() == content, f"the yaml block of {name} differs from the file"
    code, printed = run_validate(capsys, monkeypatch, name)
    diagnostics = [line for line in printed.splitlines() if ": error:" in line or ": warning:" in line]
    assert diagnostics == output.splitlines()
    assert code == int(status)
    assert "Traceback" not in printed


def test_documented_json(capsys, monkeypatch):
    name, block = re.search(r"<!-- diag-json: (\S+) -->\n```json\n(.*?)```", DOC.read_text(), re.S).groups()
    code, printed = run_validate(capsys, monkeypatch, name, "--format", "json")
    assert code == 2
    assert json.loads(printed) == json.loads(block)
