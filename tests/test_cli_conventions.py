"""docs/cli.md holds for every command: -o/--format names, examples and exit status in --help, stdin,
repeatable options that add up, colour rules, completion, and bad input in the chosen format."""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys

import pytest

from cases import E2E_INVENTORY, ROOT, own
from policyc.cli import build_parser, main
from policyc.commands import terminal

VOCABULARY = {"text", "json", "yaml", "sarif", "markdown", "junit", "csv", "dot", "graphml", "svg", "png"}
CASE = own("L12-knp-pod-peer-is-own-namespace")
POLICY = str(CASE / "policies")
INV = str(E2E_INVENTORY)


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every leaf command parser by its command line (endpoint's operations included)."""
    out = {}

    def walk(parser, prefix):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[prefix] = parser
        for action in subs:
            for name, child in action.choices.items():
                walk(child, f"{prefix} {name}".strip())
    walk(build_parser(), "")
    return out


# Commands that can answer "no" (exit 1), and the option or result their table names for it.
ANSWER_NO = {"query": "--expect", "check": "--fail-on", "diff": "--no-new-access", "verify": "invariant fails",
             "compile": "--validate", "paths": "a chain exists"}


@pytest.mark.parametrize("name", sorted(parsers()))
def test_help_has_examples_and_its_own_exit_status(name):
    """Every --help ends with examples and the exit statuses of that command: status 1 only where the
    command has a "no" answer, described by what gives it."""
    text = parsers()[name].format_help()
    assert "examples:" in text and "policyc " in text.split("examples:")[1]
    table = text.split("exit status:")[1]
    for status in ("0 ", "2 ", "3 ", "130"):
        assert f"\n  {status}" in table, (name, status)
    one = [line for line in table.splitlines() if line.startswith("  1 ")]
    if name in ANSWER_NO:
        assert one and ANSWER_NO[name] in " ".join(table.split()), name
    else:
        assert not one, name


@pytest.mark.parametrize("name", sorted(parsers()))
def test_format_is_dash_o_with_shared_names(name):
    actions = {s: a for a in parsers()[name]._actions for s in a.option_strings}
    if "--format" not in actions:
        # the agent prints nothing but its log (--log-format json|text)
        assert name == "agent", f"{name} has no -o/--format"
        return
    action = actions["--format"]
    assert actions.get("-o") is action and actions.get("--output") is action, \
        f"{name}: -o, --format and --output (kubectl's spelling) must be one option"
    assert action.default == "text"
    if name != "compile":  # compile takes any word after -o for the deprecated -o DIR
        assert set(action.choices) <= VOCABULARY and {"text", "json"} <= set(action.choices), name


def run(capsys, *argv: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        from policyc.compiler import source
        source._stdin_bytes.cache_clear()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_dash_reads_policies_and_inventory_from_one_stdin(capsys, monkeypatch):
    """`kubectl get cnp,netpol,ns,pods -A -o yaml | policyc query - --inventory -`: each reader keeps its kinds."""
    text = (CASE / "policies" / "policy.yaml").read_text() + "\n---\n" + E2E_INVENTORY.read_text()
    code, out, err = run(capsys, "query", "-", "--inventory", "-", "--from", "x/b", "--to", "x/a", "--port", "80/TCP",
                         "-o", "json", stdin=text, monkeypatch=monkeypatch)
    assert code == 0, err
    assert json.loads(out)["queries"][0]["verdict"] == "allow"
    code, out, _ = run(capsys, "validate", "-", stdin="kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\n"
                       "metadata: {name: n}\nspec: {podSelector: {}, bogus: 1}\n", monkeypatch=monkeypatch)
    assert code == 2 and "<stdin>:4:" in out and "unknown field 'bogus'" in out


def test_repeated_from_is_a_union(capsys):
    code, out, _ = run(capsys, "query", POLICY, "--inventory", INV, "--from", "x/b", "--from", "x/c",
                       "--to", "x/a", "--port", "80/TCP", "-o", "json")
    queries = json.loads(out)["queries"]
    assert code == 0 and [(q["from"], q["verdict"]) for q in queries] == [("x/b", "allow"), ("x/c", "deny")]


def test_yaml_is_the_json_data(capsys):
    import yaml
    _, as_json, _ = run(capsys, "query", POLICY, "--inventory", INV, "--from", "x/b", "--to", "x/a", "--port",
                        "80/TCP", "-o", "json")
    _, as_yaml, _ = run(capsys, "query", POLICY, "--inventory", INV, "--from", "x/b", "--to", "x/a", "--port",
                        "80/TCP", "-o", "yaml")
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert "\x1b[" in terminal.colourise("x/a: DENY", FakeTTY())
    assert terminal.colourise("x/a: DENY", io.StringIO()) == "x/a: DENY"
    monkeypatch.setenv("NO_COLOR", "")
    assert terminal.colourise("x/a: DENY", FakeTTY()) == "x/a: DENY"


def test_progress_is_quiet_off_a_terminal_and_with_q(monkeypatch):
    items = [1, 2, 3]
    assert terminal.progress(items, 3, "x") is items  # pytest's stderr is no terminal
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    assert terminal.progress(items, 3, "x", quiet=True) is items
    bar = terminal.progress(items, 3, "x")
    assert bar is not items and list(bar) == items and "x" in sys.stderr.getvalue()


def test_shell_completion_offers_the_format_names(tmp_path):
    out = tmp_path / "completions"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_ARGCOMPLETE": "1", "COMP_LINE": "policyc matrix x -o ",
           "COMP_POINT": "20", "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
    subprocess.run([sys.executable, "-m", "policyc.cli"], env=env, check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=())
    assert set(out.read_text().split("\x0b")) == {"text", "json", "yaml", "csv", "markdown"}


def test_compile_output_dir_and_the_deprecated_dash_o_dir(capsys, tmp_path):
    code, _, err = run(capsys, "compile", POLICY, "--inventory", INV, "--output-dir", str(tmp_path / "a"), "-o", "json")
    assert code == 0 and (tmp_path / "a" / "manifest.json").is_file() and "deprecated" not in err
    code, out, err = run(capsys, "compile", POLICY, "--inventory", INV, "-o", str(tmp_path / "b"))
    assert code == 0 and (tmp_path / "b" / "manifest.json").is_file()
    assert "`compile -o" in err and "deprecated" in err and f"--output-dir {tmp_path / 'b'}" in err
    code, _, err = run(capsys, "compile", POLICY, "--inventory", INV)
    assert code == 2 and "--output-dir" in err


def test_baseline_errors_speak_plainly(capsys, tmp_path):
    bad = tmp_path / "baseline.json"
    bad.write_text("{not json")
    code, _, err = run(capsys, "check", POLICY, "--baseline", str(bad))
    assert code == 2 and "not JSON" in err and "JSONDecodeError" not in err and "Error:" not in err
    bad.write_text('{"findings": [{"id": "PC001"}]}')
    code, _, err = run(capsys, "check", POLICY, "--baseline", str(bad))
    assert code == 2 and "fingerprints" in err and "KeyError" not in err


def test_check_speaks_markdown(capsys):
    code, out, _ = run(capsys, "check", str(own("L08-cidr-except") / "policies"), "-o", "markdown",
                       "--fail-on", "never")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("### policyc check: ") and lines[2].startswith("| severity |")
    assert len(lines) > 4 and all(line.startswith("|") and line.endswith("|") for line in lines[2:])


def test_diff_takes_verbose_and_quiet(capsys):
    code, _, err = run(capsys, "diff", POLICY, POLICY, "-v", "-q")
    assert code == 0, err


def _minimal_argv(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """A command line the parser accepts: a value for every positional and required option."""
    argv = name.split()
    for action in parser._actions:
        if action.option_strings and action.required:
            argv += [action.option_strings[-1], action.choices[0] if action.choices else "1"]
        elif not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            argv.append("x")
    return argv


@pytest.mark.parametrize("name", sorted(parsers()))
def test_a_repeated_option_adds_up_or_is_refused(name):
    """docs/cli.md: repeating an option never keeps only the last value. Every option that takes a value
    either collects every one (append) or refuses a second (given twice, exit 2); none silently
    overwrites (argparse's plain store)."""
    from policyc.commands.parser import StoreOnce, UsageError

    parser = parsers()[name]
    base = _minimal_argv(name, parser)
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or isinstance(action, argparse._HelpAction):
            continue
        option = action.option_strings[-1]
        first, second = (action.choices[0], action.choices[-1]) if action.choices else ("1", "2")
        argv = [a for a in base]
        if option in argv:  # a required option: give it twice in place of once
            at = argv.index(option)
            del argv[at:at + 2]
        width = action.nargs if isinstance(action.nargs, int) else 1  # --highlight SRC DST takes two
        argv += [option, *[str(first)] * width, option, *[str(second)] * width]
        if isinstance(action, argparse._AppendAction):
            assert getattr(build_parser().parse_args(argv), action.dest)[-2:] == [first, second], (name, option)
        else:
            assert isinstance(action, StoreOnce), (name, option, type(action).__name__)
            with pytest.raises(UsageError, match="given twice"):
                build_parser().parse_args(argv)
