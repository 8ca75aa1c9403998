"""`policyc compile`: policies × inventory → an artifact directory (docs/artifact.md), validated on request."""
from __future__ import annotations

from pathlib import Path

from ..compiler.artifact import L7_MODES, compile_artifact
from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.entities import RESERVED_IDS
from ..compiler.ir import DEFAULT_CLUSTER, Direction, Protocol
from ..compiler.lower import ANY_PEER
from ..compiler.mapdata import DEFAULT_SIZES, port_text
from .common import (FORMAT_NAMES, STRUCTURED, add_inventory_arg, add_verbosity_args, load_inventory_arg,
                     load_policy_args, structured, subcommand, warn)
from .parser import FORMAT_OPTIONS
from .terminal import progress, say, step

FORMATS = ("text",) + STRUCTURED
EXAMPLES = """
policyc compile examples/shop/policies --inventory examples/shop/inventory.yaml --output-dir out/
policyc compile P --inventory INV --output-dir out/ --validate     # replay probes in the kernel (root)
policyc compile P --inventory INV --output-dir out/ -o json        # the report as JSON
"""


def register(sub) -> None:
    parser = subcommand(sub, "compile", "compile policies to an eBPF datapath artifact", EXAMPLES,
                        answer_no="--validate found a kernel verdict that differs from the evaluator's")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="policy files or directories (.yaml, .yml, .json); - reads standard input")
    # -o is the output format as everywhere; `-o DIR` (its old meaning here) still works, with a warning
    parser.add_argument(*FORMAT_OPTIONS, dest="format", default="text", metavar="FORMAT",
                        help=f"output format: {', '.join(FORMATS)} (default: text)")
    parser.add_argument("--cluster-name", default=DEFAULT_CLUSTER, help="the local cluster's name (entity cluster)")
    add_verbosity_args(parser)
    add_inventory_arg(parser, required=True)
    parser.add_argument("--output-dir", metavar="DIR", help="artifact directory to write (required)")
    parser.add_argument("--validate", action="store_true",
                        help="load the artifact (root, BPF) and check the kernel's verdicts against the evaluator")
    parser.add_argument("--l7", choices=L7_MODES, default="refuse",
                        help="L7 (HTTP, DNS, Kafka) rules need a proxy, which policyc does not have: refuse them "
                        "(default; the error lists them) or enforce them as L4 allows, flagged in events")
    parser.add_argument("--map-size", action="append", default=[], metavar="NAME=N",
                        help="map capacity, repeatable (defaults: "
                        + ", ".join(f"{k}={v}" for k, v in DEFAULT_SIZES.items()) + ")")
    parser.set_defaults(run=run)


MAX_ENTRIES = (1 << 32) - 1  # the kernel's max_entries is a u32


def parse_sizes(items: list[str]) -> dict[str, int]:
    sizes = {}
    for item in items:
        name, _, number = item.partition("=")
        try:
            value = int(number)
        except ValueError:
            value = 0
        if not 0 < value <= MAX_ENTRIES:
            raise PolicycError(Diagnostic.simple(f"--map-size {item!r}: expected NAME=N with N from 1 to {MAX_ENTRIES} "
                                                 "(a map's max_entries is 32 bits)", code="invalid-argument"))
        if name.strip() not in DEFAULT_SIZES:
            raise PolicycError(Diagnostic.simple(f"--map-size {item!r}: no map {name.strip()!r}; the maps are "
                                                 f"{', '.join(DEFAULT_SIZES)}", code="invalid-argument"))
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
    """Flows allowed at L4 whose L7 rules no proxy enforces (--l7 l4-only; Cilium would filter requests, R9.1)."""
    out = []
    for e in dp.policy:
        if e.verdict.l7:
            subjects = ",".join(sorted({x.name for x in dp.endpoints if x.policy_id == e.policy_id}))
            where = "from" if e.direction is Direction.INGRESS else "to"
            proto = "any" if e.protocol is None else Protocol(e.protocol).label
            out.append(f"{subjects} {e.direction.value} {where} {peer_name(dp, e.peer)} "
                       f"{port_text(e)}/{proto} (rule {e.verdict.rule})")
    return out


def output_dir(args) -> Path:
    """--output-dir, or the deprecated `-o DIR` (anything after -o that is not a format name)."""
    if args.format not in FORMATS:
        if args.format in FORMAT_NAMES:  # `-o sarif` meant a format compile does not have, not a directory
            asked, args.format = args.format, "text"  # so the error itself is not written as SARIF
            raise PolicycError(Diagnostic.simple(f"-o {asked}: compile writes {', '.join(FORMATS)}; the "
                                                 "artifact goes to --output-dir DIR", code="invalid-argument"))
        if args.output_dir:
            raise PolicycError(Diagnostic.simple(f"-o {args.format!r}: not a format ({', '.join(FORMATS)})",
                                                 code="invalid-argument"))
        warn(args, f"`compile -o {args.format}` is deprecated: -o is the output format in every command; "
                   f"write --output-dir {args.format}")
        args.output_dir, args.format = args.format, "text"
    if not args.output_dir:
        raise PolicycError(Diagnostic.simple("compile needs --output-dir DIR", code="invalid-argument"))
    return Path(args.output_dir)


def _validate(out: Path, policy, inventory, result, quiet: bool) -> list:
    from ..bpf_runtime.libbpf import BPFError
    from ..bpf_runtime.validate import default_probes, run_probes

    probes = default_probes(policy, inventory, result.datapath)
    try:
        return probes, run_probes(out, policy, progress(probes, len(probes), "probes in the kernel", quiet))
    except BPFError as exc:
        raise PolicycError(Diagnostic.simple(f"--validate needs root and BPF: {exc}")) from None


def run(args) -> int:
    out = output_dir(args)
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args)
    step(f"compiling {len(policy.rules)} rules for {len(inventory.endpoints)} endpoints", args.quiet)
    result = compile_artifact(policy, inventory, out, list(args.paths) + list(args.inventory),
                              parse_sizes(args.map_size), (list(args.paths), list(args.inventory)), args.l7)
    report = {"output": str(out), "rules": len(policy.rules), "features": result.datapath.features.as_dict(),
              "maps": [s.manifest() for s in result.maps], "warnings": list(result.warnings),
              "l7_flows": l7_flows(result.datapath)}
    mismatches = []
    if args.validate:
        probes, mismatches = _validate(out, policy, inventory, result, args.quiet)
        report["validation"] = {"probes": len(probes), "mismatches": [str(m) for m in mismatches]}
    if args.format in STRUCTURED:
        print(structured(report, args.format))
    else:
        lines = [f"compiled {len(policy.rules)} rules into {out}",
                 "features: " + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in report["features"].items())]
        lines += [f"  {m['name']:<13} {m['type']:<13} {m['entries']:>7} / {m['max_entries']} entries"
                  for m in report["maps"] if m["type"] != "ringbuf"]
        lines += [f"  L7 rules enforced as L4 only: {flow}" for flow in report["l7_flows"]]
        for warning in result.warnings:
            warn(args, warning)
        if args.validate:
            lines += [f"MISMATCH {m}" for m in mismatches]
            lines.append(f"validated {report['validation']['probes']} probes in the kernel: "
                         f"{len(mismatches)} mismatch(es)")
        say("\n".join(lines))
    return 1 if mismatches else 0
