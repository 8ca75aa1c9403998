"""`policyc matrix`: the verdict of every ordered pair of endpoints (pods, nodes, given addresses) per port.

The pod and address pairs come from the endpoint-class tables (compiler/reachability.py); pairs
with a node, and allowed pairs on a port some L7 rule covers, are asked of the evaluator, because a
node's verdict depends on whether it runs the pod (R3.9) and the L7 mark on which rules allowed.
Service columns (``--services``) come from the same tables on the backends' ports (services.cells).
"""
from __future__ import annotations

import csv
import itertools
import ipaddress
import json
import shutil
import sys
from dataclasses import replace

from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.evaluate import Evaluator, Flow, possible
from ..compiler.inventory import Inventory, external
from ..compiler.ir import CIDRPeer, Endpoint, EndpointKind, PolicySet, Protocol, unmapped
from ..compiler.reachability import tables
from ..compiler.services import PREFIX, ServiceMap, cells
from .common import (add_inventory_arg, add_policy_args, bind_services, load_inventory_arg, load_policy_args,
                     parse_port, resolve_endpoints, split_items, subcommand, warn)
from .terminal import progress, say

ALLOW, DENY, L7, SELF = ".", "X", "L", "-"
SOME, NO_PORT = "~", " "  # Service columns: some backends allowed; not a port of the Service
MAX_RANGE = 1024  # ports one --ports range may expand to: a table per port is printed
FIELDS = ["from", "to", "port", "protocol", "verdict", "l7"]
EXAMPLES = """
policyc matrix examples/shop/policies --inventory examples/shop/inventory.yaml
policyc matrix P --inventory INV --ports 443/TCP,8000-8010/TCP --external 203.0.113.7,198.51.100.0/24,node-1
policyc matrix P --inventory INV --from namespace=shop --to shop/cart -o csv
policyc matrix P --inventory INV --inventory services.yaml --ports 80/TCP --services shop/cart,shop/web
"""


def register(sub) -> None:
    parser = subcommand(sub, "matrix", "verdict for every ordered pair of endpoints, per port", EXAMPLES)
    add_policy_args(parser, formats=("text", "json", "yaml", "csv", "markdown"))
    add_inventory_arg(parser, required=True)
    parser.add_argument("--ports", action="append", metavar="PORTS",
                        help="PORT[-PORT]/PROTOCOL, comma-separated, repeatable (default: the ports the inventory's "
                        "containers and the rules name)")
    parser.add_argument("--external", action="append", metavar="ENDPOINTS",
                        help="more rows and columns, comma-separated, repeatable: addresses (a node's or a pod's "
                        "resolve to it, as in query), CIDRs (shown by their first address), node names")
    parser.add_argument("--from", dest="src", action="append", metavar="ENDPOINT",
                        help="only these rows: ns/pod, node, address or label selector; repeated: the union")
    parser.add_argument("--to", dest="dst", action="append", metavar="ENDPOINT",
                        help="only these columns, same forms as --from")
    parser.add_argument("--services", nargs="?", const="*", metavar="NS/NAME,...",
                        help="Services as more columns (all of the inventory's, or these), decided per backend on "
                        "the backend's port: allowed when every backend is, ~ when some are")
    parser.set_defaults(run=run)


# ---- what the table is about

def parse_ports(values: list[str]) -> list[tuple[int, Protocol]]:
    """``80/TCP``, ``8000-8010/TCP`` (each port of the range), comma-separated and repeatable."""
    out: list[tuple[int, Protocol]] = []
    for item in split_items(values, "--ports"):
        span, slash, proto = item.partition("/")
        first, dash, last = span.partition("-")
        if not dash:
            out.append(parse_port(item))
            continue
        (lo, protocol), (hi, _) = parse_port(first + slash + proto), parse_port(last + slash + proto)
        if not lo <= hi or hi - lo >= MAX_RANGE:
            raise PolicycError(Diagnostic.simple(f"--ports {item!r}: a range is FIRST-LAST with FIRST <= LAST and at "
                                                 f"most {MAX_RANGE} ports", code="invalid-argument"))
        out += [(p, protocol) for p in range(lo, hi + 1)]
    return list(dict.fromkeys(out))


def default_ports(policy: PolicySet, inventory: Inventory) -> list[tuple[int, Protocol]]:
    """The ports a reader expects: every container port of the inventory, and the first port of
    every numbered port range the rules name (ICMP: the type)."""
    found = {(np.port, np.protocol) for ep in inventory.endpoints for np in ep.ports}
    found |= {(pm.first, pm.protocol) for rule in policy.rules for pm in rule.ports
              if pm.protocol is not Protocol.ANY and pm.name is None and pm.first > 0}
    return sorted(found, key=lambda pp: (pp[1].label, pp[0]))


def _first_outside(net, holes) -> object | None:
    """The first address of ``net`` (past its network address, when it has more than two) in none of
    ``holes``, or None when they cover it."""
    at = net.network_address + 1 if net.num_addresses > 2 else net.network_address
    for hole in sorted(holes, key=lambda h: h.network_address):
        if at in hole:
            at = hole.broadcast_address + 1 if hole.broadcast_address < net.broadcast_address else None
            if at is None:
                return None
    return at if at <= net.broadcast_address else None


def cidr_rows(policy: PolicySet, net) -> list[Endpoint]:
    """A CIDR's rows: one per part of it that the rules' CIDRs and excepts tell apart, each computed
    at an address of that part and named exactly (``169.254.0.0/16 except 169.254.169.254/32``), so a
    verdict never speaks for addresses that would get another one. Nothing else tells addresses
    outside the cluster apart (R7.1), so each part's verdict holds for all of it."""
    cuts = {n for rule in policy.rules for peer in rule.peers if isinstance(peer, CIDRPeer)
            for n in (peer.network,) + peer.excepts if n.version == net.version}

    def parts(whole) -> list[Endpoint]:
        inner = [c for c in cuts if c != whole and c.subnet_of(whole)]
        top = sorted((c for c in inner if not any(c != o and c.subnet_of(o) for o in inner)),
                     key=lambda c: c.network_address)
        out = []
        at = _first_outside(whole, top)
        if at is not None:
            name = str(whole) + (f" except {', '.join(map(str, top))}" if top else "")
            out.append(replace(external(at), name=name))
        return out + [row for c in top for row in parts(c)]

    return parts(net)


def cidr_endpoints(inventory: Inventory, policy: PolicySet, item: str) -> list[Endpoint] | None:
    """``item`` written as a CIDR: its rows (a single address: that endpoint, as query finds it; an
    IPv4-mapped one as IPv4), or None when it is no CIDR."""
    try:
        net = unmapped(ipaddress.ip_network(item, strict=False)) if "/" in item else None
    except ValueError:
        return None
    if net is None:
        return None
    return [inventory.find(str(net.network_address))] if net.num_addresses == 1 else cidr_rows(policy, net)


def _address(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def extra_endpoints(inventory: Inventory, policy: PolicySet, smap: ServiceMap,
                    values: list[str] | None) -> list[Endpoint]:
    out = []
    for item in split_items(values, "--external"):
        rows = cidr_endpoints(inventory, policy, item)
        if rows is not None:
            out += rows
            continue
        service = smap.service_at(_address(item))
        if service is not None:  # policy never sees a Service address (R7.8): its backends answer
            raise PolicycError(Diagnostic.simple(f"--external: {item} is an address of Service {service.display}; "
                                                 f"add it as a column with --services {service.display}",
                                                 code="invalid-argument"))
        try:
            out.append(inventory.find(item))  # a node name, ns/pod, or an address (of a node: the node)
        except PolicycError as exc:
            raise PolicycError(Diagnostic.simple(f"--external: {exc.diagnostics[0].message}; or a CIDR",
                                                 code="invalid-argument")) from None
    return out


def picked(inventory: Inventory, policy: PolicySet, refs: list[str], option: str) -> list[Endpoint]:
    """The rows (--from) or columns (--to) asked for: a CIDR is its rows (as --external makes them),
    anything else what query's --from resolves."""
    out: list[Endpoint] = []
    for ref in refs:
        rows = cidr_endpoints(inventory, policy, ref)
        out += rows if rows is not None else resolve_endpoints(inventory, [ref], option)
    return out


def chosen_services(smap: ServiceMap, text: str | None) -> list:
    if not text:
        return []
    if text == "*":
        return list(smap.services)
    return [smap.named(x.strip()) for x in text.split(",") if x.strip()]


# ---- verdicts

def _l7_covers(policy: PolicySet, protocol: Protocol, port: int) -> bool:
    """Whether some rule with L7 rules covers this port (named ports: any of the protocol)."""
    return any(pm.l7 and pm.protocol is protocol and (pm.name is not None or pm.first <= port <= pm.last)
               for rule in policy.rules for pm in rule.ports)


def verdict_rows(policy: PolicySet, endpoints: list[Endpoint], ports: list[tuple[int, Protocol]]):
    """Per port and source: ``(port, protocol, i, codes)``, one code per destination (``.`` allowed,
    ``L`` allowed through an L7 filter, ``X`` denied, ``-`` itself), a row at a time."""
    plain = [k for k, ep in enumerate(endpoints) if ep.kind is not EndpointKind.NODE]
    position = {k: n for n, k in enumerate(plain)}
    evaluator = Evaluator(policy)

    def asked(src: Endpoint, dst: Endpoint, protocol: Protocol, port: int) -> str:
        v = evaluator.evaluate(Flow(src, dst, protocol, port))
        return (L7 if v.l7 else ALLOW) if v.allowed else DENY

    others = [j for j in range(len(endpoints)) if j not in position]
    for port, protocol, cls, allowed in tables(policy, [endpoints[k] for k in plain], ports):
        l7 = _l7_covers(policy, protocol, port)
        column = [cls[position[j]] if j in position else None for j in range(len(endpoints))]
        for i, src in enumerate(endpoints):
            reach = allowed[cls[position[i]]] if i in position else None
            if reach is not None and not l7 and protocol.family is None:  # the table decides all but nodes
                row = [ALLOW if c in reach else DENY for c in column]
                for j in others:
                    row[j] = asked(src, endpoints[j], protocol, port)
                row[i] = SELF
                yield port, protocol, i, row
                continue
            row = []
            for j, dst in enumerate(endpoints):
                if i == j:
                    row.append(SELF)
                elif protocol.family and not possible(Flow(src, dst, protocol, port)):
                    row.append(DENY)  # no such packet (evaluate.possible): the gate agrees
                elif reach is None or j not in position:
                    row.append(asked(src, dst, protocol, port))
                elif cls[position[j]] not in reach:
                    row.append(DENY)
                else:
                    row.append(asked(src, dst, protocol, port) if l7 else ALLOW)
            yield port, protocol, i, row


def compute(policy: PolicySet, endpoints: list[Endpoint], ports: list[tuple[int, Protocol]],
            rows: set[int] | None = None, cols: set[int] | None = None):
    """Flows in a stable order (port, source, destination; no self pairs) as dicts, streamed; an
    allowed flow through an L7 filter carries ``"l7": true``."""
    for port, protocol, i, codes in verdict_rows(policy, endpoints, ports):
        if rows is not None and i not in rows:
            continue
        for j, code in enumerate(codes):
            if code != SELF and (cols is None or j in cols):
                flow = {"from": endpoints[i].display, "to": endpoints[j].display, "port": port,
                        "protocol": protocol.label, "verdict": "deny" if code == DENY else "allow"}
                if code == L7:
                    flow["l7"] = True
                yield flow


def service_flows(policy: PolicySet, smap: ServiceMap, endpoints: list[Endpoint], services: list,
                  ports: list[tuple[int, Protocol]], rows: set[int] | None = None):
    """Rows to Service columns, as ``compute``'s dicts plus each backend's verdict on its own port."""
    for cell in cells(policy, smap, endpoints, services, ports):
        if rows is None or cell.src in rows:
            yield {"from": endpoints[cell.src].display, "to": cell.frontend.display, "port": cell.port,
                   "protocol": cell.protocol.label, "verdict": cell.verdict,
                   "backends": [{"backend": b.endpoint.display, "port": b.port, "verdict": "allow" if ok else "deny"}
                                for b, ok in cell.backends]}


def write_json(policy: PolicySet, endpoints: list[Endpoint], ports: list[tuple[int, Protocol]], out,
               rows: set[int] | None = None, cols: set[int] | None = None, to_services=()) -> None:
    """``{"flows": [...]}``, one flow per line exactly as ``json.dumps`` writes ``compute``'s dicts,
    streamed; the rows to Service columns (``service_flows``) last."""
    out.write('{"flows": [')
    first = True
    for text in itertools.chain(_json_rows(policy, endpoints, ports, rows, cols),
                                (json.dumps(flow) for flow in to_services)):
        out.write(("\n" if first else ",\n") + text)
        first = False
    out.write("\n]}\n")


def _json_rows(policy: PolicySet, endpoints: list[Endpoint], ports: list[tuple[int, Protocol]],
               rows: set[int] | None, cols: set[int] | None):
    """A source's flows on one port as JSON lines, joined from strings encoded once per endpoint and
    port: a ``json.dumps`` per flow made a 1,000-pod, 11-port matrix (11 M flows) take two minutes."""
    names = [json.dumps(ep.display) for ep in endpoints]
    heads = ['{"from": ' + name + ', "to": ' for name in names]
    wanted = [j for j in range(len(endpoints)) if cols is None or j in cols]
    for port, protocol, i, codes in verdict_rows(policy, endpoints, ports):
        if rows is not None and i not in rows:
            continue
        tail = f', "port": {port}, "protocol": {json.dumps(protocol.label)}, "verdict": '
        ends = {ALLOW: tail + '"allow"}', DENY: tail + '"deny"}', L7: tail + '"allow", "l7": true}'}
        head = heads[i]
        text = ",\n".join([head + names[j] + ends[codes[j]] for j in wanted if codes[j] != SELF])
        if text:
            yield text


# ---- text

def _blocks(n: int, cell: int, label: int, width: int) -> list[range]:
    """Column numbers per block so that each printed line fits ``width`` characters."""
    per = max(1, (width - label) // (cell + 1))
    return [range(s, min(s + per, n)) for s in range(0, n, per)] or [range(0)]


def run(args) -> int:
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args)
    policy = bind_services(args, policy, inventory)
    smap = ServiceMap(inventory)
    services = chosen_services(smap, args.services)
    if args.ports:
        ports = parse_ports(args.ports)
    else:
        ports = default_ports(policy, inventory) or [(80, Protocol.TCP)]
        warn(args, f"no --ports given: {len(ports)} port(s) the inventory's containers and the rules name: "
                   + ", ".join(f"{p}/{proto.label}" for p, proto in ports))
    srcs = picked(inventory, policy, args.src or [], "--from")
    dsts = picked(inventory, policy, args.dst or [], "--to")
    # an address or CIDR asked for with --from/--to is a row and a column, as if given with --external
    endpoints = list(dict.fromkeys(list(inventory.pods) + list(inventory.nodes)
                                   + extra_endpoints(inventory, policy, smap, args.external) + srcs + dsts))
    index = {ep: k for k, ep in enumerate(endpoints)}
    rows = {index[ep] for ep in srcs} if args.src else None
    cols = {index[ep] for ep in dsts} if args.dst else None
    to_services = service_flows(policy, smap, endpoints, services, ports, rows)
    if args.format == "json":
        write_json(policy, endpoints, ports, sys.stdout, rows, cols, to_services)
    elif args.format in ("csv", "yaml"):
        flows = itertools.chain(compute(policy, endpoints, ports, rows, cols), to_services)
        if args.format == "yaml":
            import yaml
            print(yaml.safe_dump({"flows": list(flows)}, sort_keys=False).rstrip("\n"))
        else:
            writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS, lineterminator="\n", extrasaction="ignore")
            writer.writeheader()
            writer.writerows({**f, "l7": "true" if f.get("l7") else "false"} for f in flows)  # as JSON spells it
    else:
        print_tables(args, policy, endpoints, ports, rows, cols, list(to_services), services)
    return 0


_MARK = {"allow": ALLOW, "deny": DENY, "partial": SOME}


def print_tables(args, policy, endpoints, ports, rows, cols, to_services=(), services=()) -> None:
    """Text (or markdown) tables, one per port, then a per-port summary; Service columns after the
    endpoints' (they do not count in the summary)."""
    row_ids = sorted(rows) if rows is not None else list(range(len(endpoints)))
    col_ids = sorted(cols) if cols is not None else list(range(len(endpoints)))
    names = [endpoints[k].display for k in range(len(endpoints))] + [PREFIX + s.display for s in services]
    svc_cols = list(range(len(endpoints), len(names)))
    marks = {(f["port"], f["protocol"], f["from"], f["to"]): _MARK[f["verdict"]] for f in to_services}
    width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 120
    grids: dict[tuple[int, Protocol], list[list[str]]] = {}
    wanted = set(row_ids)
    work = progress(verdict_rows(policy, endpoints, ports), len(ports) * len(endpoints), "matrix rows", args.quiet)
    for port, protocol, i, codes in work:
        if i in wanted:
            grids.setdefault((port, protocol), []).append([codes[j] for j in col_ids] + [
                marks.get((port, protocol.label, names[i], names[k]), NO_PORT) for k in svc_cols])
    out = []
    summary = []
    for (port, protocol), grid in grids.items():
        if args.format == "markdown":
            out += _markdown(port, protocol, [names[k] for k in row_ids], [names[k] for k in col_ids + svc_cols],
                             grid)
        else:
            out += _text(port, protocol, names, row_ids, col_ids + svc_cols, grid, width, len(col_ids))
        flat = [c for row in grid for c in row[:len(col_ids)] if c != SELF]
        summary.append((f"{port}/{protocol.label}", sum(c != DENY for c in flat), len(flat), flat.count(L7)))
    out.append("key: . allowed, L allowed through an L7 filter (requests are filtered), X denied, - itself"
               + ("; Services: . every backend allowed, ~ some, X none, blank: not a port of the Service"
                  if svc_cols else "") + "; rows: from, columns: to")
    out.append("per port: " + "; ".join(f"{p} {a}/{n} allowed" + (f" ({v} via L7)" if v else "")
                                        for p, a, n, v in summary))
    say("\n".join(out))


def _text(port, protocol, names, row_ids, col_ids, grid, width, counted: int | None = None) -> list[str]:
    """Rows and columns numbered by their place in the whole table, so filtered tables keep their numbers;
    the first ``counted`` columns (all by default) make the headline."""
    flat = [c for row in grid for c in row[:counted] if c != SELF]
    allowed, via = sum(c != DENY for c in flat), flat.count(L7)
    lines = [f"{port}/{protocol.label}: {allowed} of {len(flat)} flows allowed"
             + (f", {via} through an L7 filter" if via else "")]
    cell = len(str(len(names)))
    labels = [f"{k + 1:>{cell}} {names[k]}" for k in row_ids]
    label = max(map(len, labels), default=0) + 2
    for block in _blocks(len(col_ids), cell, label, width):
        if len(col_ids) > len(block):
            lines.append(f"  columns {col_ids[block.start] + 1}-{col_ids[block.stop - 1] + 1}:")
        lines.append(" " * label + " ".join(f"{col_ids[b] + 1:>{cell}}" for b in block))
        lines += [labels[r].ljust(label) + " ".join(row[b].rjust(cell) for b in block) for r, row in enumerate(grid)]
    if any(k not in row_ids for k in col_ids):
        lines.append("columns: " + ", ".join(f"{k + 1} {names[k]}" for k in col_ids if k not in row_ids))
    lines.append("")
    return lines


def _markdown(port, protocol, row_names, col_names, grid) -> list[str]:
    head = f"| {port}/{protocol.label} | " + " | ".join(f"{n + 1}" for n in range(len(col_names))) + " |"
    lines = [head, "|---|" + "---|" * len(col_names)]
    lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in zip(row_names, grid)]
    lines.append("")
    lines.append("columns: " + ", ".join(f"{n + 1} {name}" for n, name in enumerate(col_names)))
    lines.append("")
    return lines
