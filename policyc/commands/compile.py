"""`policyc compile`: policies × inventory → an artifact directory (docs/artifact.md), validated on request."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..compiler.artifact import compile_artifact
from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.entities import RESERVED_IDS
from ..compiler.ir import Direction, Protocol
from ..compiler.lower import ANY_PEER
from ..compiler.mapdata import DEFAULT_SIZES, port_text
from .common import add_inventory_arg, add_policy_args, bind_services, load_inventory_arg, load_policy_args


def register(sub) -> None:
    parser = sub.add_parser("compile", help="compile policies to an eBPF datapath artifact")
    add_policy_args(parser)
    add_inventory_arg(parser, required=True)
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="artifact directory to write")
    parser.add_argument("--validate", action="store_true",
                        help="load the artifact (root, BPF) and check the kernel's verdicts against the evaluator")
    parser.add_argument("--map-size", action="append", default=[], metavar="NAME=N",
                        help="map capacity, repeatable (defaults: "
                        + ", ".join(f"{k}={v}" for k, v in DEFAULT_SIZES.items()) + ")")
    parser.set_defaults(run=run)


def parse_sizes(items: list[str]) -> dict[str, int]:
    sizes = {}
    for item in items:
        name, _, number = item.partition("=")
        try:
            value = int(number)
        except ValueError:
            value = 0
        if value <= 0:
            raise PolicycError(Diagnostic.simple(f"--map-size {item!r}: expected NAME=N with N a positive number"))
        sizes[name.strip()] = value
    return sizes


def peer_name(dp, peer: int) -> str:
    """Pods holding the identity, else its CIDR or reserved name."""
    if peer == ANY_PEER:
        return "any peer"
    pods = sorted({e.name for e in dp.endpoints if e.identity == peer})
    if pods:
        return ",".join(pods)
    region = next((i.region for i in dp.identities if i.id == peer and i.region is not None), None)
    reserved = {n: name for name, n in RESERVED_IDS.items()}
    return str(region) if region is not None else reserved.get(peer, f"identity {peer}")


def l7_flows(dp) -> list[str]:
    """Flows whose requests go to the L7 proxy: their final verdict depends on L7 rules (R9.1)."""
    out = []
    for e in dp.policy:
        if e.verdict.proxy:
            subjects = ",".join(sorted({x.name for x in dp.endpoints if x.policy_id == e.policy_id}))
            where = "from" if e.direction is Direction.INGRESS else "to"
            proto = "any" if e.protocol is None else Protocol(e.protocol).label
            out.append(f"{subjects} {e.direction.value} {where} {peer_name(dp, e.peer)} "
                       f"{port_text(e)}/{proto} (rule {e.verdict.rule})")
    return out


def _validate(out: Path, policy, inventory, result) -> list:
    from ..bpf_runtime.libbpf import BPFError
    from ..bpf_runtime.validate import default_probes, run_probes

    probes = default_probes(policy, inventory, result.datapath)
    try:
        return probes, run_probes(out, policy, probes)
    except BPFError as exc:
        raise PolicycError(Diagnostic.simple(f"--validate needs root and BPF: {exc}")) from None


def run(args) -> int:
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args)
    policy = bind_services(args, policy, inventory)
    out = Path(args.output)
    result = compile_artifact(policy, inventory, out, list(args.paths) + list(args.inventory),
                              parse_sizes(args.map_size), (list(args.paths), list(args.inventory)))
    report = {"output": str(out), "rules": len(policy.rules), "features": result.datapath.features.as_dict(),
              "maps": [s.manifest() for s in result.maps], "warnings": list(result.warnings),
              "l7_flows": l7_flows(result.datapath)}
    mismatches = []
    if args.validate:
        probes, mismatches = _validate(out, policy, inventory, result)
        report["validation"] = {"probes": len(probes), "mismatches": [str(m) for m in mismatches]}
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"compiled {len(policy.rules)} rules into {out}")
        print("features: " + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in report["features"].items()))
        for m in report["maps"]:
            if m["type"] != "ringbuf":
                print(f"  {m['name']:<13} {m['type']:<13} {m['entries']:>7} / {m['max_entries']} entries")
        for flow in report["l7_flows"]:
            print(f"  L7 proxy: {flow}")
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.validate:
            for m in mismatches:
                print(f"MISMATCH {m}")
            print(f"validated {report['validation']['probes']} probes in the kernel: "
                  f"{len(mismatches)} mismatch(es)")
    return 1 if mismatches else 0
