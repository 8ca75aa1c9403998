"""Services behind kube-proxy's real NAT rules in the netns model: real connections through a ClusterIP
and a NodePort, each one checked against the backend kube-proxy really chose.

kube-proxy's rules (tests/kubeproxy.py, iptables mode and nftables mode) are installed in the node
namespace; every connection is a new one, so kube-proxy picks a backend at random each time; its
per-endpoint rule counters (a nat rule sees only a connection's first packet) say how many
connections went to each backend.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from kernelreq import require_kernel
from kubeproxy import nat_rules, nft_rules, sep_chains
from netmodel import NetModel, in_netns, leftovers, run
from policyc.compiler.inventory import load_inventory

pytestmark = pytest.mark.kernel

PREFIX = "pcv"
CLUSTER = Path(__file__).parent / "data" / "services" / "cluster.yaml"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_IP, SERVICE_PORT, NODE_IP, NODE_PORT = "10.96.0.10", 8080, "192.168.10.11", 30080
OUTSIDE = "203.0.113.9"
BACKENDS = {"x/a", "x/b", "x/c"}
CONNECTIONS = 30  # per probe: every backend is picked with probability 1 - (2/3)**30 > 0.99999


@pytest.fixture(scope="module")
def cluster():
    return load_inventory([CLUSTER])


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def model(request, cluster, tmp_path_factory):
    """The model with kube-proxy's rules of one mode, and an outside client wired to the node."""
    require_kernel()
    with NetModel(cluster, tmp_path_factory.mktemp("svcmodel"), prefix=PREFIX) as m:
        m.outside = m.add_outside(OUTSIDE, NODE_IP)
        m.mode = request.param
        if request.param == "iptables":
            run(in_netns(m.node, ["iptables-restore", "--noflush"]), input=nat_rules(cluster.services, CLUSTER_CIDR))
        else:
            run(in_netns(m.node, ["nft", "-f", "-"]), input=nft_rules(cluster.services, CLUSTER_CIDR))
        yield m
    assert leftovers(PREFIX) == ([], []), "namespaces or pins left after teardown"


def connections_per_backend(model: NetModel, cluster) -> dict[str, int]:
    """How many connections kube-proxy sent to each backend so far (iptables mode: its KUBE-SEP counters)."""
    dump = run(in_netns(model.node, ["iptables-save", "-c", "-t", "nat"])).stdout
    names = {str(ep.ips[0]): ep.display for ep in cluster.pods}
    out = {}
    for chain, (addr, _) in sep_chains(cluster.services).items():
        m = re.search(rf"\[(\d+):\d+\] -A {chain} .*-j DNAT", dump)
        out[names[addr]] = int(m.group(1)) if m else 0
    return out


def test_kube_proxy_spreads_connections_over_every_backend(model, cluster):
    """Without policyc every connection through the ClusterIP is answered, by each backend in turn:
    the NAT rules are kube-proxy's and they work."""
    answers = model.connect(model.by_name["x/d"].netns, CLUSTER_IP, SERVICE_PORT, "TCP", CONNECTIONS)
    assert set(answers) == BACKENDS, answers
    if model.mode == "iptables":
        assert sum(connections_per_backend(model, cluster).values()) >= CONNECTIONS


def test_nodeport_from_outside_and_hairpin_reach_the_backends(model):
    answers = model.connect(model.outside, NODE_IP, NODE_PORT, "TCP", CONNECTIONS)
    assert set(answers) == BACKENDS, answers
    hairpin = model.connect(model.by_name["x/a"].netns, CLUSTER_IP, SERVICE_PORT, "TCP", CONNECTIONS)
    assert set(hairpin) == BACKENDS, hairpin


POLICIES = Path(__file__).parent / "data" / "services" / "policies"


@pytest.fixture
def enforced(model, tmp_path):
    """tests/data/services/policies compiled for the model's cluster and loaded on every pod's veth."""
    from test_e2e_netns import compile_case, loaded

    artifact = compile_case([str(POLICIES)], CLUSTER, tmp_path / "art")
    with loaded(model, artifact, f"{PREFIX}svc"):
        yield model


def test_world_egress_does_not_reach_a_service_whose_backends_deny_it(enforced):
    """x/e may send to the world; its connections through the ClusterIP meet backends that admit x/d
    only, and a Service address is no world address (R7.8): none is answered."""
    answers = enforced.connect(enforced.by_name["x/e"].netns, CLUSTER_IP, SERVICE_PORT, "TCP", 10)
    assert answers == [""] * 10, answers


def allowed_backends(cluster, client: str) -> set[str]:
    """The evaluator's answer for ``client`` through the ClusterIP: the backends policy lets it reach."""
    from policyc.compiler.evaluate import Evaluator
    from policyc.compiler.frontend import build_policy_set
    from policyc.compiler.services import ServiceMap, bind, decide
    from policyc.compiler.source import load_documents

    policy = bind(build_policy_set(load_documents([POLICIES])).policy, cluster.services)
    smap = ServiceMap(cluster)
    front = smap.frontend(CLUSTER_IP, SERVICE_PORT, smap.services[0].ports[0].protocol)
    verdict = decide(Evaluator(policy), smap, cluster.find(client), front)
    return {b.endpoint.display for b, v in verdict.backends if v.allowed}


def test_each_connection_through_the_cluster_ip_meets_the_backend_it_reached(enforced, cluster):
    """A client without egress policy (x/f): kube-proxy picks a backend per connection, and the backend's own
    hook decides it after the DNAT against x/f's identity. Allowed backends always answer, denied ones never:
    x/a and x/b admit x/f, x/c does not; in iptables mode kube-proxy's counters say which were picked."""
    client = "x/f"
    want = allowed_backends(cluster, client)
    assert want == {"x/a", "x/b"}
    before = connections_per_backend(enforced, cluster) if enforced.mode == "iptables" else None
    answers = enforced.connect(enforced.by_name[client].netns, CLUSTER_IP, SERVICE_PORT, "TCP", CONNECTIONS)
    assert set(answers) - {""} == want, answers
    if before is not None:  # kube-proxy's own counters: the silent connections are exactly those to denied backends
        after = connections_per_backend(enforced, cluster)
        sent = {name: after[name] - before[name] for name in after}
        assert answers.count("") == sum(n for name, n in sent.items() if name not in want), (answers, sent)
        assert all(answers.count(name) == n for name, n in sent.items() if name in want), (answers, sent)
    else:
        assert "" in answers, answers  # a denied backend is picked with probability > 0.99999 in 30 tries


def test_hairpin_through_the_cluster_ip_meets_no_policy(enforced, cluster):
    """x/a reaching itself through the ClusterIP: kube-proxy masquerades the hairpin to the node's address
    on x/a's veth, which the loader holds as ``host`` (every address of the node's namespace), so x/a's
    own hook admits it (R11.6, as the evaluator says); x/b and x/c do not admit x/a."""
    assert allowed_backends(cluster, "x/a") == {"x/a"}
    answers = enforced.connect(enforced.by_name["x/a"].netns, CLUSTER_IP, SERVICE_PORT, "TCP", CONNECTIONS)
    assert set(answers) == {"x/a", ""}, answers
