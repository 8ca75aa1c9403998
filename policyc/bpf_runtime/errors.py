"""The runtime's one error helper: every refusal is a PolicycError with one clear line (exit 2)."""
from __future__ import annotations

from ..compiler.diagnostics import Diagnostic, PolicycError


def error(message: str) -> PolicycError:
    """A PolicycError for ``message``; the caller raises it (``raise error(...) from None``)."""
    return PolicycError(Diagnostic.simple(message))
