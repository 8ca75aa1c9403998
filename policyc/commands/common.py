"""Arguments and loading shared by the subcommands."""
from __future__ import annotations

import argparse
import sys

from ..compiler.diagnostics import Diagnostic, PolicycError, Severity
from ..compiler.frontend import build_policy_set
from ..compiler.inventory import Inventory, load_inventory
from ..compiler.ir import DEFAULT_CLUSTER, PolicySet, Protocol
from ..compiler.source import load_documents


def add_policy_args(parser: argparse.ArgumentParser, formats: tuple[str, ...] = ("text", "json")) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories (.yaml, .yml, .json)")
    parser.add_argument("--format", choices=formats, default=formats[0])
    parser.add_argument("--cluster-name", default=DEFAULT_CLUSTER, help="the local cluster's name (entity cluster)")
    parser.add_argument("-v", "--verbose", action="store_true", help="also list objects that are not policies")


def add_inventory_arg(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--inventory", action="append", required=required, metavar="INV",
                        help="Namespaces, Pods and Nodes as `kubectl get -o yaml` prints them (repeatable)")


def load_policy_args(args) -> PolicySet:
    """PolicySet from args.paths; warnings go to stderr, errors raise (exit 2)."""
    result = build_policy_set(load_documents(args.paths), args.cluster_name)
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    if errors:
        raise PolicycError(*result.diagnostics)
    if getattr(args, "format", "text") == "text":
        for diag in result.diagnostics:
            print(diag, file=sys.stderr)
    if getattr(args, "verbose", False):
        for line in result.skipped:
            print(f"{line}: skipped (not a network policy)", file=sys.stderr)
    return result.policy


def load_inventory_arg(args) -> Inventory:
    return load_inventory(args.inventory, args.cluster_name)


def parse_port(text: str) -> tuple[int, Protocol]:
    """``80/TCP``, ``53/udp`` or ``8/ICMP`` (type); the protocol defaults to TCP."""
    port, _, proto = text.strip().partition("/")
    try:
        protocol = Protocol.parse(proto or "TCP")
        number = int(port)
    except (KeyError, ValueError):
        raise PolicycError(Diagnostic.simple(
            f"invalid port {text!r}: expected PORT/PROTOCOL such as 80/TCP, 53/UDP or 8/ICMP")) from None
    if protocol is Protocol.ANY or not 0 <= number <= 65535:
        raise PolicycError(Diagnostic.simple(f"invalid port {text!r}: port 0-65535 and protocol "
                                             "TCP, UDP, SCTP, ICMP or ICMPv6"))
    return number, protocol


def resolve_endpoints(inventory: Inventory, ref: str, option: str) -> list:
    """``ns/pod``, a node, an address, or a label selector over the inventory's pods."""
    from ..compiler.cliselector import looks_like_selector, parse_cli_selector
    from ..compiler.evaluate import subject_labels

    if not looks_like_selector(ref):
        return [inventory.find(ref)]
    selector = parse_cli_selector(ref, option)
    found = [ep for ep in inventory.pods if selector.matches(subject_labels(ep))]
    if not found:
        raise PolicycError(Diagnostic.simple(f"{option}: selector {ref!r} matches no pod of the inventory"))
    return found


def bind_services(args, policy: PolicySet, inventory: Inventory | None) -> PolicySet:
    """``toServices`` resolved against the inventory's Services (none without one); a peer that matches
    no Service allows nothing, as in Cilium until the Service exists, and is named on stderr."""
    from ..compiler.services import bind, unmatched

    services = inventory.services if inventory is not None else ()
    if getattr(args, "format", "text") == "text":
        for rule, peer in unmatched(policy, services):
            why = ("matches no Service of the inventory" if inventory is not None else
                   "cannot be resolved without --inventory (Services and EndpointSlices)")
            print(f"{rule.origin}: warning: toServices {peer.service} {why}: it allows nothing here, as in "
                  "Cilium while no such Service exists", file=sys.stderr)
    return bind(policy, services)
