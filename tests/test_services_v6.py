"""IPv6 Services behind kube-proxy's real ip6tables rules: tests/data/services/dualstack.yaml (cluster.yaml
made dual-stack, x/web also on ClusterIP fd00:96::10) with tests/data/services/policies. x/f has no egress
policy; x/a and x/b admit it on 80/TCP, x/c does not.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kernelreq import require_kernel
from kubeproxy import nat_rules
from netmodel import NetModel, in_netns, leftovers, run
from policyc.compiler.inventory import load_inventory

pytestmark = pytest.mark.kernel

PREFIX = "pc6"
DATA = Path(__file__).parent / "data" / "services"
CLUSTER = DATA / "dualstack.yaml"
CLUSTER_IP6, SERVICE_PORT = "fd00:96::10", 8080


@pytest.fixture(scope="module")
def enforced(tmp_path_factory):
    from test_e2e_netns import compile_case, loaded

    require_kernel()
    cluster = load_inventory([CLUSTER])
    work = tmp_path_factory.mktemp("svc6")
    with NetModel(cluster, work, prefix=PREFIX) as m:
        run(in_netns(m.node, ["iptables-restore", "--noflush"]), input=nat_rules(cluster.services, "10.244.0.0/16"))
        run(in_netns(m.node, ["ip6tables-restore", "--noflush"]), input=nat_rules(cluster.services, "fd00::/64", 6))
        artifact = compile_case([str(DATA / "policies")], CLUSTER, work / "art")
        with loaded(m, artifact, f"{PREFIX}svc"):
            yield m
    assert leftovers(PREFIX) == ([], []), "namespaces or pins left after teardown"


CONNECT = """
import socket, sys
answers = []
for _ in range(int(sys.argv[3])):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    if sys.argv[4] == "dstopts":  # a Destination Options header (one PadN option) on every segment
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
    s.settimeout(1.0)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        answers.append(s.recv(256).decode().strip())
    except OSError:
        answers.append("")
    s.close()
print(" ".join(a or "-" for a in answers))
"""


def connect6(model: NetModel, client: str, addr: str, port: int, count: int, options: str = "") -> list[str]:
    out = run(in_netns(model.by_name[client].netns,
                       [sys.executable, "-c", CONNECT, addr, str(port), str(count), options or "none"])).stdout
    return ["" if a == "-" else a for a in out.split()]


def test_an_ipv6_cluster_ip_is_decided_against_the_backend_it_reached(enforced):
    answers = connect6(enforced, "x/f", CLUSTER_IP6, SERVICE_PORT, 20)
    assert set(answers) - {""} == {"x/a", "x/b"}, answers
    assert "" in answers, answers  # x/c is picked with probability 1 - (2/3)**20


def test_an_extension_header_changes_no_verdict_through_an_ipv6_service(enforced):
    """A Destination Options header before TCP: from_pod and to_pod walk extension headers to the ports,
    so x/f reaches x/a directly with one; through the ClusterIP nf_node must decide the same TCP/80."""
    xa = str(next(ip for ip in enforced.by_name["x/a"].ips if ip.version == 6))
    assert connect6(enforced, "x/f", xa, 80, 1, "dstopts") == ["x/a"]
    answers = connect6(enforced, "x/f", CLUSTER_IP6, SERVICE_PORT, 20, "dstopts")
    assert set(answers) - {""} == {"x/a", "x/b"}, answers
