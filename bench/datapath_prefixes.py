"""ns/packet of the generated programs against the number of CIDR prefixes a pod admits.

bench/gen_dims.py's ``cidr`` case (issue 15's shape: 100 fromCIDRSet entries per CNP on one pod, half
/24 and half /32, /32s nested in /24s, every tenth /24 with an except) is compiled with policyc for
every size N, loaded, and timed with BPF_PROG_TEST_RUN beside the empty program (the floor), as
bench/datapath_curve.py does for endpoints.  Sources come from inside one of the /24s (an LPM trie
hit), from a /32 (the host-route hash) and from outside every prefix (denied).  Run as root:

    PYTHONPATH=. python3 bench/datapath_prefixes.py [--sizes 10,1000,10000,100000] [--json FILE]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_dims  # noqa: E402
from datapath_curve import BENCH, build, time_ns  # noqa: E402

from policyc.bpf_runtime.artifact import open_artifact  # noqa: E402
from policyc.bpf_runtime.libbpf import BPFObject  # noqa: E402
from policyc.bpf_runtime.testrun import frame  # noqa: E402
from policyc.compiler.artifact import compile_artifact  # noqa: E402
from policyc.compiler.frontend import load_policies  # noqa: E402
from policyc.compiler.inventory import load_inventory  # noqa: E402
from policyc.compiler.ir import Protocol  # noqa: E402

POD = str(gen_dims.POD_NET[1])  # pod-0, the pod every prefix is admitted to
IN_24, IN_32, OUTSIDE = "20.0.0.5", "20.0.0.77", "198.51.100.5"  # /24 #0, the /32 nested in it, none
# (label, program, source, port): port 443 is admitted, 444 nowhere
PATHS = (("to_pod established, /24 source", "to_pod", IN_24, 443),
         ("to_pod new, denied port", "to_pod", IN_24, 444),
         ("xdp_node new, allowed /24", "xdp_node", IN_24, 443),
         ("xdp_node new, allowed /32", "xdp_node", IN_32, 443),
         ("xdp_node new, denied", "xdp_node", OUTSIDE, 443))


def measure(n: int, empty: BPFObject, repeat: int, trials: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="pcb-prefixes-") as tmp:
        d = gen_dims.write(gen_dims.case("cidr", n), Path(tmp))
        policy, _ = load_policies([d / "policies.yaml"])
        result = compile_artifact(policy, load_inventory([d / "inventory.yaml"]), d / "artifact",
                                  [str(d / "policies.yaml")])
        entries = {m.name: len(m.entries) for m in result.maps}
        gen = open_artifact(d / "artifact")
        try:
            rows = []
            for label, prog, src, port in PATHS:
                data = frame(ipaddress.ip_address(src), ipaddress.ip_address(POD), Protocol.TCP, 33333, port)
                floor = empty.program("empty_xdp" if prog == "xdp_node" else "empty_tc")
                rows.append({"path": label, "generated": time_ns(gen.program(prog), data, repeat, trials),
                             "empty": time_ns(floor, data, repeat, trials)})
        finally:
            gen.close()
    return {"prefixes": n, "ipcache": entries["ipcache"], "ipcache_hosts": entries["ipcache_hosts"],
            "policy": entries["policy"], "rows": rows}


def table(results: list[dict]) -> str:
    out = ["| prefixes | ipcache trie / hash / policy entries | path | generated ns | empty ns | gen/empty |",
           "|---:|---|---|---:|---:|---:|"]
    for res in results:
        for r in res["rows"]:
            out.append(f"| {res['prefixes']} | {res['ipcache']} / {res['ipcache_hosts']} / {res['policy']} | "
                       f"{r['path']} | {r['generated']} | {r['empty']} | {r['generated'] / max(r['empty'], 1):.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,1000,10000,100000")
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pcb-objs-") as tmp:
        empty = BPFObject.open(str(build(BENCH / "empty.bpf.c", Path(tmp) / "empty.bpf.o")))
        empty.load()
        try:
            results = [measure(n, empty, args.repeat, args.trials) for n in map(int, args.sizes.split(","))]
        finally:
            empty.close()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
