"""YAML and JSON with positions.

Documents are built from libyaml's parse events (not constructed), so every
value keeps its line and column; nesting depth and alias expansion have
budgets so that deep nesting or an alias bomb is refused in bounded time and
memory instead of crashing or expanding.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .diagnostics import Diagnostic, PolicycError, Severity, format_path

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml is in every supported install
    _Loader = yaml.SafeLoader

SUFFIXES = (".yaml", ".yml", ".json")
STDIN, STDIN_NAME = "-", "<stdin>"  # a path of "-" reads standard input (docs/cli.md)
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_ALIAS_EXPANSION = 100_000
MAX_DEPTH = 200


@dataclass
class Document:
    """One YAML document: plain Python values plus the position of every path in it."""

    file: str
    index: int
    value: object
    marks: dict = field(default_factory=dict)       # path -> (line, column) of the value
    key_marks: dict = field(default_factory=dict)   # path -> (line, column) of its key

    def position(self, path: tuple) -> tuple[int, int]:
        """The closest known position: the key if the path names a field, else the value, else a parent."""
        for cut in range(len(path), -1, -1):
            sub = path[:cut]
            if sub in self.key_marks:
                return self.key_marks[sub]
            if sub in self.marks:
                return self.marks[sub]
        return (1, 1)

    def diag(self, path: tuple, message: str, severity: Severity = Severity.ERROR, code: str = "") -> Diagnostic:
        line, col = self.position(path)
        return Diagnostic(severity, message, self.file, line, col, format_path(path), code)


_CONSTRUCT = yaml.SafeLoader("")
_TYPED_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("int", "float", "bool", "null")}
_NULL_TAG, _BOOL_TAG = "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})  # YAML 1.1's null forms, what !!null may hold


@functools.lru_cache(maxsize=1 << 16)
def _scalar(tag: str | None, plain: bool, text: str):
    """ints, floats, booleans and nulls as YAML 1.1 reads them; everything else stays text.

    Raises ValueError(tag) for a value its tag cannot hold (``!!bool 8``, ``!!int x``, ``!!null 3``,
    a plain ``0x_``), as Kubernetes' YAML reader refuses them. Cached because a cluster's files
    repeat the same few thousand scalars (names, ports, protocols) hundreds of thousands of times.
    """
    if tag is None or tag == "!":
        if not plain:  # quoted: always text
            return text
        tag = _CONSTRUCT.resolve(yaml.ScalarNode, text, (True, False))
    if tag not in _TYPED_TAGS:
        return text
    if (tag == _NULL_TAG and text not in _NULLS) or (tag == _BOOL_TAG and text.lower() not in _CONSTRUCT.bool_values):
        raise ValueError(tag)
    try:
        return _CONSTRUCT.yaml_constructors[tag](_CONSTRUCT, yaml.ScalarNode(tag, text))
    except (ValueError, IndexError, yaml.YAMLError):  # IndexError: "" under !!int or !!float
        raise ValueError(tag) from None


def _mark(event) -> tuple[int, int]:
    return event.start_mark.line + 1, event.start_mark.column + 1


def _fail(file: str, event, path: tuple, message: str) -> PolicycError:
    line, col = _mark(event)
    return PolicycError(Diagnostic(Severity.ERROR, message, file, line, col, format_path(path)))


@contextlib.contextmanager
def gc_paused():
    """The cyclic collector off while a phase allocates much and frees little: composing allocates a
    few hundred thousand dicts, lists and tuples and frees none, so the collector would only rescan
    them, again and again (a third of the time at 10,000 pods).  Nested pauses leave the collector to
    the outermost one."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _compose(events, file: str) -> list[Document]:
    """Parse events → Documents in one loop: no recursion, so any nesting fails cleanly, and no
    call per event or node (a method call or two per event was half of reading a 10,000-pod cluster).

    The open container lives in local variables (``path``, ``value``, ``is_map``, ``key``, ``size``,
    ``anchor``; ``value`` is None at a document's top) and the enclosing ones on ``stack``. ``size``
    counts a container's nodes, aliases expanded. Depth is checked as containers open, so a deeply
    nested file is refused after MAX_DEPTH events instead of letting libyaml grind through all of it.
    An alias shares the anchored value instead of copying it, and the nodes it stands for are
    counted against MAX_ALIAS_EXPANSION, so an alias bomb is refused in bounded memory.
    """
    docs: list[Document] = []
    doc = Document(file, 0, None)
    marks, key_marks = doc.marks, doc.key_marks
    anchors: dict[str, tuple[object, int]] = {}
    expanded = count = 0
    stack: list[tuple] = []
    path: tuple = ()
    value: dict | list | None = None
    is_map, key, key_path, size, anchor = False, None, (), 0, None
    scalar, alias, mapping, sequence = (yaml.ScalarEvent, yaml.AliasEvent, yaml.MappingStartEvent,
                                        yaml.SequenceStartEvent)  # locals: looked up once per event
    for event in events:
        kind = event.__class__
        if kind is scalar or kind is alias:
            mark = event.start_mark
            if is_map and key is None:
                if kind is not scalar:
                    raise _fail(file, event, path, "mapping keys must be plain strings")
                key = event.value
                if key == "<<" and event.tag is None and event.implicit[0]:  # the resolver's merge rule
                    raise _fail(file, event, path, "YAML merge keys (<<) are not supported")
                key_path = path + (key,)  # also the path of the value that follows
                key_marks[key_path] = (mark.line + 1, mark.column + 1)
                if key in value:
                    raise _fail(file, event, key_path, f"duplicate key {key!r}")
                continue
            node_path = key_path if is_map else () if value is None else path + (len(value),)
            marks[node_path] = (mark.line + 1, mark.column + 1)
            if kind is scalar:
                tag, text = event.tag, event.value
                if tag is None and not event.implicit[0]:
                    node = text
                else:
                    try:
                        node = _scalar(tag, event.implicit[0], text)
                    except ValueError as exc:  # its argument is the tag the text cannot hold
                        raise _fail(file, event, node_path,
                                    f"{text!r} is not a valid {exc.args[0].rsplit(':', 1)[-1]}") from None
                nodes, node_anchor = 1, event.anchor
            else:
                if event.anchor not in anchors:
                    raise _fail(file, event, node_path, f"alias *{event.anchor} names no complete anchor before it")
                node, nodes = anchors[event.anchor]
                expanded += nodes
                if expanded > MAX_ALIAS_EXPANSION:
                    raise _fail(file, event, node_path, "YAML aliases expand to too many values "
                                                         "(an alias bomb?): refused")
                node_anchor = None
        elif kind is mapping or kind is sequence:
            if is_map and key is None:
                raise _fail(file, event, path, "mapping keys must be plain strings")
            node_path = key_path if is_map else () if value is None else path + (len(value),)
            mark = event.start_mark
            marks[node_path] = (mark.line + 1, mark.column + 1)
            if len(stack) >= MAX_DEPTH:
                raise _fail(file, event, node_path, f"document nests deeper than {MAX_DEPTH} levels")
            stack.append((path, value, is_map, key, size, anchor))
            is_map = kind is mapping
            path, value, key, size, anchor = node_path, {} if is_map else [], None, 1, event.anchor
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            node, nodes, node_anchor = value, size, anchor
            path, value, is_map, key, size, anchor = stack.pop()
        elif kind is yaml.DocumentStartEvent:
            doc = Document(file, count, None)
            marks, key_marks = doc.marks, doc.key_marks
            count += 1
            anchors = {}
            continue
        elif kind is yaml.DocumentEndEvent:
            if doc.value is not None:  # empty documents (a stray ---) are no objects
                docs.append(doc)
            continue
        else:  # stream start and end
            continue
        if node_anchor:
            anchors[node_anchor] = (node, nodes)
        if value is None:
            doc.value = node
        else:
            size += nodes
            if is_map:
                value[key] = node
                key = None
            else:
                value.append(node)
    return docs


def parse_text(text: str, file: str) -> list[Document]:
    """All documents of one file; empty documents are skipped."""
    try:
        parser = _Loader(text)  # the pure-Python reader checks every character here already
        try:
            with gc_paused():
                return _compose(iter(parser.get_event, None), file)
        finally:
            parser.dispose()
    except yaml.reader.ReaderError as exc:  # a character YAML forbids: its position is an offset
        at = _char_offset(text, exc.position)
        line = text.count("\n", 0, at) + 1
        col = at - text.rfind("\n", 0, at)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        # the readers word the reason differently ("control"/"special characters"): the code point says it
        raise PolicycError(Diagnostic(Severity.ERROR, f"malformed {_language(file)}: character U+{code:04X} "
                                      "is not allowed", file, line, col)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicycError(Diagnostic(Severity.ERROR, f"malformed {_language(file)}: {problem}",
                                      file, line, col)) from None
    except yaml.YAMLError as exc:
        raise PolicycError(Diagnostic(Severity.ERROR, f"malformed {_language(file)}: {exc}", file, 1, 1)) from None


def _char_offset(text: str, offset: int) -> int:
    """A reader error's place in ``text``: libyaml counts bytes of the UTF-8 text, PyYAML characters
    (a control character after an é was reported a column late, or on the next line)."""
    if issubclass(_Loader, yaml.reader.Reader):
        return offset
    return len(text.encode()[:offset].decode(errors="ignore"))


def kube_objects(doc: Document, path: tuple = (), value=None):
    """(path, object) of every Kubernetes object in a document, lists unfolded: ``kind: List`` (what
    kubectl prints), typed lists such as ``CiliumNetworkPolicyList`` (what the API, client-go and backup
    tools return), and lists inside lists. An item of a typed list that lacks kind or apiVersion (the
    API serves them so) takes the list's."""
    value = doc.value if value is None and not path else value
    kind = value.get("kind") if isinstance(value, dict) else None
    if not (isinstance(kind, str) and kind.endswith("List") and value.get("items") is not None):
        yield path, value
        return
    if not isinstance(value["items"], list):
        raise PolicycError(doc.diag(path + ("items",), f"must be a list, not {type(value['items']).__name__}"))
    item_kind = kind.removesuffix("List")
    for i, item in enumerate(value["items"]):
        if item_kind and isinstance(item, dict):
            item = {"apiVersion": value.get("apiVersion"), "kind": item_kind, **item}
        yield from kube_objects(doc, path + ("items", i), item)


def _language(file: str) -> str:
    return "JSON" if file.lower().endswith(".json") else "YAML"


def _over_limit(name: str, size: int | None) -> PolicycError:
    """An input past MAX_FILE_BYTES: a regular file by its size, a stream once the cap is read."""
    cap = MAX_FILE_BYTES
    limit = f"{cap // (1 << 20)} MiB" if cap % (1 << 20) == 0 else f"{cap // 1024} KiB"
    what = f"file is {size} bytes" if size is not None else \
        "input goes on past the cap (a stream or a device?), refused after reading that much"
    return PolicycError(Diagnostic(Severity.ERROR, f"{what}: over the {limit} limit for one input", name,
                                   code="input-too-large"))


@functools.lru_cache(maxsize=1)
def _stdin_bytes() -> bytes:
    """Standard input, read once: ``-`` may name it for the policies and the inventory alike (one
    `kubectl get cnp,netpol,ns,pods -A -o yaml` holds both), and each reader keeps its own kinds."""
    return sys.stdin.buffer.read(MAX_FILE_BYTES + 1)


def read_capped(path: Path | str) -> bytes:
    """At most MAX_FILE_BYTES of one input, refused beyond: a regular file by its size, anything else
    (standard input, a pipe, a device such as /dev/zero, /dev/stdin) by reading one byte past the cap,
    so an endless stream costs bounded memory instead of all of it."""
    name = STDIN_NAME if str(path) == STDIN else str(path)
    try:
        if str(path) == STDIN:
            data = _stdin_bytes()
        else:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > MAX_FILE_BYTES:
                    raise _over_limit(name, size)
                data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PolicycError(Diagnostic(Severity.ERROR, f"cannot read: {exc.strerror}", name)) from None
    if b"\x00" in data:
        raise PolicycError(Diagnostic(Severity.ERROR, "binary file (contains NUL bytes), not YAML or JSON", name))
    if len(data) > MAX_FILE_BYTES:
        raise _over_limit(name, None)
    return data


def read_text(path: Path) -> str:
    name = STDIN_NAME if str(path) == STDIN else str(path)
    data = read_capped(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PolicycError(Diagnostic(Severity.ERROR, "file is not valid UTF-8", name, line, 1)) from None


def _hidden(path: Path, root: Path) -> bool:
    """A dot-file or dot-directory below ``root`` (.git, .github, .pre-commit-config.yaml): never a
    policy in a directory walk, as linters and `git ls-files` habits expect."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def expand_paths(paths) -> list[Path]:
    """Files as given; directories recursively (.yaml, .yml, .json; dot-files and dot-directories
    skipped), in a stable order; a file reached twice (``validate P P``, or P and P/sub) only once.
    A broken symbolic link found in a directory is kept, for read_documents to report."""
    out: list[Path] = []
    seen: set = set()

    def add(path: Path) -> None:
        key = path if str(path) == STDIN else path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)

    for raw in paths:
        path = Path(raw)
        if str(raw) == STDIN:
            add(path)
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.suffix.lower() in SUFFIXES and not _hidden(p, path) and (p.is_file() or _broken_link(p)):
                    add(p)
        elif path.exists():
            add(path)
        else:
            raise PolicycError(Diagnostic(Severity.ERROR, "no such file or directory", str(raw)))
    return out


def _broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def read_documents(paths) -> tuple[list[Document], list[Diagnostic]]:
    """Every readable file's documents, and what is wrong with the others (so one bad file hides nothing).

    An empty file named on the command line is an error; one found in a directory is only a
    warning, as kubectl skips it there too.
    """
    docs: list[Document] = []
    problems: list[Diagnostic] = []
    named = {Path(p) for p in paths if not Path(p).is_dir()}
    with gc_paused():  # over all files, not per file: one collection at the end instead of 500
        for path in expand_paths(paths):
            _read_one(path, path in named, docs, problems)
    return docs, problems


def _read_one(path: Path, named: bool, docs: list[Document], problems: list[Diagnostic]) -> None:
    """One file of read_documents: its documents to ``docs``, or what is wrong with it to ``problems``."""
    name = STDIN_NAME if str(path) == STDIN else str(path)
    if _broken_link(path):
        problems.append(Diagnostic(Severity.WARNING, f"broken symbolic link (to {os.readlink(path)}): skipped",
                                   name, code="broken-link"))
        return
    try:
        found = parse_text(read_text(path), name)
    except PolicycError as exc:
        problems.extend(exc.diagnostics)
        return
    if not found:
        severity = Severity.ERROR if named else Severity.WARNING
        problems.append(Diagnostic(severity, "empty file: no YAML or JSON document in it", name))
    docs.extend(found)


def load_documents(paths) -> list[Document]:
    docs, problems = read_documents(paths)
    errors = [d for d in problems if d.severity is Severity.ERROR]
    if errors:
        raise PolicycError(*errors)
    return docs
