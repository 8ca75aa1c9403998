"""Diagnostics: every message a user sees about their input, with its location.

A diagnostic names file:line:column and the field path (``spec.ingress[0].toPorts``)
so that a reader can jump to it; ``PolicycError`` carries them up to the CLI,
which prints them and exits 2 — never a traceback.
"""
from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass


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
    def simple(cls, message: str, severity: Severity = Severity.ERROR) -> "Diagnostic":
        return cls(severity, message)

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
        return data


class PolicycError(Exception):
    """Bad input: carries the diagnostics to print before exiting with status 2."""

    def __init__(self, *diagnostics: Diagnostic):
        super().__init__("; ".join(str(d) for d in diagnostics))
        self.diagnostics = tuple(diagnostics)


def render(diagnostics, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps({"diagnostics": [d.to_json() for d in diagnostics]}, indent=2)
    return "\n".join(str(d) for d in diagnostics)
