"""Arguments, loading and output shared by the subcommands: the conventions of docs/cli.md live here."""
from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import textwrap

import yaml

from ..compiler.diagnostics import Diagnostic, PolicycError, Severity
from ..compiler.frontend import build_policy_set
from ..compiler.inventory import Inventory, load_inventory, pod_labels
from ..compiler.ir import (ANY_SOURCE, DEFAULT_CLUSTER, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_KEY,
                           Endpoint, EndpointKind, Identity, Op, PolicySet, Protocol)
from ..compiler.source import STDIN, load_documents
from .parser import FORMAT_OPTIONS

STRUCTURED = ("json", "yaml")
FORMAT_NAMES = ("text", "json", "yaml", "sarif", "markdown", "junit", "csv")  # every command's choices are among these


def exit_status(answer_no: str | None) -> str:
    """The exit-status table of one command; ``answer_no`` says what exit 1 means for it, if it has one."""
    lines = ["exit status:", "  0    success"]
    if answer_no:
        lines += textwrap.wrap(answer_no, 88, initial_indent="  1    ", subsequent_indent="       ")
    lines += ["  2    bad input: an invalid policy or inventory, an unknown endpoint, a bad option",
              "  3    internal error (POLICYC_DEBUG=1 prints the traceback)", "  130  interrupted",
              "  141  standard output closed before the answer was written (SIGPIPE: `... | head`)"]
    return "\n".join(lines)


EXIT_STATUS = exit_status("the answer is no: a finding at or above --fail-on, a refused --expect, a failed "
                          "invariant, a change the gate refuses, a validation mismatch")


def subcommand(sub, name: str, summary: str, examples: str, description: str | None = None,
               answer_no: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with examples and its exit-status table (``answer_no``: what exit 1
    means for it, None when it never exits 1)."""
    return sub.add_parser(
        name, help=summary, description=description or summary[0].upper() + summary[1:] + ".",
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  ") + "\n\n"
        + exit_status(answer_no), formatter_class=argparse.RawDescriptionHelpFormatter)


def add_format_arg(parser: argparse.ArgumentParser, formats: tuple[str, ...] = ("text",) + STRUCTURED) -> None:
    parser.add_argument(*FORMAT_OPTIONS, dest="format", choices=formats, default=formats[0], metavar="FORMAT",
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
    if getattr(args, "verbose", False):
        for line in result.skipped:
            print(f"{line}: skipped (not a network policy)", file=sys.stderr)
    if not result.policy.policies:
        if require:
            raise PolicycError(no_policies(paths, "nothing to check (CiliumNetworkPolicy, "
                                                  "CiliumClusterwideNetworkPolicy or NetworkPolicy objects)"))
        if result.skipped:  # objects, but none a policy: the wrong input, not an empty policy set
            hint = "; policies go in PATH, Namespaces, Pods and Nodes in --inventory" \
                if getattr(args, "inventory", None) else ""
            raise PolicycError(no_policies(paths, f"it holds {len(result.skipped)} object(s), none of them a "
                                                  f"network policy (-v lists them){hint}"))
        if not getattr(args, "quiet", False):
            print(no_policies(paths, "every flow is allowed", Severity.WARNING), file=sys.stderr)
    if getattr(args, "format", "text") == "text" and not getattr(args, "quiet", False):
        for diag in result.diagnostics:
            print(diag, file=sys.stderr)
    return result.policy


def load_inventory_arg(args) -> Inventory:
    """The inventory; a file without any Namespace, Pod or Node is an error, not an empty cluster.
    What the dump leaves unknown is said on stderr (warnings unless -q, notes with -v)."""
    inventory = load_inventory(args.inventory, args.cluster_name)
    if not (inventory.endpoints or inventory.namespaces):
        one = len(args.inventory) == 1
        shared = STDIN in args.inventory and STDIN in (getattr(args, "paths", None) or ())
        raise PolicycError(Diagnostic(
            Severity.ERROR, f"--inventory{'' if one else ' ' + ', '.join(args.inventory)}: no Namespace, Pod or "
            "Node in it; an inventory is what `kubectl get namespaces,pods,nodes -A -o yaml` prints"
            + ("; standard input is read once and serves the policies and --inventory alike, so pipe one stream "
               "that holds both (kubectl get cnp,netpol,ns,pods,nodes -A -o yaml)" if shared else ""),
            args.inventory[0] if one else "", code="empty-inventory"))
    for diag in inventory.diagnostics:
        if diag.severity is Severity.WARNING and not getattr(args, "quiet", False) \
                or diag.severity is Severity.INFO and getattr(args, "verbose", False):
            print(diag, file=sys.stderr)
    return inventory


def structured(data, fmt: str) -> str:
    """``data`` as JSON or YAML: the two structured formats every command offers."""
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    return json.dumps(data, indent=2)


def split_items(values: list[str] | None, option: str) -> list[str]:
    """The items of a repeatable option that also takes commas (``--ports 80/TCP,443/TCP --ports 53/UDP``);
    an option given with nothing in it is an error, not a question about nothing."""
    items = [x.strip() for v in values or () for x in v.split(",") if x.strip()]
    if values and not items:
        raise PolicycError(Diagnostic.simple(f"{option}: no value in {values[0]!r}", code="invalid-argument"))
    return items


def parse_port(text: str) -> tuple[int, Protocol]:
    """``80/TCP``, ``53/udp`` or ``8/ICMP`` (type); a bare number is TCP, as in a policy's toPorts."""
    port, _, proto = text.strip().partition("/")
    if port and not port.isdigit() and not proto:
        raise PolicycError(Diagnostic.simple(
            f"invalid port {text!r}: named ports are resolved per pod, so the command line takes numbers "
            "(PORT/PROTOCOL such as 8080/TCP); the inventory's containers list the names", code="invalid-argument"))
    try:
        protocol = Protocol.parse(proto or "TCP")
        number = int(port)
    except (KeyError, ValueError):
        raise PolicycError(Diagnostic.simple(
            f"invalid port {text!r}: expected PORT/PROTOCOL such as 80/TCP, 53/UDP or 8/ICMP",
            code="invalid-argument")) from None
    top = 255 if protocol in (Protocol.ICMP, Protocol.ICMPV6) else 65535
    if protocol is Protocol.ANY or not 0 <= number <= top:
        raise PolicycError(Diagnostic.simple(f"invalid port {text!r}: port 0-65535 and protocol TCP, UDP, SCTP, "
                                             "ICMP or ICMPv6 (whose types are 0-255)", code="invalid-argument"))
    return number, protocol


def resolve_endpoints(inventory: Inventory, refs: list[str] | str, option: str) -> list:
    """Endpoints named by one or more references (repeated options add up): ``ns/pod``, a node, an
    address, or a label selector over the inventory's pods."""
    from ..compiler.cliselector import looks_like_selector, parse_cli_selector

    found: list = []
    for ref in [refs] if isinstance(refs, str) else refs:
        listed = _endpoint_list(inventory, ref)
        if listed is not None:
            found.extend(listed)
            continue
        if not looks_like_selector(ref):
            found.append(inventory.find(ref))
            continue
        selector = parse_cli_selector(ref, option)
        matched = inventory.select(selector)
        if not matched:
            raise PolicycError(Diagnostic.simple(f"{option}: selector {ref!r} matches no pod of the inventory"))
        found.extend(matched)
    return list(dict.fromkeys(found))


def _endpoint_list(inventory: Inventory, ref: str) -> list | None:
    """``shop/a,shop/b,node-1``: a comma list of endpoints (docs/cli.md: list options take commas), told
    from a selector of bare keys (``app,tier``: both labels present) by its items naming endpoints;
    None when it is not such a list. One unknown item among known ones is an error with a suggestion."""
    from ..compiler.cliselector import looks_like_selector

    items = [x.strip() for x in ref.split(",")]
    if len(items) < 2 or any(not x or looks_like_selector(x) for x in items):
        return None
    known = []
    for item in items:
        try:
            known.append(inventory.find(item))
        except PolicycError:
            known.append(None)
    if not any(known):
        return None
    return [ep if ep is not None else inventory.find(item) for ep, item in zip(known, items)]


def labelled_endpoint(ref: str, option: str, cluster: str):
    """An endpoint without an inventory: an address, or one pod given by exactly its labels
    (``namespace=shop,app=web``), which is how check, diff and verify print the pods of their examples
    when they had no inventory, so every example can be asked again with query. The source and the
    destination are two pods (pod-src, pod-dst, as the examples call them) even with equal labels."""
    from ..compiler.cliselector import format_selector, looks_like_selector, parse_cli_selector

    try:
        return Inventory().find(str(ipaddress.ip_address(ref)))
    except ValueError:
        pass
    reqs = parse_cli_selector(ref, option).requirements if looks_like_selector(ref) or "=" in ref else ()
    labels = {r.key: r.values[0] for r in reqs
              if r.op is Op.IN and len(r.values) == 1 and r.source in ("k8s", ANY_SOURCE)}
    if not reqs or len(labels) != len(reqs) or NAMESPACE_KEY not in labels:
        raise PolicycError(Diagnostic.simple(
            f"{option} {ref!r}: without --inventory an endpoint is an address or one pod given by its labels, "
            "key=value pairs with its namespace (namespace=shop,app=web)", code="invalid-argument"))
    namespace = labels.pop(NAMESPACE_KEY)
    ns_labels = {k.removeprefix(NAMESPACE_LABELS_PREFIX): v for k, v in labels.items()
                 if k.startswith(NAMESPACE_LABELS_PREFIX)}
    own = {k: v for k, v in labels.items() if not k.startswith(NAMESPACE_LABELS_PREFIX) and k != SERVICE_ACCOUNT_KEY}
    account = labels.get(SERVICE_ACCOUNT_KEY, "default")
    identity = pod_labels(own, namespace, {"kubernetes.io/metadata.name": namespace, **ns_labels}, account, cluster)
    shown = format_selector(parse_cli_selector(",".join(f"{k}={v}" for k, v in sorted(labels.items())))) \
        if labels else ""
    name = ("pod-src" if option == "--from" else "pod-dst") + "{" + shown + "}"  # two pods, even with equal labels
    return Endpoint(EndpointKind.POD, name, namespace, (), Identity(0, identity), service_account=account)
