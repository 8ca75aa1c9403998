"""YAML and JSON with positions.

Documents are composed (not constructed) with libyaml, so every value keeps
its line and column; aliases are followed with a budget so that an alias bomb
is refused in bounded time and memory instead of expanding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .diagnostics import Diagnostic, PolicycError, Severity, format_path

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml is in every supported install
    _Loader = yaml.SafeLoader

SUFFIXES = (".yaml", ".yml", ".json")
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


class _Budget:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.repeats = 0


_CONSTRUCT = yaml.SafeLoader("")


def _scalar(node: yaml.ScalarNode):
    """ints, floats, booleans and nulls as YAML 1.1 reads them; everything else stays text."""
    if node.tag.rsplit(":", 1)[-1] in ("int", "float", "bool", "null"):
        return _CONSTRUCT.construct_object(node)
    return node.value


def _convert(node, path: tuple, doc: Document, budget: _Budget, depth: int):
    if depth > MAX_DEPTH:
        raise PolicycError(doc.diag(path, f"document nests deeper than {MAX_DEPTH} levels"))
    if id(node) in budget.seen:
        budget.repeats += 1
        if budget.repeats > MAX_ALIAS_EXPANSION:
            raise PolicycError(doc.diag(path, "YAML aliases expand to too many values "
                                              "(an alias bomb?): refused"))
    budget.seen.add(id(node))
    doc.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [_convert(child, path + (i,), doc, budget, depth + 1) for i, child in enumerate(node.value)]
    out: dict = {}
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode):
            raise PolicycError(doc.diag(path, "mapping keys must be plain strings"))
        key = knode.value
        if knode.tag.endswith(":merge"):
            raise PolicycError(doc.diag(path, "YAML merge keys (<<) are not supported"))
        if key in out:
            doc.key_marks[path + (key,)] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
            raise PolicycError(doc.diag(path + (key,), f"duplicate key {key!r}"))
        doc.key_marks[path + (key,)] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
        out[key] = _convert(vnode, path + (key,), doc, budget, depth + 1)
    return out


def parse_text(text: str, file: str) -> list[Document]:
    """All documents of one file; empty documents are skipped."""
    docs: list[Document] = []
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=_Loader)):
            if node is None:
                continue
            doc = Document(file, index, None)
            doc.value = _convert(node, (), doc, _Budget(), 0)
            docs.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicycError(Diagnostic(Severity.ERROR, f"malformed YAML: {problem}", file, line, col)) from None
    except yaml.YAMLError as exc:
        raise PolicycError(Diagnostic(Severity.ERROR, f"malformed YAML: {exc}", file, 1, 1)) from None
    except RecursionError:
        raise PolicycError(Diagnostic(Severity.ERROR, "document nests too deeply", file, 1, 1)) from None
    return docs


def read_text(path: Path) -> str:
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PolicycError(Diagnostic(Severity.ERROR, f"file is {size} bytes, over the "
                                          f"{MAX_FILE_BYTES // (1024 * 1024)} MiB limit", name))
        data = path.read_bytes()
    except OSError as exc:
        raise PolicycError(Diagnostic(Severity.ERROR, f"cannot read: {exc.strerror}", name)) from None
    if b"\x00" in data:
        raise PolicycError(Diagnostic(Severity.ERROR, "binary file (contains NUL bytes), not YAML or JSON", name))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PolicycError(Diagnostic(Severity.ERROR, "file is not valid UTF-8", name, line, 1)) from None


def expand_paths(paths) -> list[Path]:
    """Files as given; directories recursively (.yaml, .yml, .json), in a stable order."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise PolicycError(Diagnostic(Severity.ERROR, "no such file or directory", str(raw)))
    return out


def load_documents(paths) -> list[Document]:
    docs: list[Document] = []
    errors: list[Diagnostic] = []
    for path in expand_paths(paths):
        try:
            docs.extend(parse_text(read_text(path), str(path)))
        except PolicycError as exc:
            errors.extend(exc.diagnostics)
    if errors:
        raise PolicycError(*errors)
    return docs

