"""What the runtime commands share: kernel errors become clear diagnostics (exit 2), never tracebacks."""
from __future__ import annotations

from contextlib import contextmanager

from ..compiler.diagnostics import Diagnostic, PolicycError


@contextmanager
def bpf_errors():
    """Turn BPFError (errno text, verifier log tail) and OSError into a PolicycError."""
    from ..bpf_runtime.libbpf import BPFError

    try:
        yield
    except BPFError as exc:
        raise PolicycError(Diagnostic.simple(str(exc))) from None
    except PermissionError as exc:
        raise PolicycError(Diagnostic.simple(f"permission denied: {exc.filename or exc} (run as root)")) from None
    except OSError as exc:
        raise PolicycError(Diagnostic.simple(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))) from None


def through_agent(agent, method: str, path: str, body: dict | None = None) -> dict:
    """One request to the agent; its refusal becomes a PolicycError with its message (exit 2)."""
    from ..agent.client import AgentError, AgentUnavailable

    try:
        return agent.call(method, path, body)
    except (AgentError, AgentUnavailable) as exc:
        raise PolicycError(Diagnostic.simple(f"policyc agent: {exc}")) from None
