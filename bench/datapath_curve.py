"""ns/packet of the generated programs against the empty-program floor and a hand-written program.

For every size N (client pods = ipcache entries; policy entries = 2N+1) the
bench generates the cluster of bench/clusters.py, compiles it with policyc
(in-process, as `policyc compile` does), loads it, fills the hand-written
program's maps with the same number of entries, and times every path with
BPF_PROG_TEST_RUN (the kernel's own average over REPEAT runs; the median of
TRIALS such averages is reported).  Run as root:

    PYTHONPATH=. python3 bench/datapath_curve.py [--sizes 10,1000,10000,100000] [--repeat 1000000]
        [--json docs/bench-datapath.json] [--plot docs/bench-datapath.png]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import clusters  # noqa: E402

from policyc.bpf_runtime.artifact import open_artifact  # noqa: E402
from policyc.bpf_runtime.libbpf import BPFObject, Program  # noqa: E402
from policyc.bpf_runtime.bindings import bind, object_maps  # noqa: E402
from policyc.bpf_runtime.testrun import SKB_CTX_BYTES, frame  # noqa: E402
from policyc.compiler.artifact import compile_artifact  # noqa: E402
from policyc.compiler.codegen import clang, include_dirs  # noqa: E402
from policyc.compiler.frontend import load_policies  # noqa: E402
from policyc.compiler.inventory import load_inventory  # noqa: E402
from policyc.compiler.ir import Protocol  # noqa: E402

BENCH = Path(__file__).resolve().parent
TCP = int(Protocol.TCP)
# (path label, generated program, hand-written program, source, destination, port, what it exercises)
PATHS = (
    ("to_pod established", "to_pod", "hw_to_pod", "client", "server", clusters.ALLOWED_PORT),
    ("to_pod new, denied", "to_pod", "hw_to_pod", "client", "server", clusters.DENIED_PORT),
    ("from_pod established", "from_pod", "hw_from_pod", "server", "client", clusters.ALLOWED_PORT),
    ("from_pod new, denied", "from_pod", "hw_from_pod", "server", "client", clusters.DENIED_PORT),
    ("xdp_node new, allowed", "xdp_node", "hw_xdp", clusters.WORLD_ALLOWED, "server", clusters.ALLOWED_PORT),
    ("xdp_node new, denied", "xdp_node", "hw_xdp", clusters.WORLD_DENIED, "server", clusters.ALLOWED_PORT),
)


def build(source: Path, out: Path) -> Path:
    subprocess.run([clang(), "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", *include_dirs(),
                    "-c", str(source), "-o", str(out)], check=True)
    return out


def pow2(n: int, floor: int) -> int:
    size = floor
    while size < n * 5 // 4:
        size *= 2
    return size


def compile_cluster(n: int, work: Path) -> tuple[Path, float]:
    inv, pol = clusters.write(work, n)
    sizes = {"ipcache_hosts": pow2(n + 1, 16384), "endpoints": pow2(n + 1, 4096), "policy": pow2(2 * n + 1, 65536)}
    start = time.perf_counter()
    policy, _ = load_policies([pol])
    compile_artifact(policy, load_inventory([inv]), work / "artifact", [str(pol)], sizes)
    return work / "artifact", time.perf_counter() - start


def fill_handwritten(obj: BPFObject, n: int) -> None:
    """The same entries as the artifact: N clients + server + one CIDR in the ipcache, 2N+1 verdicts."""
    a = lambda ip: socket.inet_aton(ip)  # noqa: E731
    server_pid, cidr_id = 1, 1 << 24
    ipc, eps, pol = obj.map("hw_ipcache"), obj.map("hw_endpoints"), obj.map("hw_policy")
    eps.update(a(clusters.SERVER_IP), struct.pack("<II", server_pid, 256))
    ipc.update(struct.pack("<I", 32) + a(clusters.SERVER_IP), struct.pack("<I", 256))
    ipc.update(struct.pack("<I", 24) + a("203.0.113.0"), struct.pack("<I", cidr_id))
    port = struct.pack("!H", clusters.ALLOWED_PORT)
    pol.update(struct.pack("<IIBB", server_pid, cidr_id, 1, TCP) + port, struct.pack("<I", 1))
    for i in range(n):
        ip, ident = a(clusters.client_ip(i)), 257 + i
        ipc.update(struct.pack("<I", 32) + ip, struct.pack("<I", ident))
        eps.update(ip, struct.pack("<II", 2 + i, ident))
        for direction in (1, 2):
            pol.update(struct.pack("<IIBB", server_pid, ident, direction, TCP) + port, struct.pack("<I", 1))


def load_handwritten(n: int, obj_path: Path) -> BPFObject:
    obj = BPFObject.open(str(obj_path))
    for name, count in (("hw_ipcache", n + 2), ("hw_endpoints", n + 1), ("hw_policy", 2 * n + 1)):
        obj.set_max_entries(name, pow2(count, 1024))
    obj.load()
    fill_handwritten(obj, n)
    return obj


def time_ns(prog: Program, data: bytes, repeat: int, trials: int) -> int:
    ctx = None if prog.name.endswith("xdp") or prog.name == "xdp_node" else bytes(SKB_CTX_BYTES)
    prog.test_run(data, ctx=ctx)  # first packet: creates the conntrack entry of an allowed flow
    return int(statistics.median(prog.test_run(data, ctx=ctx, repeat=repeat).duration_ns for _ in range(trials)))


def address(who: str, n: int) -> str:
    return {"client": clusters.client_ip(n // 2), "server": clusters.SERVER_IP}.get(who, who)


def measure(n: int, empty: BPFObject, hw_path: Path, repeat: int, trials: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="pcb-curve-") as tmp:
        artifact, compile_s = compile_cluster(n, Path(tmp))
        manifest = json.loads((artifact / "manifest.json").read_text())
        entries = {m["name"]: m["entries"] for m in manifest["maps"]}
        gen, hw = open_artifact(artifact), load_handwritten(n, hw_path)
        try:
            # every generated TC path here runs on the server's veth: a test run's lo, bound to the server
            bind(object_maps(gen), manifest["features"], 1, [clusters.SERVER_IP])
            rows = []
            for label, gprog, hprog, src, dst, port in PATHS:
                data = frame(ipaddress.ip_address(address(src, n)), ipaddress.ip_address(address(dst, n)),
                             Protocol.TCP, 33333, port)
                floor = empty.program("empty_xdp" if gprog == "xdp_node" else "empty_tc")
                rows.append({"path": label, "generated": time_ns(gen.program(gprog), data, repeat, trials),
                             "handwritten": time_ns(hw.program(hprog), data, repeat, trials),
                             "empty": time_ns(floor, data, repeat, trials)})
        finally:
            gen.close()
            hw.close()
    ipcache = entries["ipcache"] + entries.get("ipcache_hosts", 0)  # addresses (hash) + CIDRs and world (trie)
    return {"n": n, "ipcache_entries": ipcache, "policy_entries": entries["policy"],
            "compile_s": round(compile_s, 2), "rows": rows}


def table(results: list[dict]) -> str:
    out = ["| entries (ipcache / policy) | path | generated ns | hand-written ns | empty ns | gen/hand | gen/empty |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for res in results:
        for r in res["rows"]:
            out.append(f"| {res['ipcache_entries']} / {res['policy_entries']} | {r['path']} | {r['generated']} | "
                       f"{r['handwritten']} | {r['empty']} | {r['generated'] / r['handwritten']:.2f} | "
                       f"{r['generated'] / max(r['empty'], 1):.1f} |")
    return "\n".join(out)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    xs = [r["ipcache_entries"] for r in results]
    for ax, prog in zip(axes, ("to_pod", "from_pod", "xdp_node")):
        for i, (label, *_rest) in enumerate(PATHS):
            if not label.startswith(prog):
                continue
            kind = label.split(" ", 1)[1]
            ys = [res["rows"][i] for res in results]
            ax.plot(xs, [y["generated"] for y in ys], "o-", label=f"generated: {kind}")
            ax.plot(xs, [y["handwritten"] for y in ys], "s--", label=f"hand-written: {kind}")
        ax.plot(xs, [res["rows"][[p[1] for p in PATHS].index(prog)]["empty"] for res in results], "k:",
                label="empty program")
        ax.axhline(40, color="red", lw=0.8, label="target 40 ns")
        ax.set_xscale("log")
        ax.set_title(prog)
        ax.set_xlabel("ipcache entries (policy entries = 2x)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("ns/packet (BPF_PROG_TEST_RUN)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,1000,10000,100000")
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pcb-objs-") as tmp:
        empty = BPFObject.open(str(build(BENCH / "empty.bpf.c", Path(tmp) / "empty.bpf.o")))
        empty.load()
        hw_path = build(BENCH / "handwritten.bpf.c", Path(tmp) / "handwritten.bpf.o")
        results = []
        try:
            for n in map(int, args.sizes.split(",")):
                results.append(measure(n, empty, hw_path, args.repeat, args.trials))
                print(f"N={n}: compiled in {results[-1]['compile_s']} s", file=sys.stderr)
        finally:
            empty.close()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
