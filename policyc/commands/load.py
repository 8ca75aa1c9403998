"""`policyc load`: put an artifact on this node's hooks (docs/runtime.md); over a loaded name, replace it atomically."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.source import read_text
from .common import add_format_arg, structured, subcommand
from .runtime_common import bpf_errors

EXAMPLES = """
policyc load out/ --name shop --attach shop/cart=lxc1234 --xdp eth0
policyc load out-v2/ --name shop --attach-file attach.txt      # over a loaded name: atomic replace
"""


def register(sub) -> None:
    parser = subcommand(sub, "load", "load a compiled artifact onto TC/XDP hooks (atomic replace if loaded)",
                        EXAMPLES)
    parser.add_argument("artifact", metavar="DIR", help="artifact directory written by `policyc compile`")
    parser.add_argument("--name", help="name of the loaded artifact (default: the directory's basename, dots as '-')")
    parser.add_argument("--attach", action="append", default=[], metavar="NS/POD=IFACE",
                        help="the host-side interface of a pod's veth (repeatable): from_pod on TC ingress, "
                        "to_pod on TC egress")
    parser.add_argument("--attach-file", metavar="FILE", help="more NS/POD=IFACE lines (# comments allowed)")
    parser.add_argument("--xdp", metavar="IFACE", help="the node's external interface for xdp_node")
    parser.add_argument("--xdp-mode", choices=("auto", "native", "generic"), default="auto",
                        help="auto: native where the driver supports it, else generic")
    parser.add_argument("--tc-mode", choices=("tcx", "clsact"), default="tcx",
                        help="tcx links (kernel >= 6.6, default) or clsact cls_bpf filters (older kernels)")
    parser.add_argument("--node-ip", action="append", default=[], metavar="IP",
                        help="an address of this node, seen as identity host (repeatable; inventory node "
                        "addresses configured here are added automatically)")
    parser.add_argument("--compiler", choices=("libbpf", "bcc"), default="libbpf",
                        help="libbpf: load the artifact's compiled object (default); bcc: compile its C here "
                        "with bcc (needs python3-bpfcc and the running kernel's headers, docs/deploy.md)")
    add_format_arg(parser)
    parser.set_defaults(run=run)


def parse_attach(items: list[str], where: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        endpoint, sep, iface = item.strip().partition("=")
        if not sep or endpoint.count("/") != 1 or not iface or not endpoint.split("/")[0] or not endpoint.split("/")[1]:
            raise PolicycError(Diagnostic.simple(f"{where}: {item!r}: expected NS/POD=IFACE"))
        out.append((endpoint.strip(), iface.strip()))
    return out


def attach_file_lines(path: str) -> list[tuple[str, str]]:
    try:
        lines = read_text(Path(path)).splitlines()
    except PolicycError as exc:
        raise PolicycError(Diagnostic.simple(f"--attach-file {path}: {exc.diagnostics[0].message}")) from None
    out = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            out += parse_attach([text], f"{path}:{n}")
    return out


def run(args) -> int:
    from ..bpf_runtime.loader import Request, load

    attach = parse_attach(args.attach, "--attach") + (attach_file_lines(args.attach_file) if args.attach_file else [])
    artifact = Path(args.artifact)
    name = args.name or re.sub(r"[^A-Za-z0-9_-]", "-", Path(os.path.abspath(artifact)).name)  # bpffs refuses dots
    req = Request(artifact, name, tuple(attach), args.xdp, args.xdp_mode, tuple(args.node_ip), args.tc_mode,
                  args.compiler)
    with bpf_errors():
        result = load(req)
    state = result.state
    if args.format != "text":
        print(structured({"name": state.name, "replaced": result.replaced, "seconds": round(result.seconds, 4),
                          "conntrack_kept": result.conntrack_kept, "conntrack_dropped": result.conntrack_dropped,
                          **state.as_dict()}, args.format))
        return 0
    verb = "replaced" if result.replaced else "loaded"
    print(f"{verb} {state.artifact} as {state.name} in {result.seconds * 1000:.0f} ms (pins: {state.pin_dir})")
    for a in state.attachments:
        who = f" ({a.endpoint})" if a.endpoint else ""
        print(f"  {a.program:<9} on {a.iface} {a.hook:<7} [{a.mode}]{who}")
    if state.node_ips:
        print(f"  host identity for {', '.join(state.node_ips)}")
    if result.replaced:
        print(f"  conntrack: {result.conntrack_kept} connection(s) kept, {result.conntrack_dropped} not allowed "
              "by the new policy")
    return 0
