"""Talking to a running agent over its Unix socket: HTTP/1.1 with JSON bodies (docs/agent.md, API).

Sockets and json only, nothing from the compiler and not http.client either (it imports the email
package, ~60 ms): the CNI plugin imports this module on every pod start.  Each request is one
connection (``Connection: close``), so the answer is everything the agent sends after the headers.
``AgentUnavailable`` means no agent answers (no socket, or one left by a dead agent);
``AgentError`` is the agent's own refusal, with its message.
"""
from __future__ import annotations

import json
import os
import socket
from urllib.parse import quote

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


def _target(path: str, query: dict) -> str:
    pairs = [f"{k}={quote(str(v))}" for k, v in query.items() if v is not None]
    return path + ("?" + "&".join(pairs) if pairs else "")


class Client:
    """One agent, addressed by its socket path."""

    def __init__(self, path: str | None = None, timeout: float = 30.0):
        self.path = path or socket_path()
        self.timeout = timeout

    def _send(self, method: str, target: str, body: dict | None, timeout: float | None):
        """Connect, send the request, read the status line and headers; the socket and the rest read."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {target} HTTP/1.1\r\nHost: policyc-agent\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            sock.connect(self.path)
            sock.sendall(head + payload)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("the agent closed the connection before answering")
                data += chunk
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise AgentUnavailable(f"no agent at {self.path} ({exc.strerror})") from None
        except OSError as exc:
            sock.close()
            raise AgentUnavailable(f"agent at {self.path} did not answer ({exc})") from None
        header, _, rest = data.partition(b"\r\n\r\n")
        try:
            status = int(header.split(b" ", 2)[1])
        except (IndexError, ValueError):
            sock.close()
            raise AgentError(f"agent answered {header[:60]!r}", "protocol", 502) from None
        return sock, status, rest

    @staticmethod
    def _error(status: int, data: bytes) -> AgentError:
        try:
            answer = json.loads(data or b"{}")
        except ValueError:
            answer = {}
        return AgentError(answer.get("error", f"HTTP {status}"), answer.get("code", "error"), status)

    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None,
             **query) -> dict:
        """One request; the decoded JSON answer, or AgentError / AgentUnavailable."""
        sock, status, data = self._send(method, _target(path, query), body, timeout)
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError as exc:
            raise AgentUnavailable(f"agent at {self.path} stopped answering ({exc})") from None
        finally:
            sock.close()
        if status >= 400:
            raise self._error(status, data)
        try:
            return json.loads(data or b"{}")
        except ValueError:
            raise AgentError(f"agent answered {status} with no JSON", "protocol", 502) from None

    def stream(self, path: str, **query):
        """Yield the JSON objects of a streaming answer (one per line) until the agent ends it."""
        sock, status, data = self._send("GET", _target(path, query), None, None)
        try:
            if status >= 400:
                while chunk := sock.recv(65536):
                    data += chunk
                raise self._error(status, data)
            sock.settimeout(None)  # a follow waits as long as the flows take
            while True:
                while b"\n" in data:
                    line, data = data.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
        finally:
            sock.close()


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
