"""Services behind kube-proxy's real NAT rules in the netns model: real connections through a ClusterIP
and a NodePort, each one checked against the backend kube-proxy really chose.

kube-proxy's rules (tests/kubeproxy.py, iptables mode and nftables mode) are installed in the node
namespace; every connection is a new one, so kube-proxy picks a backend at random each time; its
per-endpoint rule counters (a nat rule sees only a connection's first packet) say how many
connections went to each backend.
"""
from __future__ import annotations

import json
import re
import time
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
        m.route_default(OUTSIDE)  # what no DNAT rewrote is forwarded, and nf_node meets it at FORWARD
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


def allowed_backends(cluster, client: str, address: str = CLUSTER_IP, port: int = SERVICE_PORT) -> set[str]:
    """The evaluator's answer for ``client`` (a pod, or an outside address) through ``address``:``port`` (the
    ClusterIP, or a node's NodePort): the backends policy lets it reach."""
    import ipaddress

    from policyc.compiler.evaluate import Evaluator
    from policyc.compiler.frontend import build_policy_set
    from policyc.compiler.inventory import external
    from policyc.compiler.services import ServiceMap, bind, decide
    from policyc.compiler.source import load_documents

    policy = bind(build_policy_set(load_documents([POLICIES])).policy, cluster.services)
    smap = ServiceMap(cluster)
    front = smap.frontend(address, port, smap.services[0].ports[0].protocol)
    src = cluster.find(client) if "/" in client else external(ipaddress.ip_address(client))
    verdict = decide(Evaluator(policy), smap, src, front)
    return {b.endpoint.display for b, v in verdict.backends if v.allowed}


@pytest.mark.parametrize("client", ["x/d", "x/f"])
def test_each_connection_through_the_cluster_ip_meets_the_backend_it_reached(enforced, cluster, client):
    """kube-proxy picks a backend per connection; nf_node decides it after the DNAT against that backend.
    x/d's egress is default-deny, allowed to app=web on 80 (the backends' port, not the Service's 8080) and
    denied tier=c; x/f has no egress policy and x/a and x/b admit it, x/c does not. Allowed backends always
    answer, denied ones never (replies come back from the ClusterIP and pass); in iptables mode kube-proxy's
    counters say which were picked."""
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
    # observe names the backend as the destination, and the Service the client sent to
    side = "egress" if client == "x/d" else "ingress"
    events = [json.loads(line) for line in enforced.policyc("observe", f"{PREFIX}svc", "--format", "json",
                                                            "--verdict", "deny").stdout.splitlines()]
    assert {(e["source"], e["destination"], e["dport"], e["service"], e["direction"]) for e in events} == {
        (client, "x/c", 80, f"svc:x/web {CLUSTER_IP}:{SERVICE_PORT}", side)}, events


def test_hairpin_through_the_cluster_ip_meets_no_policy(enforced, cluster):
    """x/a reaching itself through the ClusterIP: kube-proxy masquerades the hairpin to the node's address
    on x/a's veth, which the loader holds as ``host`` (every address of the node's namespace), so x/a's
    own hook admits it (R11.6, as the evaluator says); x/b and x/c do not admit x/a."""
    assert allowed_backends(cluster, "x/a") == {"x/a"}
    answers = enforced.connect(enforced.by_name["x/a"].netns, CLUSTER_IP, SERVICE_PORT, "TCP", CONNECTIONS)
    assert set(answers) == {"x/a", ""}, answers


def test_nodeport_from_outside_meets_the_backend_it_reached(enforced, cluster):
    """From outside, through the node's NodePort: kube-proxy DNATs and masquerades to the node's address, so
    the backend's own hook would see `host` (R3.9) and admit everything; nf_node decides before the
    masquerade, against the outside client (world): only x/a admits the world on 80."""
    want = allowed_backends(cluster, OUTSIDE, NODE_IP, NODE_PORT)
    assert want == {"x/a"}
    answers = enforced.connect(enforced.outside, NODE_IP, NODE_PORT, "TCP", CONNECTIONS)
    assert set(answers) == want | {""}, answers


def drops(model: NetModel, name: str) -> dict[str, int]:
    status = json.loads(model.policyc("status", name, "--format", "json").stdout)
    return {d["reason"]: d["packets"] for d in status["datapath"]["drops"]}


def test_what_no_dnat_translated_is_dropped_and_observed(enforced, cluster):
    """x/d may reach the backends on 80, but to the ClusterIP on a port the Service lacks (8081), or by UDP,
    kube-proxy has no rule: nothing translates the packet and nf_node drops it, with an event naming the
    ClusterIP. A datagram from outside claiming the ClusterIP as its source (a forged reply) never reaches
    x/d, which admits everything else from outside."""
    xd = enforced.by_name["x/d"]
    assert enforced.connect(xd.netns, CLUSTER_IP, SERVICE_PORT + 1, "TCP", 2) == ["", ""]
    assert enforced.connect(xd.netns, CLUSTER_IP, SERVICE_PORT, "UDP", 1) == [""]
    for src, stream in ((CLUSTER_IP, "forged"), (OUTSIDE, "own")):
        sender = enforced.spawn(enforced.outside, ["spoof", src, str(xd.ips[0]), "80", stream])
        assert sender.stdout.readline().strip() == "sent", sender.stderr.read()
        sender.wait()
        enforced.procs.remove(sender)
    time.sleep(0.3)
    got = {stream for _, stream, _ in enforced.received(xd)}
    assert "own" in got and "forged" not in got, got
    assert drops(enforced, f"{PREFIX}svc").get("service-not-translated", 0) >= 4
    events = [json.loads(line) for line in enforced.policyc("observe", f"{PREFIX}svc", "--format", "json",
                                                            "--verdict", "deny").stdout.splitlines()]
    untranslated = {(e["destination"], e["dport"], e["endpoint"]) for e in events
                    if e["reason"] == "service-not-translated"}
    assert (f"{CLUSTER_IP} (svc:x/web)", SERVICE_PORT + 1, "x/d") in untranslated, events


def test_a_connection_through_the_cluster_ip_survives_a_replace(enforced, tmp_path):
    """x/d holds a connection through the ClusterIP (to x/a or x/b: a SYN to x/c is dropped, and its
    retransmission is a new connection for which kube-proxy picks again). Loading the artifact again over
    the same name is an atomic replace: the kernel cannot swap a netfilter link's program, so a new nf_node
    link comes beside the old one, which goes after the swap; the connection goes on with its backend."""
    from test_e2e_netns import compile_case

    for _ in range(5):  # each try fails only if kube-proxy picks x/c for the SYN and its retransmission
        held = enforced.spawn(enforced.by_name["x/d"].netns, ["hold", CLUSTER_IP, str(SERVICE_PORT)])
        if held.stdout.readline().strip() == "connected":
            break
        held.wait()
        enforced.procs.remove(held)
    else:
        pytest.fail("no connection through the ClusterIP in 5 tries")

    def say(line: str) -> str:
        held.stdin.write(line + "\n")
        held.stdin.flush()
        return held.stdout.readline().strip()

    first = say("before")
    assert first in {"x/a", "x/b"}, first
    again = compile_case([str(POLICIES)], CLUSTER, tmp_path / "again")
    replaced = enforced.policyc("load", str(again), "--name", f"{PREFIX}svc")
    assert replaced.returncode == 0, replaced.stderr
    assert "nf_node" in replaced.stdout, replaced.stdout
    assert say("after") == first
    held.stdin.close()
    held.wait()
    enforced.procs.remove(held)
