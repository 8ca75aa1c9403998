"""The agent's metrics and health over HTTP on a local TCP address (``--listen``, default 127.0.0.1:9964).

``/metrics``: Prometheus text, the agent's own families (requests, artifact loads and refusals,
endpoints) beside the loaded name's verdict counters and map levels (bpf_runtime.metrics).
``/healthz``: 200 while the agent runs. ``/readyz``: 200 once a policy is in force and the API
socket serves, 503 before (a DaemonSet's readiness probe, so a rollout waits for it).
prometheus_client writes the exposition; the server is the standard library's, since three
read-only paths need no framework.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..bpf_runtime.metrics import StatusCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class AgentMetrics:
    """The agent's own metric families, in a registry of their own (no process-global state)."""

    def __init__(self, statuses: Callable[[], list[dict]]):
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("policyc_agent_requests", "API requests by operation and result.",
                                ["op", "result"], registry=r)
        self.seconds = Histogram("policyc_agent_request_seconds", "Time to serve an API request, by operation.",
                                 ["op"], buckets=LATENCY_BUCKETS, registry=r)
        self.artifact_loads = Counter("policyc_agent_artifact_loads",
                                      ("Artifacts taken from the watched directory: loaded, replaced or refused; "
                                       "unloaded-elsewhere: a `policyc unload` the agent undid."),
                                      ["result"], registry=r)
        self.artifact_refused = Gauge("policyc_agent_artifact_refused",
                                      "1 while the watched directory holds an artifact the agent refused "
                                      "(the one before stays in force).", registry=r)
        self.artifact_info = Gauge("policyc_agent_artifact_info", "The artifact in force (manifest sha256).",
                                   ["sha256"], registry=r)
        self.endpoints = Gauge("policyc_agent_endpoints", "Pods the agent registered through the CNI plugin, "
                               "by state (ready, pending: labels not known yet, lockdown: pending and denied "
                               "everything).", ["state"], registry=r)
        self.inventory_errors = Counter("policyc_agent_inventory_errors",
                                        "Inventory directory reads that failed (the previous one stays).",
                                        registry=r)
        self.ready = Gauge("policyc_agent_ready", "1 once a policy is in force and the API serves.", registry=r)
        r.register(StatusCollector(statuses))

    def set_artifact(self, sha: str | None) -> None:
        self.artifact_info.clear()
        if sha:
            self.artifact_info.labels(sha).set(1)


class _Handler(BaseHTTPRequestHandler):
    server_version = "policyc-agent"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/readyz":
            ready, why = self.server.readiness()
            self._send(200 if ready else 503, (json.dumps({"ready": ready, "reason": why}) + "\n").encode(),
                       "application/json")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # scrapes every few seconds are not news
        pass


def serve(address: tuple[str, int], metrics: AgentMetrics,
          readiness: Callable[[], tuple[bool, str]]) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; the caller shuts the server down."""
    server = ThreadingHTTPServer(address, _Handler)
    server.daemon_threads = True
    server.metrics, server.readiness = metrics, readiness
    threading.Thread(target=server.serve_forever, name="policyc-agent-web", daemon=True).start()
    return server
