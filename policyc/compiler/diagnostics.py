"""Diagnostics: every message a user sees about their input, with its location.

A diagnostic names file:line:column and the field path (``spec.ingress[0].toPorts``)
so that a reader can jump to it; ``PolicycError`` carries them up to the CLI,
which prints them and exits 2 — never a traceback.
"""
from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import yaml


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


def format_path(path: tuple) -> str:
    """("spec", "ingress", 0, "toPorts") -> "spec.ingress[0].toPorts"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    message: str
    file: str = ""
    line: int = 0
    column: int = 0
    field: str = ""
    code: str = ""

    @classmethod
    def simple(cls, message: str, severity: Severity = Severity.ERROR, code: str = "") -> "Diagnostic":
        """A problem with no file: a command-line mistake."""
        return cls(severity, message, code=code)

    @property
    def kind(self) -> str:
        """The diagnostic's code, never empty: its own, else one by where it points (docs/diagnostics.md)."""
        if self.code:
            return self.code
        if self.severity is not Severity.ERROR:
            return "policy-warning"
        if not self.file:
            return "invalid-argument"
        return "invalid-field" if self.field else "invalid-file"

    @property
    def location(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file

    def __str__(self) -> str:
        where = self.location
        field = f" {self.field}:" if self.field else ""
        return f"{where + ': ' if where else ''}{self.severity.value}:{field} {self.message}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["severity"] = self.severity.value
        data["code"] = self.kind
        return data


class PolicycError(Exception):
    """Bad input: carries the diagnostics to print before exiting with status 2."""

    def __init__(self, *diagnostics: Diagnostic):
        super().__init__("; ".join(str(d) for d in diagnostics))
        self.diagnostics = tuple(diagnostics)


def render(diagnostics, fmt: str = "text", version: str = "") -> str:
    """Diagnostics as text, JSON, YAML, markdown or SARIF (then each one is a result, so code scanning shows it)."""
    if fmt == "sarif":
        return render_sarif(diagnostics, version)
    if fmt in ("json", "yaml"):
        data = {"diagnostics": [d.to_json() for d in diagnostics]}
        return json.dumps(data, indent=2) if fmt == "json" else yaml.safe_dump(data, sort_keys=False).rstrip("\n")
    if fmt == "markdown":
        return render_markdown(diagnostics)
    return "\n".join(str(d) for d in diagnostics)


def render_markdown(diagnostics) -> str:
    """A table for the pull-request comment a CI step posts, so invalid input is never an empty comment."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    errors = sum(d.severity is Severity.ERROR for d in diagnostics)
    rows = [f"| {d.severity.value} | {cell(d.location)} | {cell(d.field)} | {cell(d.message)} |" for d in diagnostics]
    return "\n".join([f"### policyc: invalid input, {errors} error(s)", "", "| severity | where | field | message |",
                      "|---|---|---|---|"] + rows)


SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
DOCS_URL = "https://github.com/policyc/policyc/blob/main/docs/diagnostics.md"


def sarif_uri(path: str) -> str:
    """SARIF wants URI references: relative ones resolve against the checkout root in code-review tools,
    files outside the working directory become file:// URIs; both percent-encoded."""
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    if rel.startswith(".."):
        return Path(path).resolve().as_uri()
    return quote(rel.replace(os.sep, "/"))


def sarif_location(file: str, line: int, column: int) -> dict:
    return {"artifactLocation": {"uri": sarif_uri(file)},
            "region": {"startLine": max(line, 1), "startColumn": max(column, 1)}}


def render_sarif(diagnostics, version: str) -> str:
    """SARIF 2.1.0 with one result per diagnostic, its code as the rule id."""
    ids = sorted({d.kind for d in diagnostics})
    rules = [{"id": i, "name": i, "shortDescription": {"text": f"policyc input diagnostic {i}"},
              "helpUri": DOCS_URL} for i in ids]
    results = []
    for d in diagnostics:
        res = {"ruleId": d.kind, "ruleIndex": ids.index(d.kind),
               "level": {"error": "error", "warning": "warning"}.get(d.severity.value, "note"),
               "message": {"text": f"{d.field}: {d.message}" if d.field else d.message}}
        if d.file:
            res["locations"] = [{"physicalLocation": sarif_location(d.file, d.line, d.column)}]
        results.append(res)
    log = {"$schema": SARIF_SCHEMA, "version": "2.1.0",
           "runs": [{"tool": {"driver": {"name": "policyc", "version": version, "informationUri": DOCS_URL,
                                         "rules": rules}}, "results": results}]}
    return json.dumps(log, indent=2)
