"""Reading YAML fields with positions: every complaint names file, line, column and field path."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from ..diagnostics import Severity, format_path
from ..ir import Origin
from ..source import Document

# Fields that exist in Cilium but that policyc cannot model: using them would make verdicts wrong.
UNSUPPORTED = {
    "fromRequires": "fromRequires was removed in Cilium 1.19 (V1); rewrite it into each rule's fromEndpoints",
    "toRequires": "toRequires was removed in Cilium 1.19 (V1); rewrite it into each rule's toEndpoints",
    "fromGroups": "cloud-provider groups are resolved by the Cilium operator at run time (R10.9)",
    "toGroups": "cloud-provider groups are resolved by the Cilium operator at run time (R10.9)",
    "toServices": "toServices needs the cluster's Services and EndpointSlices (R10.6), which policyc does not read",
    "cidrGroupRef": "CiliumCIDRGroup objects (R7.9) are not read by policyc",
    "cidrGroupSelector": "CiliumCIDRGroup objects (R7.9) are not read by policyc",
}

class Invalid(Exception):
    """Raised inside one object once an error is recorded, to abandon it (R1.1)."""

@dataclass
class FieldReader:
    """Field access with positions: every complaint names file, line, column and field path."""

    doc: Document
    diagnostics: list = field(default_factory=list)
    errors: int = 0

    def error(self, path: tuple, message: str, code: str = "") -> None:
        self.diagnostics.append(self.doc.diag(path, message, code=code))
        self.errors += 1

    def warn(self, path: tuple, message: str, code: str = "") -> None:
        self.diagnostics.append(self.doc.diag(path, message, Severity.WARNING, code))

    def fail(self, path: tuple, message: str, code: str = ""):
        self.error(path, message, code)
        raise Invalid

    def mapping(self, value, path: tuple, allowed: tuple[str, ...]) -> dict:
        """A mapping whose keys are all known (unknown ones are errors with a suggestion)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, not {kind_of(value)}")
        for key in value:
            if key in allowed:
                continue
            if key in UNSUPPORTED:
                self.error(path + (key,), f"unsupported field {key!r}: {UNSUPPORTED[key]}", "unsupported-field")
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.error(path + (key,), f"unknown field {key!r}{hint}", "unknown-field")
        return value

    def sequence(self, obj: dict, key: str, path: tuple) -> list:
        value = obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path + (key,), f"must be a list, not {kind_of(value)}")
        return value

    def text(self, value, path: tuple, what: str = "value") -> str:
        if not isinstance(value, str):
            self.fail(path, f"{what} must be a string, not {kind_of(value)}")
        return value

    def boolean(self, value, path: tuple) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {value!r}")
        return value

def kind_of(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a fractional number", type(None): "null"}.get(type(value), type(value).__name__)


def origin_at(r: FieldReader, path: tuple, kind: str, namespace: str | None, name: str) -> Origin:
    """Where a rule, policy or default-deny entry comes from, for explanations and SARIF."""
    line, col = r.doc.position(path)
    return Origin(r.doc.file, line, col, format_path(path), kind, namespace or "", name)
