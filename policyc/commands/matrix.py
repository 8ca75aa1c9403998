"""`policyc matrix`: the verdict of every ordered pair of pods (and given addresses) per port."""
from __future__ import annotations

import csv
import itertools
import ipaddress
import json
import sys

from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.inventory import external
from ..compiler.ir import Endpoint, PolicySet, Protocol
from ..compiler.reachability import tables
from ..compiler.services import PREFIX, ServiceMap, cells
from .common import (add_inventory_arg, add_policy_args, bind_services, load_inventory_arg,
                     load_policy_args, parse_port)

DEFAULT_PORTS = "80/TCP,81/TCP,80/UDP,81/UDP"


def register(sub) -> None:
    parser = sub.add_parser("matrix", help="verdict for every ordered pair of endpoints, per port")
    add_policy_args(parser, formats=("text", "json", "csv"))
    add_inventory_arg(parser, required=True)
    parser.add_argument("--ports", default=DEFAULT_PORTS, help=f"comma-separated PORT/PROTOCOL (default {DEFAULT_PORTS})")
    parser.add_argument("--external", default="", help="comma-separated addresses outside the cluster to include")
    parser.add_argument("--services", nargs="?", const="*", default="", metavar="NS/NAME,...",
                        help="add Services as destination columns (all of the inventory's, or these): a cell is "
                        "allowed when every backend is, partial (~) when some are, on the Service's port")
    parser.set_defaults(run=run)


def _services(smap: ServiceMap, text: str) -> list:
    if text == "*":
        return list(smap.services)
    return [smap.named(x.strip()) for x in text.split(",") if x.strip()]


def service_flows(policy: PolicySet, smap: ServiceMap, endpoints: list[Endpoint], services: list,
                  ports: list[tuple[int, Protocol]]):
    """Rows to Service columns, as ``compute``'s dicts plus each backend's verdict."""
    for cell in cells(policy, smap, endpoints, services, ports):
        yield {"from": endpoints[cell.src].display, "to": cell.frontend.display, "port": cell.port,
               "protocol": cell.protocol.label, "verdict": cell.verdict,
               "backends": [{"backend": b.endpoint.display, "port": b.port, "verdict": "allow" if ok else "deny"}
                            for b, ok in cell.backends]}


def _externals(text: str, smap: ServiceMap) -> list[Endpoint]:
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        try:
            ip = ipaddress.ip_address(item)
        except ValueError:
            raise PolicycError(Diagnostic.simple(f"--external: {item!r} is not an IP address")) from None
        service = smap.service_at(ip)
        if service is not None:  # policy never sees a Service address (R7.8): its backends answer
            raise PolicycError(Diagnostic.simple(f"--external: {item} is an address of Service {service.display}; "
                                                 f"add it as a column with --services {service.display}"))
        out.append(external(ip))
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


def write_json(policy: PolicySet, endpoints: list[Endpoint], ports: list[tuple[int, Protocol]], out,
               to_services: list[dict] = ()) -> None:
    """``{"flows": [...]}``, one row per line as ``json.dumps`` of ``compute``'s dicts, a source at a time;
    then the rows to Service columns (``service_flows``)."""
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
    for row in to_services:
        out.write(("\n" if first else ",\n") + json.dumps(row))
        first = False
    out.write("\n]}\n")


_MARK = {"allow": ".", "deny": "X", "partial": "~"}


def render_text(flows: list[dict], names: list[str], ports: list[tuple[int, Protocol]],
                columns: list[str] | None = None) -> str:
    """One truth table per port, Kubernetes e2e style: `.` allowed, `X` denied (rows from, columns to);
    Service columns add `~` (some backends) and leave blank the ports a Service does not have."""
    verdict = {(f["from"], f["to"], f["port"], f["protocol"]): f["verdict"] for f in flows}
    columns = names if columns is None else columns
    width = max((len(n) for n in names + columns), default=1)  # an inventory without pods is a 0×0 table
    legend = "~ some backends, " if columns != names else ""
    out = []
    for port, protocol in ports:
        out.append(f"{port}/{protocol.label}  (. allowed, X denied, {legend}rows: from, columns: to)")
        out.append(" " * width + " " + " ".join(n.rjust(width) for n in columns))
        for src in names:
            cells = ["-" if src == dst else _MARK.get(verdict.get((src, dst, port, protocol.label)), " ")
                     for dst in columns]
            out.append(src.ljust(width) + " " + " ".join(c.rjust(width) for c in cells))
        out.append("")
    return "\n".join(out)


def run(args) -> int:
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args)
    policy = bind_services(args, policy, inventory)
    ports = [parse_port(p) for p in args.ports.split(",") if p.strip()]
    smap = ServiceMap(inventory)
    endpoints = list(inventory.pods) + _externals(args.external, smap)
    services = _services(smap, args.services) if args.services else []
    to_services = list(service_flows(policy, smap, endpoints, services, ports))
    if args.format == "json":
        write_json(policy, endpoints, ports, sys.stdout, to_services)
        return 0
    flows = itertools.chain(compute(policy, endpoints, ports), to_services)
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=["from", "to", "port", "protocol", "verdict"],
                                lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(flows)
    else:
        names = [ep.display for ep in endpoints]
        print(render_text(list(flows), names, ports, names + [PREFIX + s.display for s in services]))
    return 0
