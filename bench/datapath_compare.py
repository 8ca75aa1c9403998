"""ns/packet of two policyc trees' generated programs in one run: a baseline checkout against this one.

Each tree compiles the cluster of bench/clusters.py with its own policyc (a worker process per tree,
PYTHONPATH set to the tree) and times the same packets through its programs with BPF_PROG_TEST_RUN.
The workers take turns, trial by trial, so both see the same machine load; the figure is the median
over trials of each trial's value.  Paths (client -> server 80/TCP allowed, 81/TCP denied; world
203.0.113.7 allowed at the XDP hook, 198.51.100.5 denied):

* established: an answered TCP connection (SYN, SYN-ACK, ACK, ACK through the server's hooks), then
  REPEAT runs of its next packet averaged by the kernel (a conntrack hit);
* new, allowed: NEW distinct 5-tuples, one run each (each creates its conntrack entry), median;
* new, denied: REPEAT runs of a denied packet (never recorded, so every run decides afresh).

A third worker times the same paths through the empty programs of bench/empty.bpf.c (TC and XDP that
only pass, built by this tree's clang flags): the floor a test run costs whatever the program does.

Run as root, with a baseline checkout (e.g. `git worktree add /tmp/base main`); `--baseline` may be
given more than once (e.g. the tree before a change and main), every tree then runs in the same trials
and each is compared with the first baseline:

    PYTHONPATH=. python3 bench/datapath_compare.py --baseline /tmp/base [--baseline /tmp/main]
        [--sizes 1000,10000] [--trials 7] [--repeat 200000] [--new 2000] [--json docs/bench-datapath-compare.json]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CLIENT_SPORT = 33333
TCP_FLAGS_OFFSET = 14 + 20 + 13  # Ethernet, IPv4, then the TCP flags byte
SYN, ACK = 0x02, 0x10
# (label, program, source, destination, port, kind); sources and destinations as in bench/clusters.py
PATHS = (
    ("TC to_pod established", "to_pod", "client", "server", "ALLOWED", "established"),
    ("TC to_pod new, allowed", "to_pod", "client", "server", "ALLOWED", "new"),
    ("TC to_pod new, denied", "to_pod", "client", "server", "DENIED", "repeat"),
    ("TC from_pod established", "from_pod", "server", "client", "ALLOWED", "established"),
    ("TC from_pod new, allowed", "from_pod", "server", "client", "ALLOWED", "new"),
    ("TC from_pod new, denied", "from_pod", "server", "client", "DENIED", "repeat"),
    ("XDP established", "xdp_node", "WORLD_ALLOWED", "server", "ALLOWED", "established"),
    ("XDP new, allowed", "xdp_node", "WORLD_ALLOWED", "server", "ALLOWED", "repeat"),
    ("XDP new, denied", "xdp_node", "WORLD_DENIED", "server", "ALLOWED", "repeat"),
)


# ---- the worker: runs inside one tree ----

class Worker:
    """One tree's artifact for the cluster of size ``n``, loaded and ready to time."""

    def __init__(self, n: int, work: Path):
        sys.path.insert(0, str(BENCH))
        import clusters
        from policyc.bpf_runtime.artifact import open_artifact
        from policyc.compiler.artifact import compile_artifact
        from policyc.compiler.frontend import load_policies
        from policyc.compiler.inventory import load_inventory

        self.clusters, self.n = clusters, n
        inv, pol = clusters.write(work, n)
        policy, _ = load_policies([pol])
        size = lambda entries, floor: max(floor, 1 << (entries * 5 // 4).bit_length())  # noqa: E731
        compile_artifact(policy, load_inventory([inv]), work / "artifact", [str(pol)],
                         {"ipcache_hosts": size(n + 1, 16384), "endpoints": size(n + 1, 4096),
                          "policy": size(2 * n + 1, 65536)})
        self.obj = open_artifact(work / "artifact")
        self.features = json.loads((work / "artifact" / "manifest.json").read_text())["features"]
        self.bind = self._binder()
        self.sport = 1024

    def _binder(self):
        """A pod hook runs on lo in a test run: bind lo to the pod, where the tree has endpoint binding."""
        try:
            from policyc.bpf_runtime.bindings import bind, object_maps
        except ImportError:
            return lambda ip: None  # a tree before binding: the hooks find pods by address
        maps = object_maps(self.obj)
        return lambda ip: bind(maps, self.features, 1, [ip])

    def address(self, who: str) -> str:
        c = self.clusters
        return {"client": c.client_ip(self.n // 2), "server": c.SERVER_IP}.get(who) or getattr(c, who)

    def packet(self, src: str, dst: str, port: int, sport: int, flags: int = SYN) -> bytes:
        from policyc.bpf_runtime.testrun import frame
        from policyc.compiler.ir import Protocol
        data = bytearray(frame(ipaddress.ip_address(src), ipaddress.ip_address(dst), Protocol.TCP, sport, port))
        data[TCP_FLAGS_OFFSET] = flags
        return bytes(data)

    def handshake(self, src: str, dst: str, port: int) -> None:
        """One answered connection src -> dst:port through the server's hooks (the pod at one end)."""
        inbound = dst == self.address("server")
        there, back = ("to_pod", "from_pod") if inbound else ("from_pod", "to_pod")
        for prog, a, b, sport, dport, flags in ((there, src, dst, CLIENT_SPORT, port, SYN),
                                                (back, dst, src, port, CLIENT_SPORT, SYN | ACK),
                                                (there, src, dst, CLIENT_SPORT, port, ACK),
                                                (back, dst, src, port, CLIENT_SPORT, ACK)):
            self.run(prog, self.packet(a, b, dport, sport, flags), 1)

    def run(self, prog: str, data: bytes, repeat: int):
        ctx = None if prog == "xdp_node" else bytes(192)  # struct __sk_buff: runs on lo
        return self.obj.program(prog).test_run(data, ctx=ctx, repeat=repeat)

    def time(self, label: str, repeat: int, new: int) -> int:
        _, prog, src, dst, port_name, kind = next(p for p in PATHS if p[0] == label)
        src, dst = self.address(src), self.address(dst)
        port = getattr(self.clusters, f"{port_name}_PORT")
        pod = src if prog == "from_pod" else dst
        self.bind(pod)
        if kind == "new":
            times = []
            for _ in range(new):
                self.sport += 1
                times.append(self.run(prog, self.packet(src, dst, port, self.sport % 60000 + 1024), 1).duration_ns)
            return int(statistics.median(times))
        if kind == "established":
            self.handshake(src, dst, port)
            return self.run(prog, self.packet(src, dst, port, CLIENT_SPORT, ACK), repeat).duration_ns
        return self.run(prog, self.packet(src, dst, port, CLIENT_SPORT), repeat).duration_ns


class Floor(Worker):
    """The same packets through the empty programs: a run's cost when the program does nothing."""

    def __init__(self, n: int, work: Path):
        sys.path.insert(0, str(BENCH))
        import clusters
        from datapath_curve import build
        from policyc.bpf_runtime.libbpf import BPFObject

        self.clusters, self.n, self.sport = clusters, n, 1024
        self.obj = BPFObject.open(str(build(BENCH / "empty.bpf.c", work / "empty.bpf.o")))
        self.obj.load()
        self.bind = lambda ip: None

    def handshake(self, src: str, dst: str, port: int) -> None:
        pass  # nothing to establish

    def run(self, prog: str, data: bytes, repeat: int):
        empty = self.obj.program("empty_xdp" if prog == "xdp_node" else "empty_tc")
        return empty.test_run(data, ctx=None if prog == "xdp_node" else bytes(192), repeat=repeat)


def worker_main(n: int, floor: bool = False) -> None:
    """Line protocol on stdin/stdout: ``ready``, then one JSON trial per ``REPEAT NEW`` line."""
    with tempfile.TemporaryDirectory(prefix="pcb-cmp-") as tmp:
        w = (Floor if floor else Worker)(n, Path(tmp))
        print("ready", flush=True)
        for line in sys.stdin:
            repeat, new = map(int, line.split())
            print(json.dumps({label: w.time(label, repeat, new) for label, *_ in PATHS}), flush=True)


# ---- the driver ----

def spawn(tree: Path, n: int, floor: bool = False) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "--floor" if floor else "--worker", str(n)], cwd=tree, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={"PYTHONPATH": str(tree),
                                                                                  "PATH": "/usr/bin:/bin"})
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise SystemExit(f"worker in {tree} did not start: {line!r}")
    return proc


def measure(trees: dict[str, Path], n: int, trials: int, repeat: int, new: int) -> dict:
    workers = {name: spawn(tree, n) for name, tree in trees.items()}
    workers["empty"] = spawn(ROOT, n, floor=True)
    samples: dict[str, list[dict]] = {name: [] for name in workers}
    try:
        for _ in range(trials):
            for name, proc in workers.items():
                proc.stdin.write(f"{repeat} {new}\n")
                proc.stdin.flush()
                samples[name].append(json.loads(proc.stdout.readline()))
    finally:
        for proc in workers.values():
            proc.stdin.close()
            proc.wait()
    return {name: {label: int(statistics.median(s[label] for s in runs)) for label, *_ in PATHS}
            for name, runs in samples.items()}


def over_floor(ns: int, base: int, empty: int) -> str:
    """The change of a tree's cost above the empty program's, against the first baseline's."""
    return f"{(ns - empty) * 100 / max(base - empty, 1) - 100:+.0f}%"


def table(results: list[dict], names: list[str]) -> str:
    """One row per size and path: every tree's ns, then each later tree's change over the floor."""
    first, later = names[0], names[1:]
    out = ["| clients | path | empty ns | " + " | ".join(f"{n} ns" for n in names) + " | "
           + " | ".join(f"{n} over the floor vs {first}" for n in later) + " |",
           "|---:|---|" + "---:|" * (1 + len(names) + len(later))]
    for res in results:
        fig, empty = res["figures"], res["figures"]["empty"]
        for label, *_ in PATHS:
            cells = [str(fig[n][label]) for n in names]
            cells += [over_floor(fig[n][label], fig[first][label], empty[label]) for n in later]
            out.append(f"| {res['n']} | {label} | {empty[label]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def tree_name(tree: Path) -> str:
    """A tree by its commit (and whether its work tree differs from it)."""
    git = lambda *a: subprocess.run(["git", "-C", str(tree), *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    return (git("rev-parse", "--short", "HEAD") or tree.name) + ("+" if git("status", "--porcelain", "-uno") else "")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("--worker", "--floor"):
        worker_main(int(sys.argv[2]), floor=sys.argv[1] == "--floor")
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, action="append",
                    help="a checkout of a tree to compare against (repeatable; the first is the reference)")
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--trials", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=200_000)
    ap.add_argument("--new", type=int, default=2000, help="distinct new flows timed per trial")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    trees = {tree_name(t): t.resolve() for t in (*args.baseline, ROOT)}
    if len(trees) < len(args.baseline) + 1:
        raise SystemExit("datapath_compare: two of the trees are the same commit; compare different ones")
    results = []
    for n in map(int, args.sizes.split(",")):
        start = time.monotonic()
        results.append({"n": n, "figures": measure(trees, n, args.trials, args.repeat, args.new)})
        print(f"N={n}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(table(results, list(trees)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
