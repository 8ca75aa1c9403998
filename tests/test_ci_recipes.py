"""The CI recipes stay runnable: docs/ci.md's YAML parses, its sample comment is what `diff` prints, and
every pre-commit hook runs an existing policyc command."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from policyc.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
CI = (ROOT / "docs" / "ci.md").read_text()


def test_yaml_blocks_parse():
    blocks = re.findall(r"```yaml\n(.*?)```", CI, re.S)
    assert len(blocks) >= 3
    for block in blocks:
        assert isinstance(yaml.safe_load(block), (dict, list))
    workflow = yaml.safe_load(blocks[0])
    steps = workflow["jobs"]["policyc"]["steps"]
    assert any(s.get("uses", "").startswith("github/codeql-action/upload-sarif") for s in steps)
    runs = " ".join(s.get("run", "") for s in steps)
    assert "--format sarif" in runs and "--format markdown --no-new-access" in runs and "gh pr comment" in runs


def test_sample_comment_is_current(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["diff", "tests/data/diff/old.yaml", "tests/data/diff/new.yaml", "--format", "markdown", "--no-new-access"])
    assert capsys.readouterr().out.strip() in CI


def test_pre_commit_hooks_name_commands():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} >= {"policyc-validate", "policyc-check"}
    for hook in hooks:
        program, command, *options = hook["entry"].split()
        assert program == "policyc" and command in COMMANDS and hook["language"] == "python"
