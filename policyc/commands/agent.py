"""`policyc agent`: the resident node agent (docs/agent.md) behind the CNI plugin and the runtime commands."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

from ..compiler.diagnostics import Diagnostic, PolicycError
from .common import subcommand
from .runtime_common import bpf_errors

DEFAULT_LISTEN = "127.0.0.1:9970"
EXAMPLES = """
policyc agent cluster --artifact /etc/policyc/artifact --inventory-dir /var/lib/policyc/inventory \\
    --node-name "$NODE_NAME" --node-ip "$NODE_IP"
curl --unix-socket /run/policyc/agent.sock http://localhost/v1/status
curl http://127.0.0.1:9970/metrics
"""


def register(sub) -> None:
    parser = subcommand(sub, "agent", "run the node agent: load or adopt NAME, serve the CNI plugin and the "
                        "runtime commands, follow the artifact and inventory directories", EXAMPLES)
    parser.add_argument("name", metavar="NAME", help="the loaded name it owns (adopted from the pins after a restart)")
    parser.add_argument("--artifact", required=True, metavar="DIR",
                        help="the artifact directory to load and watch (a ConfigMap volume or a plain directory)")
    parser.add_argument("--inventory", action="append", default=[], metavar="INV",
                        help="Namespaces and Pods (`kubectl get -o yaml`): labels of pods the artifact does not "
                        "know (repeatable)")
    parser.add_argument("--inventory-dir", metavar="DIR", help="a watched directory of such files, kept fresh by "
                        "something else; it wins over --inventory")
    parser.add_argument("--node-name", metavar="NODE", help="this node's name: its pods' addresses come from the "
                        "CNI plugin, never from the inventory")
    parser.add_argument("--node-ip", action="append", default=[], metavar="IP", help="an address of this node "
                        "(identity host; repeatable)")
    parser.add_argument("--tc-mode", choices=("tcx", "clsact"), default="tcx")
    parser.add_argument("--xdp", metavar="IFACE", help="the node's external interface for xdp_node (first load)")
    parser.add_argument("--xdp-mode", choices=("auto", "native", "generic"), default="auto")
    parser.add_argument("--socket", metavar="PATH", help="the API socket (default $POLICYC_AGENT_SOCKET or "
                        "/run/policyc/agent.sock)")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"metrics (/metrics) and health (/healthz, /readyz) over HTTP (default {DEFAULT_LISTEN}; "
                        "'off' for none)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between looks at the "
                        "watched directories (default 1)")
    parser.add_argument("--log-format", choices=("json", "text"), default="json")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    parser.set_defaults(run=run)


def parse_listen(text: str) -> tuple[str, int] | None:
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise PolicycError(Diagnostic.simple(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}"))
    return host.strip("[]") or "127.0.0.1", int(port)


def run(args) -> int:
    from ..agent import server, web
    from ..agent.client import socket_path
    from ..agent.daemon import Agent, Config
    from ..agent.logs import logger
    from ..bpf_runtime.privileges import require_root

    if args.poll <= 0:
        raise PolicycError(Diagnostic.simple("--poll must be a positive number of seconds"))
    listen = parse_listen(args.listen)
    require_root()
    log = logger(args.log_format, args.log_level)
    config = Config(args.name, Path(args.artifact), tuple(Path(p) for p in args.inventory),
                    Path(args.inventory_dir) if args.inventory_dir else None, args.node_name, tuple(args.node_ip),
                    args.tc_mode, args.xdp, args.xdp_mode, args.poll)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with bpf_errors():
        agent = Agent(config, log)
        web_server = web.serve(listen, agent.metrics, agent.readiness) if listen else None
        agent.start()
        api = server.serve(agent, Path(args.socket or socket_path()))
    agent.serving = True
    agent.poll()
    log.info("agent running", extra={"fields": {"name": args.name, "socket": api.server_address,
                                                 "listen": args.listen, "ready": agent.ready}})
    try:
        agent.run(stop)
    finally:
        # the policy stays: pins, hooks and maps outlive the agent, and the next one adopts them
        api.shutdown()
        api.server_close()
        Path(api.server_address).unlink(missing_ok=True)
        if web_server:
            web_server.shutdown()
        log.info("agent stopped; the policy stays in force", extra={"fields": {"name": args.name}})
    return 0
