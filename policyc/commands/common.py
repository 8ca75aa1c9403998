"""Arguments, loading and output shared by the subcommands: the conventions of docs/cli.md live here."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap

import yaml

from ..compiler.diagnostics import Diagnostic, PolicycError, Severity
from ..compiler.frontend import build_policy_set
from ..compiler.inventory import Inventory, load_inventory
from ..compiler.ir import DEFAULT_CLUSTER, PolicySet, Protocol
from ..compiler.source import STDIN, load_documents

EXIT_STATUS = """\
exit status:
  0    success
  1    the answer is no: a finding at or above --fail-on, a refused --expect, a failed
       invariant, a change the gate refuses, a validation mismatch
  2    bad input: an invalid policy or inventory, an unknown endpoint, a bad option
  3    internal error (POLICYC_DEBUG=1 prints the traceback)
  130  interrupted"""

STRUCTURED = ("json", "yaml")


def subcommand(sub, name: str, summary: str, examples: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with examples and the exit-status table."""
    return sub.add_parser(
        name, help=summary, description=description or summary[0].upper() + summary[1:] + ".",
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  ") + "\n\n" + EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter)


def add_format_arg(parser: argparse.ArgumentParser, formats: tuple[str, ...] = ("text",) + STRUCTURED) -> None:
    parser.add_argument("-o", "--format", choices=formats, default=formats[0], metavar="FORMAT",
                        help=f"output format: {', '.join(formats)} (default: {formats[0]})")


def add_verbosity_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="also list objects that are not policies")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress and no warnings on stderr")


def add_policy_args(parser: argparse.ArgumentParser, formats: tuple[str, ...] = ("text",) + STRUCTURED) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="policy files or directories (.yaml, .yml, .json); - reads standard input")
    add_format_arg(parser, formats)
    parser.add_argument("--cluster-name", default=DEFAULT_CLUSTER, help="the local cluster's name (entity cluster)")
    add_verbosity_args(parser)


def add_inventory_arg(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--inventory", action="append", required=required, metavar="INV",
                        help="Namespaces, Pods and Nodes as `kubectl get namespaces,pods,nodes -A -o yaml` "
                        "prints them (repeatable; - reads standard input)")


def warn(args, message: str) -> None:
    """A warning on stderr, unless -q."""
    if not getattr(args, "quiet", False):
        print(f"warning: {message}", file=sys.stderr)


def no_policies(paths: list[str], consequence: str, severity: Severity = Severity.ERROR) -> Diagnostic:
    """Inputs without any network policy: named as the file when there is one path."""
    one = len(paths) == 1
    where = "" if one else f" in {', '.join(map(str, paths))}"
    return Diagnostic(severity, f"no network policy{where}: {consequence}", str(paths[0]) if one else "",
                      code="no-policies")


def load_policy_args(args, paths: list[str] | None = None, require: bool = False) -> PolicySet:
    """PolicySet from ``paths`` (default args.paths); warnings go to stderr, errors raise (exit 2).

    An input without any network policy is an error when ``require`` (validate, check: nothing
    would have been checked), else a warning: every flow is then allowed.
    """
    paths = paths if paths is not None else args.paths
    result = build_policy_set(load_documents(paths), args.cluster_name)
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    if errors:
        raise PolicycError(*result.diagnostics)
    if not result.policy.policies:
        if require:
            raise PolicycError(no_policies(paths, "nothing to check (CiliumNetworkPolicy, "
                                                  "CiliumClusterwideNetworkPolicy or NetworkPolicy objects)"))
        if not getattr(args, "quiet", False):
            print(no_policies(paths, "every flow is allowed", Severity.WARNING), file=sys.stderr)
    if getattr(args, "format", "text") == "text" and not getattr(args, "quiet", False):
        for diag in result.diagnostics:
            print(diag, file=sys.stderr)
    if getattr(args, "verbose", False):
        for line in result.skipped:
            print(f"{line}: skipped (not a network policy)", file=sys.stderr)
    return result.policy


def load_inventory_arg(args) -> Inventory:
    """The inventory; a file without any Namespace, Pod or Node is an error, not an empty cluster."""
    inventory = load_inventory(args.inventory, args.cluster_name)
    if not (inventory.endpoints or inventory.namespaces):
        one = len(args.inventory) == 1
        raise PolicycError(Diagnostic(
            Severity.ERROR, f"--inventory{'' if one else ' ' + ', '.join(args.inventory)}: no Namespace, Pod or "
            "Node in it; an inventory is what `kubectl get namespaces,pods,nodes -A -o yaml` prints",
            args.inventory[0] if one else "", code="empty-inventory"))
    return inventory


def structured(data, fmt: str) -> str:
    """``data`` as JSON or YAML: the two structured formats every command offers."""
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    return json.dumps(data, indent=2)


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


def resolve_endpoints(inventory: Inventory, refs: list[str] | str, option: str) -> list:
    """Endpoints named by one or more references (repeated options add up): ``ns/pod``, a node, an
    address, or a label selector over the inventory's pods."""
    from ..compiler.cliselector import looks_like_selector, parse_cli_selector
    from ..compiler.evaluate import subject_labels

    found: list = []
    for ref in [refs] if isinstance(refs, str) else refs:
        if not looks_like_selector(ref):
            found.append(inventory.find(ref))
            continue
        selector = parse_cli_selector(ref, option)
        matched = [ep for ep in inventory.pods if selector.matches(subject_labels(ep))]
        if not matched:
            raise PolicycError(Diagnostic.simple(f"{option}: selector {ref!r} matches no pod of the inventory"))
        found.extend(matched)
    return list(dict.fromkeys(found))
