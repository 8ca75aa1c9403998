"""The agent's local API: HTTP/1.1 with JSON bodies on a Unix socket only root may open (docs/agent.md).

HTTP rather than a private framing, so `curl --unix-socket /run/policyc/agent.sock
http://localhost/v1/status` works for an operator; the standard library's server, since a handful
of routes need no framework.  The socket is created mode 0600 (owner root): it changes policy.

| method, path | body | does |
| --- | --- | --- |
| GET /v1/health | | name, pid, ready |
| GET /v1/status | | the agent's view and `status` of the loaded name |
| POST /v1/endpoint | {op, endpoint, ips, labels, service_account, attach, ports} | `policyc endpoint` |
| POST /v1/cni/add, /v1/cni/del, /v1/cni/check | {container_id, ifname, netns, pod, interfaces, ips} | the CNI plugin |
| GET /v1/observe?follow=&timeout=&verdict= | | flows, one JSON object per line |
"""
from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..bpf_runtime.errors import error
from ..bpf_runtime.libbpf import BPFError
from ..compiler.diagnostics import PolicycError
from .daemon import Agent, Refusal, reason

MAX_BODY = 1 << 20


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    agent: Agent


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "policyc-agent"

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *args) -> None:  # no access lines: the agent logs what it does, with fields
        pass

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        agent = self.server.agent
        if url.path == "/v1/health":
            self._reply(200, {"name": agent.config.name, "pid": os.getpid(), "ready": agent.ready,
                              "artifact": agent.artifact.in_force})
        elif url.path == "/v1/status":
            self._call("status", agent.status)
        elif url.path == "/v1/observe":
            self._observe(query)
        else:
            self._reply(404, {"error": f"no such path {url.path}", "code": "not-found"})

    def do_POST(self) -> None:  # noqa: N802
        routes = {"/v1/endpoint": ("endpoint", self.server.agent.endpoint),
                  "/v1/cni/add": ("cni_add", self.server.agent.cni_add),
                  "/v1/cni/del": ("cni_del", self.server.agent.cni_del),
                  "/v1/cni/check": ("cni_check", self.server.agent.cni_check)}
        path = urlsplit(self.path).path
        if path not in routes:
            self._reply(404, {"error": f"no such path {path}", "code": "not-found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, {"error": "request body too large", "code": "bad-request"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self._reply(400, {"error": f"request body is not a JSON object ({exc})", "code": "bad-request"})
            return
        op, fn = routes[path]
        self._call(op, lambda: fn(body))

    def _call(self, op: str, fn) -> None:
        """Run one operation; every failure is an answer with a message, never a dropped connection."""
        metrics = self.server.agent.metrics
        start = time.perf_counter()
        try:
            answer, status, result = fn(), 200, "ok"
        except Refusal as exc:
            answer, status, result = {"error": exc.message, "code": exc.code}, exc.status, exc.code
        except PolicycError as exc:
            answer, status, result = {"error": reason(exc), "code": "refused"}, 409, "refused"
        except (BPFError, OSError) as exc:
            answer, status, result = {"error": reason(exc), "code": "kernel"}, 500, "kernel"
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 and is logged; the agent stays up
            self.server.agent.log.exception(f"{op} failed")
            answer, status, result = {"error": f"internal error: {type(exc).__name__}: {exc}", "code": "internal"}, \
                500, "internal"
        metrics.seconds.labels(op).observe(time.perf_counter() - start)
        metrics.requests.labels(op, result).inc()
        self._reply(status, answer)

    def _reply(self, status: int, answer: dict) -> None:
        body = (json.dumps(answer) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _observe(self, query: dict) -> None:
        """Flows as JSON lines until the timeout, the end of what is pending, or the client leaving."""
        try:
            timeout = float(query["timeout"]) if query.get("timeout") else None
        except ValueError:
            self._reply(400, {"error": f"timeout {query['timeout']!r} is not a number", "code": "bad-request"})
            return
        verdict = query.get("verdict") or None
        if verdict not in (None, "allow", "deny"):
            self._reply(400, {"error": f"verdict {verdict!r}: allow or deny", "code": "bad-request"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def emit(flow) -> None:
            self.wfile.write((json.dumps(flow.as_dict(), sort_keys=True) + "\n").encode())
            self.wfile.flush()

        try:
            self.server.agent.observe(emit, query.get("follow") in ("1", "true"), timeout, verdict)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (Ctrl-C on `policyc observe -f`)
        except (Refusal, PolicycError, BPFError, OSError) as exc:
            self.wfile.write((json.dumps({"error": reason(exc)}) + "\n").encode())


def serve(agent: Agent, path: Path) -> _Server:
    """Listen on ``path`` (mode 0600; a socket left by a dead agent is replaced) in a daemon thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left by an agent that died
        else:
            raise error(f"another agent serves {path}: stop it first (one agent per node and socket)")
        finally:
            probe.close()
    old = os.umask(0o177)
    try:
        server = _Server(str(path), _Handler)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.agent = agent
    threading.Thread(target=server.serve_forever, name="policyc-agent-api", daemon=True).start()
    return server
