"""Attacks on the Services datapath (nf_node behind kube-proxy's real rules), and legitimate Service traffic
it must not break: a UDP Service (kube-dns's shape) and datagrams with forged sources sent through a
Service address. The cluster is tests/data/services/attacks.yaml: cluster.yaml plus Service x/dns
(ClusterIP 10.96.0.53, 53/UDP to x/c's 80, 5353/UDP to x/c's 9); x/c admits x/d (any port,
tests/data/services/policies) and x/f on 80/UDP and 9/UDP (attack-policies/dns.yaml), never the world;
x/f admits only x/d (attack-policies/prober.yaml).
"""
from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

from kernelreq import require_kernel
from kubeproxy import nat_rules
from netmodel import NetModel, in_netns, leftovers, run
from policyc.bpf_runtime import bpffs
from policyc.bpf_runtime.bindings import layouts_for
from policyc.bpf_runtime.libbpf import Map
from policyc.bpf_runtime.loaded import loaded_state, manifest_of, open_map
from policyc.compiler.mapdata import CT_MAPS
from policyc.compiler.inventory import load_inventory

pytestmark = pytest.mark.kernel

PREFIX = "pca"
DATA = Path(__file__).parent / "data" / "services"
CLUSTER = DATA / "attacks.yaml"
POLICIES = [DATA / "policies", DATA / "attack-policies"]
CLUSTER_CIDR = "10.244.0.0/16"
DNS_IP, DNS_PORT, NODE_IP = "10.96.0.53", 53, "192.168.10.11"
OUTSIDE = "203.0.113.9"


@pytest.fixture(scope="module")
def enforced(tmp_path_factory):
    """The model with kube-proxy's iptables rules for both Services, the policies loaded on every veth."""
    from test_e2e_netns import compile_case, loaded

    require_kernel()
    cluster = load_inventory([CLUSTER])
    work = tmp_path_factory.mktemp("svcattack")
    with NetModel(cluster, work, prefix=PREFIX) as m:
        m.outside = m.add_outside(OUTSIDE, NODE_IP)
        run(in_netns(m.node, ["iptables-restore", "--noflush"]), input=nat_rules(cluster.services, CLUSTER_CIDR))
        artifact = compile_case([str(p) for p in POLICIES], CLUSTER, work / "art")
        with loaded(m, artifact, f"{PREFIX}svc"):
            yield m
    assert leftovers(PREFIX) == ([], []), "namespaces or pins left after teardown"


def test_a_udp_service_answers_every_datagram_of_an_allowed_client(enforced):
    """kube-dns's shape: each datagram to the ClusterIP is DNATed to x/c, decided by nf_node against x/c, and
    its answer comes back from the ClusterIP. x/f is admitted; x/e (world egress) and x/d (egressDeny
    tier=c) are not."""
    assert enforced.connect(enforced.by_name["x/f"].netns, DNS_IP, DNS_PORT, "UDP", 5) == ["x/c"] * 5
    assert enforced.connect(enforced.by_name["x/e"].netns, DNS_IP, DNS_PORT, "UDP", 2) == [""] * 2
    assert enforced.connect(enforced.by_name["x/d"].netns, DNS_IP, DNS_PORT, "UDP", 2) == [""] * 2


def spoof(model: NetModel, netns: str, src: str, dst: str, port: int, stream: str) -> None:
    sender = model.spawn(netns, ["spoof", src, dst, str(port), stream])
    assert sender.stdout.readline().strip() == "sent", sender.stderr.read()
    sender.wait()
    model.procs.remove(sender)


def test_a_datagram_from_outside_claiming_the_backends_address_is_no_hairpin(enforced):
    """From outside, a datagram to the ClusterIP whose source claims to be x/c, the Service's only backend:
    after the DNAT its source equals its destination, the shape of a hairpin (R11.6), which only a pod
    reaching itself through its own Service can produce. x/c admits nothing from outside: the same datagram
    sent from the outside client's own address, through the Service or to x/c directly, is dropped, and so
    must be the forged one (kube-proxy masquerades the 'hairpin', so x/c's own hook would see the node)."""
    xc = enforced.by_name["x/c"]
    spoof(enforced, enforced.outside, OUTSIDE, DNS_IP, DNS_PORT, "own-via-service")
    spoof(enforced, enforced.outside, OUTSIDE, str(xc.ips[0]), 80, "own-direct")
    spoof(enforced, enforced.outside, str(xc.ips[0]), DNS_IP, DNS_PORT, "forged-hairpin")
    time.sleep(0.3)
    got = {stream for _, stream, _ in enforced.received(xc)}
    assert got == set(), got


def held_connection(model: NetModel, client: str, addr: str, port: int):
    """A TCP connection from ``client`` through ``addr``:``port`` that its backend answered (kube-proxy may pick
    a backend that denies it: then try again)."""
    for _ in range(5):
        held = model.spawn(model.by_name[client].netns, ["hold", addr, str(port)])
        if held.stdout.readline().strip() == "connected":
            return held
        held.wait()
        model.procs.remove(held)
    pytest.fail(f"no connection from {client} through {addr}:{port} in 5 tries")


def say(held, line: str) -> str:
    held.stdin.write(line + "\n")
    held.stdin.flush()
    return held.stdout.readline().strip()


def test_a_policy_change_cuts_an_open_connection_through_the_cluster_ip(enforced, tmp_path):
    """x/d holds a connection through x/web's ClusterIP; a new policy denies x/d every backend of x/web. The
    connection was opened under the old revision: its next segment is decided again (from_pod defers it, as
    its entry names the Service address; nf_node decides it against the backend) and goes nowhere."""
    from test_e2e_netns import compile_case

    held = held_connection(enforced, "x/d", "10.96.0.10", 8080)
    assert say(held, "before") in {"x/a", "x/b"}
    revoked = compile_case([str(p) for p in POLICIES] + [str(DATA / "revoke")], CLUSTER, tmp_path / "revoked")
    try:
        assert enforced.policyc("load", str(revoked), "--name", f"{PREFIX}svc").returncode == 0
        assert say(held, "after") == "timeout"
    finally:
        original = compile_case([str(p) for p in POLICIES], CLUSTER, tmp_path / "original")
        assert enforced.policyc("load", str(original), "--name", f"{PREFIX}svc").returncode == 0
        held.stdin.close()
        held.wait()
        enforced.procs.remove(held)


REFUSED = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.5)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"probe")
try:
    s.recv(256)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"""


def refused(model: NetModel, client: str, addr: str, port: int) -> str:
    """A connected UDP socket's fate: the ICMP port unreachable its datagram earns surfaces as ECONNREFUSED."""
    import sys

    return run(in_netns(model.by_name[client].netns, [sys.executable, "-c", REFUSED, addr, str(port)])).stdout.strip()


def test_an_icmp_error_from_a_backend_reaches_the_client_through_the_service(enforced):
    """x/f may send to x/c on 9/UDP, where nothing listens: x/c's port unreachable reaches x/f directly, and
    through the Service (port 5353 to x/c's 9) conntrack turns it into one from the ClusterIP about the
    ClusterIP, which x/f's hook must relate to the connection nf_node let through."""
    xc = str(enforced.by_name["x/c"].ips[0])
    assert refused(enforced, "x/f", xc, 9) == "refused"
    assert refused(enforced, "x/f", DNS_IP, 5353) == "refused"


def expire(name: str, addr, port: int) -> int:
    """Delete every policyc conntrack entry of the flows from ``addr``:``port`` (both ends' entries), as if
    they had expired: netfilter keeps its own connection (UDP 120 s and more, TCP five days), policyc's
    live 60 s (UDP) or 6 h (TCP). Returns how many were deleted."""
    lay = layouts_for(manifest_of(loaded_state(name))["features"])[0]["ct_key"]
    gone = 0
    for table in CT_MAPS:
        ct: Map = open_map(bpffs.pin_dir(name), table)
        try:
            for raw in ct.keys():
                key = lay.unpack(raw)
                ends = {(ipaddress.ip_address(key["saddr"]), key["sport"]),
                        (ipaddress.ip_address(key["daddr"]), key["dport"])}
                if (addr, port) in ends:
                    gone += ct.delete(raw)
        finally:
            ct.close()
    return gone


def line(proc, text: str = "") -> str:
    proc.stdin.write(text + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_a_backend_speaks_first_after_policycs_entries_expired(enforced, tmp_path):
    """x/f's datagram through x/dns:5353 reaches x/c's port 9 and is answered; then the flow idles until
    policyc's entries expire while netfilter keeps the connection. x/c speaks first: the reverse NAT makes
    its datagram one from the ClusterIP, which x/f admits only as a reply of a tracked flow (it admits no
    one but x/d), so it used to be dropped until x/f sent again. nf_node sees a reply of a translated
    connection with no entry for the client, decides x/f's egress to x/c:9 again and makes the entry
    again: the datagram arrives. Once x/f may no longer reach x/c, the same push goes nowhere."""
    from test_e2e_netns import compile_case

    xf = enforced.by_name["x/f"]
    server = enforced.spawn(enforced.by_name["x/c"].netns, ["udppush", "9"])
    assert server.stdout.readline().strip() == "ready"
    client = enforced.spawn(xf.netns, ["udpwait", DNS_IP, "5353", "1.5"])
    try:
        port, answer = client.stdout.readline().split()
        assert answer == "first"
        assert expire(f"{PREFIX}svc", xf.ips[0], int(port)) == 2      # x/f's egress entry, x/c's ingress entry
        assert line(server, "after-expiry") == "sent" and line(client) == "after-expiry"
        revoked = compile_case([str(p) for p in POLICIES] + [str(DATA / "revoke-prober")], CLUSTER,
                               tmp_path / "revoked")
        assert enforced.policyc("load", str(revoked), "--name", f"{PREFIX}svc").returncode == 0
        expire(f"{PREFIX}svc", xf.ips[0], int(port))
        assert line(server, "revoked") == "sent" and line(client) == "timeout"
    finally:
        original = compile_case([str(p) for p in POLICIES], CLUSTER, tmp_path / "original")
        assert enforced.policyc("load", str(original), "--name", f"{PREFIX}svc").returncode == 0
        for proc in (client, server):
            proc.kill()
            proc.wait()
            enforced.procs.remove(proc)


def test_a_pod_slips_no_icmp_error_into_anothers_service_connection(enforced):
    """x/f talks to x/dns (53/UDP, x/c's 80) from a connected socket. x/a, whose own egress is open but whom
    x/f does not admit, guesses x/f's port and sends x/f a port unreachable quoting x/f -> x/c:80:
    conntrack relates it to the connection by the quoted header alone, nf_node let it through, and the
    reverse NAT then gave it the ClusterIP as its source, which x/f's hook relates. Quoting x/f -> the
    ClusterIP itself, nothing relates it in netfilter, and x/f's hook took any source for a router. Both
    reached the socket (ECONNREFUSED); neither does now. The backend's own error still does."""
    xa, xc, xf = (enforced.by_name[n] for n in ("x/a", "x/c", "x/f"))
    client = enforced.spawn(xf.netns, ["udpwait", DNS_IP, str(DNS_PORT), "1.5"])
    try:
        port, answer = client.stdout.readline().split()
        assert answer == "x/c"

        def error_from(sender, about: str, about_port: int) -> str:
            sent = enforced.spawn(sender.netns, ["unreach", str(sender.ips[0]), str(xf.ips[0]), str(xf.ips[0]), port,
                                                 about, str(about_port)])
            assert sent.stdout.readline().strip() == "sent", sent.stderr.read()
            sent.wait()
            enforced.procs.remove(sent)
            return line(client)

        assert error_from(xa, str(xc.ips[0]), 80) == "timeout"
        assert error_from(xa, DNS_IP, DNS_PORT) == "timeout"
        assert error_from(xc, str(xc.ips[0]), 80) == "refused"
    finally:
        client.kill()
        client.wait()
        enforced.procs.remove(client)
