"""Talking to a running agent over its Unix socket: HTTP/1.1 with JSON bodies (docs/agent.md, API).

Standard library only, and nothing from the compiler: the CNI plugin imports this module on every
pod start, so it must load in milliseconds.  ``AgentUnavailable`` means no agent answers (no socket,
or a socket left by a dead one); ``AgentError`` is the agent's own refusal, with its message.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
from urllib.parse import urlencode

DEFAULT_SOCKET = "/run/policyc/agent.sock"


def socket_path() -> str:
    return os.environ.get("POLICYC_AGENT_SOCKET", DEFAULT_SOCKET)


class AgentUnavailable(Exception):
    """No agent listens on the socket."""


class AgentError(Exception):
    """The agent refused or failed a request; ``code`` names the kind (docs/agent.md)."""

    def __init__(self, message: str, code: str = "error", status: int = 400):
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """One agent, addressed by its socket path."""

    def __init__(self, path: str | None = None, timeout: float = 30.0):
        self.path = path or socket_path()
        self.timeout = timeout

    def _open(self, method: str, target: str, body: dict | None, timeout: float | None):
        conn = _UnixConnection(self.path, self.timeout if timeout is None else timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, target, body=payload, headers=headers)
            return conn, conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            conn.close()
            raise AgentUnavailable(f"no agent at {self.path} ({exc.strerror})") from None
        except OSError as exc:
            conn.close()
            raise AgentUnavailable(f"agent at {self.path} did not answer ({exc})") from None

    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None,
             **query) -> dict:
        """One request; the decoded JSON answer, or AgentError / AgentUnavailable."""
        target = path + ("?" + urlencode({k: v for k, v in query.items() if v is not None}) if query else "")
        conn, resp = self._open(method, target, body, timeout)
        try:
            data = resp.read()
        finally:
            conn.close()
        try:
            answer = json.loads(data or b"{}")
        except ValueError:
            raise AgentError(f"agent answered {resp.status} with no JSON", "protocol", resp.status) from None
        if resp.status >= 400:
            raise AgentError(answer.get("error", f"HTTP {resp.status}"), answer.get("code", "error"), resp.status)
        return answer

    def stream(self, path: str, **query):
        """Yield the JSON objects of a streaming answer (one per line) until the agent ends it."""
        target = path + "?" + urlencode({k: v for k, v in query.items() if v is not None})
        conn, resp = self._open("GET", target, None, None)
        try:
            if resp.status >= 400:
                answer = json.loads(resp.read() or b"{}")
                raise AgentError(answer.get("error", f"HTTP {resp.status}"), answer.get("code", "error"), resp.status)
            conn.sock.settimeout(None)  # a follow waits as long as the flows take
            for line in resp:
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


def agent_for(name: str | None) -> Client | None:
    """The running agent when it serves ``name`` (any name when None), else None: the caller works alone."""
    client = Client(timeout=2.0)
    try:
        health = client.call("GET", "/v1/health")
    except (AgentUnavailable, AgentError):
        return None
    if name is not None and health.get("name") != name:
        return None
    client.timeout = 60.0
    return client
