"""`policyc matrix`: the verdict of every ordered pair of pods (and given addresses) per port."""
from __future__ import annotations

import csv
import ipaddress
import json
import sys

from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.inventory import external
from ..compiler.ir import Endpoint, PolicySet, Protocol
from ..compiler.reachability import tables
from .common import (add_inventory_arg, add_policy_args, load_inventory_arg,
                     load_policy_args, parse_port)

DEFAULT_PORTS = "80/TCP,81/TCP,80/UDP,81/UDP"


def register(sub) -> None:
    parser = sub.add_parser("matrix", help="verdict for every ordered pair of endpoints, per port")
    add_policy_args(parser, formats=("text", "json", "csv"))
    add_inventory_arg(parser, required=True)
    parser.add_argument("--ports", default=DEFAULT_PORTS, help=f"comma-separated PORT/PROTOCOL (default {DEFAULT_PORTS})")
    parser.add_argument("--external", default="", help="comma-separated addresses outside the cluster to include")
    parser.set_defaults(run=run)


def _externals(text: str) -> list[Endpoint]:
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        try:
            out.append(external(ipaddress.ip_address(item)))
        except ValueError:
            raise PolicycError(Diagnostic.simple(f"--external: {item!r} is not an IP address")) from None
    return out


def compute(policy: PolicySet, endpoints: list[Endpoint], ports: list[tuple[int, Protocol]]):
    """Flows in a stable order: port by port, then source, then destination; self pairs left out.

    Yields dicts one at a time so that large matrices stream instead of filling memory.
    """
    for port, protocol, cls, allowed in tables(policy, endpoints, ports):
        for i, src in enumerate(endpoints):
            reach = allowed[cls[i]]
            for j, dst in enumerate(endpoints):
                if i != j:
                    yield {"from": src.display, "to": dst.display, "port": port, "protocol": protocol.label,
                           "verdict": "allow" if cls[j] in reach else "deny"}


def write_json(policy: PolicySet, endpoints: list[Endpoint], ports: list[tuple[int, Protocol]], out) -> None:
    """``{"flows": [...]}``, one row per line as ``json.dumps`` of ``compute``'s dicts, a source at a time."""
    names = [json.dumps(ep.display) for ep in endpoints]
    heads = ['{"from": ' + name + ', "to": ' for name in names]
    out.write('{"flows": [')
    first = True
    for port, protocol, cls, allowed in tables(policy, endpoints, ports):
        tail = f', "port": {port}, "protocol": {json.dumps(protocol.label)}, "verdict": '
        cells = [name + tail for name in names]
        for i, head in enumerate(heads):
            reach = allowed[cls[i]]
            rows = [head + cells[j] + ('"allow"}' if c in reach else '"deny"}')
                    for j, c in enumerate(cls) if j != i]
            if rows:
                out.write(("\n" if first else ",\n") + ",\n".join(rows))
                first = False
    out.write("\n]}\n")


def render_text(flows: list[dict], names: list[str], ports: list[tuple[int, Protocol]]) -> str:
    """One truth table per port, Kubernetes e2e style: `.` allowed, `X` denied (rows from, columns to)."""
    verdict = {(f["from"], f["to"], f["port"], f["protocol"]): f["verdict"] for f in flows}
    width = max((len(n) for n in names), default=1)  # an inventory without pods is a 0×0 table
    out = []
    for port, protocol in ports:
        out.append(f"{port}/{protocol.label}  (. allowed, X denied; rows: from, columns: to)")
        out.append(" " * width + " " + " ".join(n.rjust(width) for n in names))
        for src in names:
            cells = ["-" if src == dst else
                     ("." if verdict[(src, dst, port, protocol.label)] == "allow" else "X") for dst in names]
            out.append(src.ljust(width) + " " + " ".join(c.rjust(width) for c in cells))
        out.append("")
    return "\n".join(out)


def run(args) -> int:
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args)
    ports = [parse_port(p) for p in args.ports.split(",") if p.strip()]
    endpoints = list(inventory.pods) + _externals(args.external)
    if args.format == "json":
        write_json(policy, endpoints, ports, sys.stdout)
        return 0
    flows = compute(policy, endpoints, ports)
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=["from", "to", "port", "protocol", "verdict"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(flows)
    else:
        print(render_text(list(flows), [ep.display for ep in endpoints], ports))
    return 0
