"""Real connections through loaded programs: three pods in their own network namespaces behind a node namespace.

The node namespace routes between the pods (host routes + proxy ARP on the host side of each veth);
policyc runs inside it through nsenter, as a node agent would.  Every namespace goes away at the end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kernelreq import require_kernel
from runtimekit import CASE3, XA, XB, XC, compile_to

pytestmark = pytest.mark.kernel

NODE = "pcr-n"
PODS = {"x/a": ("pcr-xa", XA, "pcrxa"), "x/b": ("pcr-xb", XB, "pcrxb"), "x/c": ("pcr-xc", XC, "pcrxc")}

SERVER = """
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 80)); s.listen(64)
def echo(c):
    while True:
        data = c.recv(100)
        if not data:
            break
        c.sendall(data)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"""

# connects, then echoes one line per stdin line: prints ok / fail, so one connection spans a relabel
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 80), timeout=1.0)
    print("connected", flush=True)
except ConnectionRefusedError:
    print("refused", flush=True); sys.exit(1)  # the SYN got there and the RST came back: no server
except OSError:
    print("fail", flush=True); sys.exit(1)
for line in sys.stdin:
    try:
        c.sendall(b"ping"); print("ok" if c.recv(10) == b"ping" else "fail", flush=True)
    except OSError:
        print("fail", flush=True)
"""


def _ns(ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net=/var/run/netns/{ns}", *cmd], capture_output=True, text=True, **kw)


def policyc(*args: str) -> subprocess.CompletedProcess:
    """The CLI inside the node namespace (interface names resolve there)."""
    return _ns(NODE, sys.executable, "-m", "policyc.cli", *args,
               env={**os.environ, "PYTHONPATH": os.getcwd()})


def attempt(pod: str, dst: str) -> str:
    """connected | refused (reached, nothing listens) | fail (dropped: timed out)."""
    return _ns(PODS[pod][0], sys.executable, "-c", CLIENT, dst, input="").stdout.strip()


def connects(pod: str, dst: str) -> bool:
    return attempt(pod, dst).startswith("connected")


@pytest.fixture
def cluster():
    require_kernel()
    created, server = [], None
    try:
        for ns in [NODE] + [p[0] for p in PODS.values()]:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            created.append(ns)
        _ns(NODE, "ip", "link", "set", "lo", "up", check=True)  # creates the local table: ARP works
        _ns(NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        _ns(NODE, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", check=True)
        for ns, ip, host in PODS.values():
            subprocess.run(["ip", "link", "add", host, "netns", NODE, "type", "veth", "peer", "name", "eth0",
                            "netns", ns], check=True)
            for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "eth0", "up"],
                        ["ip", "addr", "add", f"{ip}/32", "dev", "eth0"],
                        ["ip", "route", "add", "10.244.0.0/16", "dev", "eth0"]):
                _ns(ns, *cmd, check=True)
            for cmd in (["ip", "link", "set", host, "up"], ["ip", "route", "add", f"{ip}/32", "dev", host],
                        ["sysctl", "-qw", f"net.ipv4.conf.{host}.proxy_arp=1"]):
                _ns(NODE, *cmd, check=True)
        server = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{PODS['x/a'][0]}", sys.executable, "-c",
                                   SERVER])
        deadline = time.monotonic() + 5
        while not connects("x/b", XA):  # no policy yet: wait for the server and the routes
            assert time.monotonic() < deadline, "pods cannot reach each other without policy"
            time.sleep(0.1)
        yield
    finally:
        if server is not None:
            server.kill()
            server.wait()
        policyc("unload", "pcrtest-traffic")
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    require_kernel()
    return compile_to(tmp_path_factory.mktemp("pcr") / "traffic", CASE3 / "policies")


def _attach() -> list[str]:
    return [a for pod, (_, _, host) in PODS.items() for a in ("--attach", f"{pod}={host}")]


@pytest.mark.parametrize("mode", ["tcx", "clsact"])
def test_policy_enforced_on_real_connections_and_observed(cluster, art, mode):
    done = policyc("load", str(art), "--name", "pcrtest-traffic", "--tc-mode", mode, *_attach())
    assert done.returncode == 0, done.stderr
    assert connects("x/b", XA) and not connects("x/c", XA)
    assert attempt("x/a", XB) == "refused"  # x/b has no policy: reached (no server there)
    flows = [json.loads(x) for x in policyc("observe", "pcrtest-traffic", "--format", "json").stdout.splitlines()]
    seen = {(f["source"], f["destination"], f["dport"], f["verdict"], f["policy"]) for f in flows}
    assert ("x/c", "x/a", 80, "deny", "") in seen and ("x/b", "x/a", 80, "allow", "x/a-from-b") in seen
    denied = policyc("observe", "pcrtest-traffic", "--verdict", "deny")
    assert denied.returncode == 0
    status = json.loads(policyc("status", "pcrtest-traffic", "--format", "json").stdout)
    assert next(r for r in status["rules"] if r["id"] == 1)["packets"] >= 1
    assert policyc("unload", "pcrtest-traffic").returncode == 0
    assert connects("x/c", XA)  # nothing filters any more


def test_relabel_under_traffic_decides_the_open_connection_again(cluster, art):
    """An open connection meets every relabel of its client: one the policy still allows (an extra label)
    leaves it flowing, one into a label set nothing allows cuts it, in the direction that opened it."""
    assert policyc("load", str(art), "--name", "pcrtest-traffic", *_attach()).returncode == 0
    client = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{PODS['x/b'][0]}", sys.executable, "-c", CLIENT,
                               XA], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def exchange() -> str:
        client.stdin.write("\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    try:
        assert client.stdout.readline().strip() == "connected"
        assert exchange() == "ok"
        done = policyc("endpoint", "relabel", "pcrtest-traffic", "x/b", "--label", "pod=b", "--label", "tier=x",
                       "--format", "json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["new_identity"]
        assert [exchange() for _ in range(3)] == ["ok"] * 3  # still allowed: decided again, kept
        done = policyc("endpoint", "relabel", "pcrtest-traffic", "x/b", "--label", "pod=zzz", "--format", "json")
        assert done.returncode == 0, done.stderr
        assert exchange() == "fail"  # quarantined: the established connection's packets are dropped
        assert not connects("x/b", XA)  # a new one meets the new identity's policy at once
    finally:
        client.kill()
        client.wait()
