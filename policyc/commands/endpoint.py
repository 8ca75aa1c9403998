"""`policyc endpoint add|remove|relabel`: change a loaded artifact's pods by map updates, no recompile."""
from __future__ import annotations

import re
from dataclasses import asdict

from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.ir import NamedPort, Protocol
from .common import add_format_arg, structured, subcommand
from .runtime_common import bpf_errors, through_agent


EXAMPLES = """
policyc endpoint add shop shop/cart-2 --ip 10.0.1.9 --label app=cart --attach lxc99
policyc endpoint relabel shop shop/cart --label app=cart --label version=v2
policyc endpoint remove shop shop/cart-2
"""


def register(sub) -> None:
    parser = subcommand(sub, "endpoint", "add, remove or relabel a pod of a loaded artifact at run time", EXAMPLES)
    ops = parser.add_subparsers(dest="op", metavar="OP", required=True)
    for op, text in (("add", "a new pod: --ip and --label"), ("remove", "a pod leaves the node"),
                     ("relabel", "new labels (--label, replacing the pod's labels) and/or addresses (--ip)")):
        p = subcommand(ops, op, text, EXAMPLES)
        p.add_argument("name", metavar="NAME", help="loaded artifact")
        p.add_argument("endpoint", metavar="NS/POD")
        if op != "remove":
            p.add_argument("--ip", action="append", metavar="IP", help="the pod's address (repeatable)")
            p.add_argument("--label", action="append", metavar="KEY=VALUE", help="a pod label (repeatable)")
            p.add_argument("--service-account", metavar="SA")
            p.add_argument("--attach", metavar="IFACE", help="the pod's host-side veth: put from_pod/to_pod on it "
                           "(detached again by `endpoint remove`; relabel: a pod without hooks yet)")
        if op == "add":
            p.add_argument("--port", action="append", metavar="NAME=PORT[/PROTO]",
                           help="a named container port, e.g. http=8080/TCP (repeatable; protocol TCP by default): "
                           "rules naming the port resolve against it")
        add_format_arg(p)
        p.set_defaults(run=run)


def parse_labels(items: list[str] | None) -> dict | None:
    if items is None:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PolicycError(Diagnostic.simple(f"--label {item!r}: expected KEY=VALUE"))
        out[key.strip()] = value.strip()
    return out


PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # IANA_SVC_NAME, as Kubernetes checks it


def parse_ports(items: list[str] | None) -> tuple[NamedPort, ...] | None:
    """``NAME=PORT[/PROTO]`` items as named ports; a clear error for anything Kubernetes would refuse."""
    if items is None:
        return None
    out = []
    for item in items:
        name, sep, rest = item.partition("=")
        number, _, proto = rest.partition("/")
        try:
            protocol = Protocol.parse(proto or "TCP")
            port = int(number)
        except (KeyError, ValueError):
            protocol, port = None, 0
        if (not sep or len(name) > 15 or not PORT_NAME.match(name) or not 0 < port < 65536
                or protocol not in (Protocol.TCP, Protocol.UDP, Protocol.SCTP)):
            raise PolicycError(Diagnostic.simple(
                f"--port {item!r}: expected NAME=PORT[/PROTO] with a port name of at most 15 lower-case letters, "
                "digits and '-', a port from 1 to 65535 and TCP, UDP or SCTP"))
        out.append(NamedPort(name, port, protocol))
    if len({np.name for np in out}) != len(out):
        raise PolicycError(Diagnostic.simple("--port: a port name is given twice"))
    return tuple(out)


def run(args) -> int:
    from ..agent.client import agent_for
    from ..bpf_runtime.attach import Attachment
    from ..bpf_runtime.endpoints import change
    from ..bpf_runtime.loaded import loaded_state, manifest_of
    from ..bpf_runtime.privileges import require_root
    from ..bpf_runtime.state import name_lock

    if args.endpoint.count("/") != 1 or "" in args.endpoint.split("/"):
        raise PolicycError(Diagnostic.simple(f"{args.endpoint!r}: expected NS/POD"))
    labels = parse_labels(getattr(args, "label", None))
    ports = parse_ports(getattr(args, "port", None))
    ips = getattr(args, "ip", None)
    if args.op == "add" and (not ips or labels is None):
        raise PolicycError(Diagnostic.simple("endpoint add needs --ip and at least one --label"))
    if args.op == "relabel" and not ips and labels is None and getattr(args, "attach", None) is None:
        raise PolicycError(Diagnostic.simple("endpoint relabel needs --label, --ip or --attach"))
    require_root()
    attach = getattr(args, "attach", None)
    agent = agent_for(args.name)
    if agent is not None:  # the agent owns the name: it applies the change with what it keeps in memory
        answer = through_agent(agent, "POST", "/v1/endpoint", {
            "op": args.op, "endpoint": args.endpoint, "ips": ips, "labels": labels,
            "service_account": getattr(args, "service_account", None), "attach": attach,
            "ports": None if ports is None else [[np.name, np.port, np.protocol.label] for np in ports]})
        result, hooks, detached = answer, [Attachment(**a) for a in answer["attachments"]], answer["detached"]
    else:
        with bpf_errors(), name_lock(args.name):
            state = loaded_state(args.name)
            hooked = [a for a in state.attachments if a.endpoint == args.endpoint]
            change_ = change(state, manifest_of(state)["features"], args.op, args.endpoint, ips, labels,
                             getattr(args, "service_account", None), attach, ports=ports)
        result = asdict(change_)
        hooks = [a for a in state.attachments if a.endpoint == args.endpoint]  # none left after a remove
        detached = sorted({a.iface for a in hooked}) if args.op == "remove" else []
    if args.format != "text":
        print(structured({**{k: v for k, v in result.items() if k not in ("attachments", "detached")},
                          "attachments": [a.as_dict() for a in hooks]}, args.format))
    else:
        ident = f"identity {result['identity']}" + (" (new)" if result["new_identity"] else "")
        print(f"{result['op']} {result['endpoint']}: {ident}, policy id {result['policy_id']}, "
              f"{result['policy_entries']} policy entries written; maps updated in "
              f"{result['seconds_maps'] * 1000:.2f} ms (total {result['seconds_total'] * 1000:.1f} ms)"
              + (" [through the agent]" if agent is not None else ""))
        for a in hooks:
            print(f"  {a.program:<9} on {a.iface} {a.hook:<7} [{a.mode}]")
        if detached:
            print(f"  detached from {', '.join(detached)}")
    return 0
