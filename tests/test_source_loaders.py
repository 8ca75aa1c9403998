"""libyaml's parser and PyYAML's pure-Python one (the fallback where libyaml is missing) give the
same documents, positions and diagnostics, on every shipped YAML file and 3,000 seeded mutations.

Two differences belong to the parsers themselves and are pinned here rather than hidden:

* Syntax errors are worded by each parser ("mapping values are not allowed in this context" against
  "... here"), and for a few inputs placed differently: both refuse the input, with a position.
* PyYAML's scanner refuses a tab in places libyaml accepts (inside a plain scalar's line): an input
  with a tab that PyYAML reads, libyaml reads the same; the reverse does not hold.
* An empty value in a flow mapping (``{a: , b: 1}``) has no text of its own: PyYAML marks it just after
  the colon, libyaml at the token that ends it. The two marks are on one line with only blanks between.
* A colon right before a flow indicator (``{a:, b}``): PyYAML reads a key with an empty value, libyaml
  refuses it ("found unexpected ':'", at that colon).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from policyc.compiler import source
from test_source_compose import outcome
from yamlcorpus import ROOT, inputs

MUTATIONS = 3000


def _syntax(result) -> bool:
    return result[0] == "error" and all(": error: malformed " in d for d in result[1])


def _outcomes(text: str, name: str) -> tuple:
    """(libyaml's outcome, the fallback's outcome) of ``text``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(source, "_Loader", yaml.CSafeLoader)
        fast = outcome(text, name)
        patch.setattr(source, "_Loader", yaml.SafeLoader)
        return fast, outcome(text, name)


@pytest.fixture(scope="module")
def both():
    """(name, text, libyaml's outcome, the fallback's outcome) of every input."""
    out = []
    for name, text in inputs(MUTATIONS):
        out.append((name, text, *_outcomes(text, name)))
    return out


def _blank_between(text: str, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Marks ``a`` and ``b`` (line, column) are on one line with only blanks between them."""
    line = text.splitlines()[a[0] - 1] if a[0] == b[0] else None
    return line is not None and not line[min(a[1], b[1]) - 1:max(a[1], b[1]) - 1].strip()


def _empty_value_marks_only(text: str, fast, pure) -> bool:
    """The outcomes differ only where an empty flow value is marked (the module docstring)."""
    if fast[0] != "ok" or pure[0] != "ok" or len(fast[1]) != len(pure[1]):
        return False
    for (*same_f, marks_f, keys_f), (*same_p, marks_p, keys_p) in zip(fast[1], pure[1]):
        if same_f != same_p or keys_f != keys_p or marks_f.keys() != marks_p.keys():
            return False
        if not all(_blank_between(text, marks_f[k], marks_p[k]) for k in marks_f if marks_f[k] != marks_p[k]):
            return False
    return True


def _colon_libyaml_refuses(text: str, fast) -> bool:
    """libyaml refused a colon that a flow indicator follows (the module docstring)."""
    if not _syntax(fast) or len(fast[1]) != 1 or "found unexpected ':'" not in fast[1][0]:
        return False
    line, col = (int(x) for x in fast[1][0].split(": error:")[0].rsplit(":", 2)[1:])
    rest = text.splitlines()[line - 1][col - 1:]
    return rest[:1] == ":" and rest[1:2] in (",", "}", "]")


def test_same_documents_and_diagnostics(both):
    differ = [(name, fast, pure) for name, text, fast, pure in both if "\t" not in text and fast != pure
              and not (_syntax(fast) and _syntax(pure)) and not _empty_value_marks_only(text, fast, pure)
              and not _colon_libyaml_refuses(text, fast)]
    assert not differ, differ[:3]
    compared = sum(1 for _, text, fast, _ in both if "\t" not in text and not _syntax(fast))
    assert compared >= 1500


def test_an_empty_flow_value_is_the_one_mark_the_parsers_place_apart():
    """Pins the difference the module docstring names, so a change in either parser shows."""
    text = "a: {b: , c: 1}\n"
    fast, pure = _outcomes(text, "t.yaml")
    assert fast != pure and _empty_value_marks_only(text, fast, pure)
    assert fast[1][0][3][("a", "b")] != pure[1][0][3][("a", "b")]


def test_a_colon_before_a_flow_indicator_only_pyyaml_reads():
    """Pins the other difference the module docstring names."""
    text = "a: {b:, c: 1}\n"
    fast, pure = _outcomes(text, "t.yaml")
    assert pure[0] == "ok" and _colon_libyaml_refuses(text, fast)


def test_tabs_pyyaml_reads_libyaml_reads_the_same(both):
    differ = [(name, fast, pure) for name, text, fast, pure in both if "\t" in text and pure[0] == "ok"
              and fast != pure and not _empty_value_marks_only(text, fast, pure)]
    assert not differ, differ[:3]


@pytest.mark.parametrize("text,where,code", [
    ("kind: \x07bell\n", "1:7", "U+0007"), ("\u00e9\u00e9\u00e9: a\x07\n", "1:7", "U+0007"),
    ("a: \u00e9\u00e9\u00e9\nb: \x07\n", "2:4", "U+0007"), ("\U0001F600: \x7f\n", "1:4", "U+007F")])
def test_control_character_placed_in_characters(text, where, code, monkeypatch):
    """libyaml reports a forbidden character's place in bytes: after an é it was a column late (or
    on the next line); both readers now name the character's line and column, in the same words."""
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):
        monkeypatch.setattr(source, "_Loader", loader)
        assert outcome(text, "f.yaml") == ("error", [f"f.yaml:{where}: error: malformed YAML: "
                                                     f"character {code} is not allowed"]), loader


def test_cli_without_libyaml(tmp_path):
    """A Python whose PyYAML lacks libyaml reads with the fallback: same output, exit status and no traceback."""
    good = tmp_path / "good.yaml"
    good.write_text(textwrap.dedent("""\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: p, namespace: x}
        spec:
          endpointSelector: {}
          ingress: [{fromEndpoints: [{}], toPorts: [{ports: [{port: "80", protocol: TCP}]}]}]
        """))
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace('"80"', "!!bool 8"))
    hide = "import yaml; del yaml.CSafeLoader; "
    runs = {}
    for label, prelude in (("libyaml", ""), ("fallback", hide)):
        code = (f"import sys; {prelude}from policyc.compiler import source; from policyc.cli import main; "
                f"print(source._Loader.__name__); sys.exit(main(['validate', {str(good)!r}, {str(bad)!r}]))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        loader, _, rest = proc.stdout.partition("\n")
        runs[label] = (loader, proc.returncode, rest, proc.stderr)
    assert runs["libyaml"][0] == "CSafeLoader" and runs["fallback"][0] == "SafeLoader"
    assert runs["libyaml"][1:] == runs["fallback"][1:]
    assert runs["fallback"][1] == 2 and f"{bad}:6:61: error: " in runs["fallback"][2], runs["fallback"]
    assert "Traceback" not in runs["fallback"][3]
