"""What `paths`, `blast-radius` and `graph` share: endpoint references, limits, and the graph they build."""
from __future__ import annotations

import argparse
import gc
import ipaddress
import sys
from dataclasses import replace

from ..compiler.connectivity import RESERVED_PLACES, Connectivity, Target, address_target, build
from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.ir import EndpointKind, unmapped
from ..compiler.portset import PortSet, parse_ports
from ..compiler.verify.spec import WORLD
from .common import add_inventory_arg, add_policy_args, load_inventory_arg, load_policy_args, resolve_endpoints
from .terminal import step

ENDPOINT_HELP = ("namespace/pod, a node, a label selector (app=web,namespace=shop), an IP address, a CIDR "
                 "(outside the cluster), world, world-ipv4, world-ipv6, or a reserved identity (kube-apiserver)")


POLICY_ENTITIES = ("host", "remote-node", "cluster", "all")  # entities that name many endpoints or a role


def _hops(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of hops (1 or more)")
    return value


def add_graph_args(parser: argparse.ArgumentParser, formats: tuple[str, ...], chains: bool = True) -> None:
    """Policies, inventory and ``--ports``; ``chains``: also ``--max-hops`` and ``--trust-nodes``."""
    add_policy_args(parser, formats)
    add_inventory_arg(parser, required=True)
    parser.add_argument("--ports", action="append", metavar="PORTS",
                        help="only connections on these ports, the services an attacker may use: "
                             "443/TCP,8000-8100/TCP,*/UDP,53/ANY (repeatable; default: any port)")
    if chains:
        parser.add_argument("--max-hops", type=_hops, metavar="N", help="chains of at most N hops (default: any)")
        parser.add_argument("--trust-nodes", action="store_true",
                            help="no chain passes through a node (a node may still start or end one)")


def ports_arg(args) -> PortSet | None:
    """Every --ports given, as one set; None (any port) only when the option is absent: an empty value
    is a mistake, not a wish for every port."""
    if args.ports is None:
        return None
    try:
        return parse_ports(",".join(args.ports))
    except ValueError as exc:
        raise PolicycError(Diagnostic.simple(f"--ports: {exc}", code="invalid-argument")) from None


def parse_target(inventory, text: str, option: str) -> Target:
    """An endpoint reference of the command line (ENDPOINT_HELP) as the pods, nodes and networks it names."""
    ref = text.strip()
    if ref in WORLD:
        return Target(ref, networks=WORLD[ref])
    if ref.removeprefix("reserved:") in RESERVED_PLACES:
        return Target(ref, reserved=(ref.removeprefix("reserved:"),))
    if "/" in ref:
        try:
            net = unmapped(ipaddress.ip_network(ref))  # as a dual-stack socket sends
        except ValueError:
            try:
                fixed = ipaddress.ip_network(ref, strict=False)
            except ValueError:
                fixed = None
            if fixed is not None:
                raise PolicycError(Diagnostic.simple(f"{option}: {ref!r} has host bits set; did you mean {fixed}?")) \
                    from None
        else:
            return address_target(ref, (net,), inventory)
    if ref in POLICY_ENTITIES:
        nodes = ", ".join(ep.name for ep in inventory.nodes) or "none in the inventory"
        raise PolicycError(Diagnostic.simple(
            f"{option}: {ref!r} is a policy entity, not an endpoint: name a node ({nodes}), a selector "
            "(namespace=NS) or world"))
    try:
        found = resolve_endpoints(inventory, ref, option)
    except PolicycError as exc:  # query's forms, plus the ones these commands add
        raise PolicycError(*(replace(d, message=f"{d.message}; here also a CIDR, world, world-ipv4, world-ipv6 "
                                     f"or a reserved identity ({', '.join(RESERVED_PLACES)})")
                             for d in exc.diagnostics)) from None
    return Target(ref, tuple(ep for ep in found if ep.kind is not EndpointKind.EXTERNAL),
                  tuple(ipaddress.ip_network(ep.ips[0]) for ep in found if ep.kind is EndpointKind.EXTERNAL))


def load_graph(args, refs: list[tuple[str, str]], nodes: bool = True) -> tuple[Connectivity, list[Target]]:
    """Policies, inventory and the graph, built with the networks the references name; notes to stderr."""
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args)
    gc.freeze()  # the inputs live until exit: the collector need not rescan them while the graph is built
    targets = [parse_target(inventory, text, option) for text, option in refs]
    step(f"building the connectivity graph of {len(inventory.pods)} pods", args.quiet)
    conn = build(policy, inventory, nodes=nodes, targets=targets)
    hosts = [f"{text} is a hostNetwork pod: its traffic is its node's, so it is answered as node "
             f"{inventory.host_network[text]}" for text, _ in refs if text.strip() in inventory.host_network]
    for note in hosts + conn.notes if not args.quiet else ():
        print(f"note: {note}", file=sys.stderr)
    return conn, targets


def places(conn: Connectivity, target: Target, option: str) -> set[int]:
    found = conn.places_of(target)
    if not found:
        raise PolicycError(Diagnostic.simple(f"{option}: {target.text!r} names no endpoint of the graph"))
    return found


def avoid(conn: Connectivity, args) -> frozenset[int]:
    return frozenset(conn.nodes()) if getattr(args, "trust_nodes", False) else frozenset()
