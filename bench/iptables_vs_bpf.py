"""The same policy as an iptables ruleset, as the policyc artifact, and unfiltered, over veth between namespaces.

Topology (names prefixed ``pcb``): client pod netns ``pcb-cli`` — node netns
``pcb-node`` (routes, the filter) — server pod netns ``pcb-srv``,
joined by two veth pairs, as a CNI plugin wires pods to the host.  The policy
is bench/clusters.py with N clients (the client netns holds client N/2's
address, so iptables walks half of a per-peer chain):

* ``none``: no filter (the floor);
* ``iptables``: what iptables NetworkPolicy implementations (kube-router,
  Calico in iptables mode) install in the node's FORWARD chain: conntrack
  ESTABLISHED,RELATED accept first, a jump per pod address to that pod's
  chain, one rule per allowed peer and port, then DROP;
* ``bpf``: the policyc artifact compiled from the same policy, loaded with
  ``policyc load`` on the host sides of both pod veths (tcx).

Per mode and size: TCP request/response latency (sockperf ping-pong, one
connection: after the handshake every packet is an established one), new
connections per second (a connect/request/response/close loop, each SYN
meets the rules) and TCP throughput (iperf3).  Run as root:

    PYTHONPATH=. python3 bench/iptables_vs_bpf.py [--clients 5,50,500,5000] [--seconds 3] [--rounds 3] [--json FILE]

The three modes take turns on one topology, round by round, and the medians
are reported: the machine is shared, so load drifts between minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import clusters  # noqa: E402

NS = {"cli": "pcb-cli", "node": "pcb-node", "srv": "pcb-srv"}
GATEWAY = "169.254.1.1"  # link-local next hop (as Calico does), a static neighbour: the node's veth
PORT = clusters.ALLOWED_PORT
LOAD_NAME = "pcb-bench"
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MODES = ("none", "iptables", "bpf")


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def in_ns(ns: str, cmd: str) -> str:
    """nsenter keeps /sys and bpffs as they are (ip netns exec remounts /sys, hiding pins)."""
    return f"nsenter --net=/var/run/netns/{NS[ns]} {cmd}"


def mac(ns: str, dev: str) -> str:
    return json.loads(sh(f"ip -n {ns} -j link show {dev}").stdout)[0]["address"]


def setup(client_ip: str) -> None:
    for ns in NS.values():
        sh(f"ip netns add {ns}")
        sh(f"ip -n {ns} link set lo up")
        sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
    for pod, ip in (("c", client_ip), ("s", clusters.SERVER_IP)):
        pod_ns = NS["cli" if pod == "c" else "srv"]
        sh(f"ip link add pcb{pod}1 netns {NS['node']} type veth peer name pcb{pod}0 netns {pod_ns}")
        sh(f"ip -n {pod_ns} addr add {ip}/32 dev pcb{pod}0")
        sh(f"ip -n {pod_ns} link set pcb{pod}0 up")
        sh(f"ip -n {pod_ns} route add {GATEWAY} dev pcb{pod}0 scope link")
        sh(f"ip -n {pod_ns} route add default via {GATEWAY} dev pcb{pod}0")
        sh(f"ip -n {NS['node']} link set pcb{pod}1 up")
        sh(f"ip -n {NS['node']} route add {ip}/32 dev pcb{pod}1")
        # static neighbours both ways: no ARP, and no node address needed to ask
        sh(f"ip -n {pod_ns} neigh replace {GATEWAY} lladdr {mac(NS['node'], f'pcb{pod}1')} dev pcb{pod}0 nud permanent")
        sh(f"ip -n {NS['node']} neigh replace {ip} lladdr {mac(pod_ns, f'pcb{pod}0')} dev pcb{pod}1 nud permanent")
    sh(f"ip netns exec {NS['node']} sysctl -qw net.ipv4.ip_forward=1")


def teardown() -> None:
    for ns in NS.values():
        pids = sh(f"ip netns pids {ns}", check=False).stdout.split()
        for pid in pids:  # only our own servers run in these namespaces
            sh(f"kill {pid}", check=False)
        sh(f"ip netns del {ns}", check=False)


def iptables_rules(n: int) -> str:
    """kube-router/Calico-iptables style: ESTABLISHED first, jump per pod address, a chain per pod."""
    srv = clusters.SERVER_IP
    lines = ["*filter", ":FORWARD ACCEPT [0:0]", ":PCB-FWD - [0:0]", ":PCB-POD-SERVER-IN - [0:0]",
             ":PCB-POD-SERVER-OUT - [0:0]", "-A FORWARD -j PCB-FWD",
             "-A PCB-FWD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
             f"-A PCB-FWD -d {srv}/32 -j PCB-POD-SERVER-IN", f"-A PCB-FWD -s {srv}/32 -j PCB-POD-SERVER-OUT"]
    lines += [f"-A PCB-POD-SERVER-IN -s {clusters.client_ip(i)}/32 -p tcp -m tcp --dport {PORT} -j ACCEPT"
              for i in range(n)]
    lines += [f"-A PCB-POD-SERVER-IN -s 203.0.113.0/24 -p tcp -m tcp --dport {PORT} -j ACCEPT",
              "-A PCB-POD-SERVER-IN -j DROP"]
    lines += [f"-A PCB-POD-SERVER-OUT -d {clusters.client_ip(i)}/32 -p tcp -m tcp --dport {PORT} -j ACCEPT"
              for i in range(n)]
    lines += ["-A PCB-POD-SERVER-OUT -j DROP", "COMMIT", ""]
    return "\n".join(lines)


def install_iptables(n: int) -> int:
    rules = iptables_rules(n)
    subprocess.run(in_ns("node", "iptables-restore -w"), shell=True, input=rules, text=True, check=True)
    return sum(line.startswith("-A ") for line in rules.splitlines())


def remove_iptables() -> None:
    empty = "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"
    subprocess.run(in_ns("node", "iptables-restore -w"), shell=True, input=empty, text=True, check=True)


def compile_bpf(n: int, work: Path) -> tuple[Path, int]:
    inv, pol = clusters.write(work, n)
    out = work / "artifact"
    sizes = [f"--map-size=endpoints={max(4096, 2 * n)}", f"--map-size=ipcache_hosts={max(16384, 2 * n)}"]
    subprocess.run([sys.executable, "-m", "policyc.cli", "compile", str(pol), "--inventory", str(inv), "--output-dir", str(out),
                    *sizes], check=True, capture_output=True, env=ENV)
    entries = json.loads((out / "manifest.json").read_text())["maps"]
    return out, sum(m["entries"] for m in entries if m["name"] == "policy")


def load_bpf(artifact: Path, n: int) -> float:
    """`policyc load` in the node netns, the client's and the server's host-side veths; seconds taken."""
    client = f"c{(n // 2) // 1000}/client-{n // 2}"
    start = time.perf_counter()
    res = subprocess.run(shlex.split(in_ns("node", f"{sys.executable} -m policyc.cli load {artifact} "
                                           f"--name {LOAD_NAME} --attach {client}=pcbc1 --attach srv/server=pcbs1")),
                         capture_output=True, text=True, env=ENV)
    if res.returncode:
        raise SystemExit(f"policyc load: {res.stderr.strip()}")
    return time.perf_counter() - start


def unload_bpf() -> None:
    subprocess.run([sys.executable, "-m", "policyc.cli", "unload", LOAD_NAME], capture_output=True, env=ENV)


@contextmanager
def server(cmd: str):
    proc = subprocess.Popen(shlex.split(in_ns("srv", cmd)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until it listens: the machine is shared, start-up time varies
            if f":{PORT} " in sh(in_ns("srv", f"ss -Htln sport = :{PORT}"), check=False).stdout:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"{cmd}: not listening on port {PORT}")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def latency(seconds: int) -> dict:
    with server(f"sockperf server --tcp --uc-reuseaddr -i {clusters.SERVER_IP} -p {PORT}"):
        res = sh(in_ns("cli", f"sockperf ping-pong --tcp -i {clusters.SERVER_IP} -p {PORT} -t {seconds}"))
    out = res.stdout + res.stderr
    if "percentile 50.000" not in out:
        raise SystemExit(f"sockperf failed:\n{out[-600:]}")
    pct = lambda p: float(re.search(rf"percentile {p} =\s*([\d.]+)", out).group(1))  # noqa: E731
    return {"p50_us": pct("50.000"), "p99_us": pct("99.000")}


CRR_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(({ip!r}, {port})); s.listen(512)
while True:
    c, _ = s.accept(); c.recv(16); c.sendall(b"y"); c.close()
"""
CRR_CLIENT = """
import socket, struct, time
end, n = time.perf_counter() + {seconds}, 0
start = time.perf_counter()
while time.perf_counter() < end:
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.connect(({ip!r}, {port})); c.sendall(b"x"); c.recv(16); c.close(); n += 1
print(n / (time.perf_counter() - start))
"""


def connection_rate(seconds: int) -> float:
    code = CRR_SERVER.format(ip=clusters.SERVER_IP, port=PORT)
    with server(f"{sys.executable} -c {shlex.quote(code)}"):
        code = CRR_CLIENT.format(ip=clusters.SERVER_IP, port=PORT, seconds=seconds)
        return float(sh(in_ns("cli", f"{sys.executable} -c {shlex.quote(code)}")).stdout)


def throughput(seconds: int) -> float:
    with server(f"iperf3 -s -B {clusters.SERVER_IP} -p {PORT}"):
        out = sh(in_ns("cli", f"iperf3 -c {clusters.SERVER_IP} -p {PORT} -t {seconds} -J")).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


PROBE = """
import socket
try:
    socket.create_connection(({ip!r}, {port}), timeout=0.5)
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("dropped")
"""


def probe_denied_port() -> str:
    """A closed port the policy does not allow: refused unfiltered, dropped when the filter is in force."""
    code = PROBE.format(ip=clusters.SERVER_IP, port=clusters.DENIED_PORT)
    return sh(in_ns("cli", f"{sys.executable} -c {shlex.quote(code)}")).stdout.strip()


def measure(seconds: int) -> dict:
    return {**latency(seconds), "conn_per_s": round(connection_rate(seconds)), "gbit_s": round(throughput(seconds), 2)}


def run(n: int, seconds: int, rounds: int) -> list[dict]:
    """Modes interleaved round by round on one topology (the machine is shared: load drifts); medians."""
    samples: dict[str, list[dict]] = {m: [] for m in MODES}
    extra: dict[str, dict] = {m: {} for m in MODES}
    teardown()
    setup(clusters.client_ip(n // 2))
    try:
        with tempfile.TemporaryDirectory(prefix="pcb-ipt-") as tmp:
            artifact, extra["bpf"]["policy_entries"] = compile_bpf(n, Path(tmp))
            for _ in range(rounds):
                for mode in MODES:
                    if mode == "iptables":
                        extra[mode]["rules"] = install_iptables(n)
                    elif mode == "bpf":
                        extra[mode].setdefault("load_s", []).append(load_bpf(artifact, n))
                    try:
                        seen, expected = probe_denied_port(), "refused" if mode == "none" else "dropped"
                        if seen != expected:
                            raise SystemExit(f"{mode}: port {clusters.DENIED_PORT} {seen}, expected {expected}")
                        samples[mode].append(measure(seconds))
                    finally:
                        if mode == "iptables":
                            remove_iptables()
                        elif mode == "bpf":
                            unload_bpf()
    finally:
        teardown()
    rows = []
    for mode in MODES:
        med = {k: statistics.median(x[k] for x in samples[mode]) for k in samples[mode][0]}
        if "load_s" in extra[mode]:
            extra[mode]["load_s"] = round(statistics.median(extra[mode]["load_s"]), 3)
        rows.append({"clients": n, "mode": mode, **extra[mode], **med})
        print(rows[-1], file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| clients | mode | rules / entries | latency p50 µs | p99 µs | new conn/s | Gbit/s | "
           "p50 vs none | conn/s vs none | Gbit/s vs none |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    floor = {r["clients"]: r for r in rows if r["mode"] == "none"}
    for r in rows:
        f = floor[r["clients"]]
        size = r.get("rules", r.get("policy_entries", "-"))
        out.append(f"| {r['clients']} | {r['mode']} | {size} | {r['p50_us']:.2f} | {r['p99_us']:.2f} | "
                   f"{r['conn_per_s']} | {r['gbit_s']} | {r['p50_us'] / f['p50_us']:.2f} | "
                   f"{r['conn_per_s'] / f['conn_per_s']:.2f} | {r['gbit_s'] / f['gbit_s']:.2f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="5,50,500,5000")
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    try:
        for n in map(int, args.clients.split(",")):
            rows += run(n, args.seconds, args.rounds)
    finally:
        teardown()
        unload_bpf()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
