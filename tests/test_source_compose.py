"""The YAML composer (policyc/compiler/source.py) reads every input as before it was made fast.

Two oracles, on every YAML file of the project (and ../shared/corpus when present) and a few
thousand seeded mutations of them (tests/yamlcorpus.py):

* ``_Reference``: the composer as it was before issue 15 (one method call per event and per node,
  no cache, the collector running), kept here only, as the oracle for values, positions and every
  diagnostic. It differs from the old code in one place, the fix of this change: a value an
  explicit tag cannot hold (``!!bool 8``, ``!!int ""``, ``!!null 3``) is an error, not a crash or null.
* PyYAML's own composer and constructors (told this reader's rules) for the values of every input
  both read without error, so the reference itself is checked against an independent reader.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import pytest
import yaml

from policyc.cli import main
from policyc.compiler import source
from policyc.compiler.diagnostics import Diagnostic, PolicycError, Severity, format_path
from policyc.compiler.source import MAX_ALIAS_EXPANSION, MAX_DEPTH, Document, parse_text
from yamlcorpus import inputs

MUTATIONS = 3000
_CONSTRUCT = yaml.SafeLoader("")
_TYPED_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool", "null")}
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _mark(event) -> tuple[int, int]:
    return event.start_mark.line + 1, event.start_mark.column + 1


def _fail(file: str, event, path: tuple, message: str) -> PolicycError:
    line, col = _mark(event)
    return PolicycError(Diagnostic(Severity.ERROR, message, file, line, col, format_path(path)))


def _scalar(event, file: str, path: tuple):
    tag = event.tag
    if tag is None and not event.implicit[0]:
        return event.value
    if tag is None or tag == "!":
        tag = _CONSTRUCT.resolve(yaml.ScalarNode, event.value, event.implicit)
    if tag not in _TYPED_TAGS:
        return event.value
    bad = (f"{event.value!r} is not a valid {tag.rsplit(':', 1)[-1]}")
    if tag.endswith(":null") and event.value not in ("", "~", "null", "Null", "NULL"):  # this change's fix
        raise _fail(file, event, path, bad)
    try:
        return _CONSTRUCT.yaml_constructors[tag](_CONSTRUCT, yaml.ScalarNode(tag, event.value))
    except (ValueError, KeyError, IndexError, yaml.YAMLError):  # KeyError, IndexError: this change's fix
        raise _fail(file, event, path, bad) from None


@dataclass
class _Frame:
    path: tuple
    value: dict | list
    anchor: str | None
    key: str | None = None
    size: int = 1


class _Reference:
    """The composer before issue 15 (see the module docstring), fed one event at a time."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.docs: list[Document] = []
        self.doc: Document | None = None
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[object, int]] = {}
        self.expanded = 0
        self.count = 0

    def feed(self, event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.doc = Document(self.file, self.count, None)
            self.count += 1
            self.anchors = {}
        elif isinstance(event, yaml.DocumentEndEvent):
            if self.doc.value is not None:
                self.docs.append(self.doc)
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent, yaml.CollectionStartEvent)):
            self._node(event)
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = self.stack.pop()
            self._finish(frame.value, frame.size, frame.anchor)

    def _node(self, event) -> None:
        top = self.stack[-1] if self.stack else None
        if isinstance(top and top.value, dict) and top.key is None:
            self._key(top, event)
            return
        path = () if top is None else top.path + (
            (len(top.value),) if isinstance(top.value, list) else (top.key,))
        self.doc.marks[path] = _mark(event)
        if isinstance(event, yaml.ScalarEvent):
            self._finish(_scalar(event, self.file, path), 1, event.anchor)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise _fail(self.file, event, path, f"alias *{event.anchor} names no complete anchor before it")
            value, size = self.anchors[event.anchor]
            self.expanded += size
            if self.expanded > MAX_ALIAS_EXPANSION:
                raise _fail(self.file, event, path, "YAML aliases expand to too many values "
                                                    "(an alias bomb?): refused")
            self._finish(value, size, None)
        else:
            if len(self.stack) >= MAX_DEPTH:
                raise _fail(self.file, event, path, f"document nests deeper than {MAX_DEPTH} levels")
            empty = {} if isinstance(event, yaml.MappingStartEvent) else []
            self.stack.append(_Frame(path, empty, event.anchor))

    def _key(self, top: _Frame, event) -> None:
        if not isinstance(event, yaml.ScalarEvent):
            raise _fail(self.file, event, top.path, "mapping keys must be plain strings")
        key = event.value
        if event.tag is None and _CONSTRUCT.resolve(yaml.ScalarNode, key, event.implicit) == _MERGE_TAG:
            raise _fail(self.file, event, top.path, "YAML merge keys (<<) are not supported")
        self.doc.key_marks[top.path + (key,)] = _mark(event)
        if key in top.value:
            raise _fail(self.file, event, top.path + (key,), f"duplicate key {key!r}")
        top.key = key

    def _finish(self, value, size: int, anchor: str | None) -> None:
        if anchor:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.doc.value = value
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.value, list):
            top.value.append(value)
        else:
            top.value[top.key] = value
            top.key = None


def _reference_compose(events, file: str) -> list[Document]:
    composer = _Reference(file)
    for event in events:
        composer.feed(event)
    return composer.docs


def outcome(text: str, name: str):
    """What a reader makes of ``text``, comparable with ==: each document's index, value (repr: 1,
    1.0 and True differ), positions of values and keys; or the diagnostics, rendered."""
    try:
        return "ok", [(d.file, d.index, repr(d.value), d.marks, d.key_marks) for d in parse_text(text, name)]
    except PolicycError as exc:
        return "error", [str(d) for d in exc.diagnostics]


class _Plain(yaml.SafeLoader):
    """PyYAML's composer and constructors with this reader's rules: keys are their text, only ints,
    floats, booleans and nulls are typed (timestamps, binary, unknown tags stay text) and a tag on a
    collection changes nothing."""

    def construct_mapping(self, node, deep=False):
        return {key.value: self.construct_object(value, deep=True) for key, value in node.value}


def _untyped(loader, *args):
    node = args[-1]
    if isinstance(node, yaml.ScalarNode):
        return node.value
    if isinstance(node, yaml.SequenceNode):
        return [loader.construct_object(child, deep=True) for child in node.value]
    return loader.construct_mapping(node)


for _tag in ("timestamp", "binary", "set", "omap", "pairs", "seq", "map", "str"):
    _Plain.add_constructor(f"tag:yaml.org,2002:{_tag}", _untyped)
_Plain.add_multi_constructor("", _untyped)


def _pyyaml_values(text: str) -> list[str] | None:
    """repr of every non-null document's value by PyYAML, None where PyYAML refuses the input."""
    try:
        return [repr(v) for v in yaml.load_all(text, Loader=_Plain) if v is not None]
    except (yaml.YAMLError, RecursionError):
        return None


@pytest.fixture(scope="module")
def corpus():
    return inputs(MUTATIONS)


def test_corpus_reaches_every_path(corpus):
    """The mutations meet the error paths as well as the plain ones, else the comparison proves little."""
    found = {}
    for name, text in corpus:
        kind, result = outcome(text, name)
        found.setdefault(kind, 0)
        found[kind] += 1
        for message in result if kind == "error" else ():
            for what in ("malformed", "duplicate key", "not a valid", "names no complete anchor",
                         "merge keys", "plain strings"):
                found[what] = found.get(what, 0) + (what in message)
    assert len(corpus) >= MUTATIONS + 200
    assert all(found.get(what, 0) >= 10 for what in ("ok", "error", "malformed", "duplicate key", "not a valid",
                                                     "names no complete anchor", "merge keys", "plain strings")), found


def test_composer_agrees_with_the_reference(corpus, monkeypatch):
    """Values, positions and diagnostics, input by input (see the module docstring)."""
    differ = []
    for name, text in corpus:
        new = outcome(text, name)
        with monkeypatch.context() as patch:
            patch.setattr(source, "_compose", _reference_compose)
            old = outcome(text, name)
        if new != old:
            differ.append((name, new, old))
    assert not differ, differ[:3]


def test_values_agree_with_pyyaml(corpus):
    """Every input the reader takes, PyYAML reads to the same values (with this reader's rules, see
    _Plain). PyYAML refuses some the reader takes: a repeated anchor (YAML 1.2 allows it) and a tab
    its scanner rejects where libyaml's does not."""
    compared = 0
    for name, text in corpus:
        kind, docs = outcome(text, name)
        theirs = _pyyaml_values(text) if kind == "ok" else None
        if theirs is None:
            continue
        compared += 1
        assert [value for _, _, value, _, _ in docs] == theirs, name
    assert compared >= 1000


@pytest.mark.parametrize("scalar,kind", [
    ("!!bool 8", "bool"), ('!!bool ""', "bool"), ("!!bool 1", "bool"), ("!!int x", "int"), ('!!int ""', "int"),
    ("!!int 0x", "int"), ("!!float y", "float"), ('!!float ""', "float"), ("!!null 3", "null"),
    ("!!null false", "null"), ("0x_", "int")])
def test_value_its_tag_cannot_hold(tmp_path, capsys, scalar, kind):
    """`policyc validate` names file:line:column and the field, exits 2, no traceback (``!!bool 8``
    raised KeyError, ``!!int ""`` IndexError, ``!!null 3`` read as null)."""
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(f"""\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {{name: p, namespace: x}}
        spec:
          endpointSelector: {{}}
          ingress:
          - toPorts: [{{ports: [{{port: {scalar}}}]}}]
        """))
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr()
    text = scalar.split(" ", 1)[-1] if scalar.startswith("!") else scalar
    assert (f"{path}:7:31: error: spec.ingress[0].toPorts[0].ports[0].port: "
            f"{text.strip(chr(34))!r} is not a valid {kind}") in out.out + out.err
    assert "Traceback" not in out.out + out.err and "internal error" not in out.out + out.err


@pytest.mark.parametrize("scalar,value", [
    ("!!bool yes", True), ("!!bool OFF", False), ('!!int "12"', 12), ("!!int 0x1F", 31), ("!!float 8", 8.0),
    ("!!float .inf", math.inf), ("!!null ~", None), ("!!null", None), ("!!str 8", "8"), ("!!foo z", "z"),
    ("!local 8", "8"), ("! 8", 8), ("!!timestamp 2020-01-01", "2020-01-01"), ("!!binary aGk=", "aGk=")])
def test_values_tags_hold(scalar, value):
    """What the tags that fit give: YAML 1.1's values for the four typed tags; any other tag, known
    (str, timestamp, binary) or not, leaves the text, as Kubernetes' reader does."""
    (doc,) = parse_text(f"a: {scalar}\n", "t.yaml")
    assert doc.value == {"a": value} and type(doc.value["a"]) is type(value)


def test_collector_is_back_on_after_an_error():
    """The collector paused while composing is on again whatever happened."""
    import gc
    assert gc.isenabled()
    with pytest.raises(PolicycError):
        parse_text("a: !!bool 8\n", "t.yaml")
    assert gc.isenabled()
    source.read_documents([])
    assert gc.isenabled()
