"""A Service with no endpoints is refused at once, as kube-proxy makes it, with nf_node loaded.

kube-proxy writes no DNAT for a Service port with no ready endpoint; it REJECTs it in the filter table
(iptables: ``KUBE-SERVICES`` from FORWARD, "<svc> has no endpoints"; nftables: the ``no-endpoint-services``
map from filter-forward/input/output), and the node answers with an ICMP port unreachable: the client's
connect fails with "connection refused" at once. nf_node used to drop the untranslated packet at
PREROUTING, before the filter table, and the client waited for its timeout instead. Now it drops what
is still addressed to a Service only after the filter table (FORWARD, LOCAL_IN): neither translated nor
refused (a port the Service lacks, kube-proxy's rules gone).

Cluster: tests/data/services/noendpoints.yaml (x/web with three backends, x/gone with none); policies:
tests/data/services/policies and attack-policies, so the client x/f admits only x/d: the node's ICMP
reaches it as the host (R3.9), which no policy can deny.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from kernelreq import require_kernel
from kubeproxy import filter_rules, nat_rules, nft_rules
from netmodel import NetModel, in_netns, leftovers, policyc_env, run
from policyc.compiler.inventory import load_inventory
from test_services_netns import drops

pytestmark = pytest.mark.kernel

PREFIX = "pcn"
NAME = f"{PREFIX}svc"
DATA = Path(__file__).parent / "data" / "services"
CLUSTER = DATA / "noendpoints.yaml"
POLICIES = [DATA / "policies", DATA / "attack-policies"]
CLUSTER_CIDR = "10.244.0.0/16"
WEB_IP, GONE_IP, SERVICE_PORT, DNS_PORT = "10.96.0.10", "10.96.0.20", 8080, 53
NODE_IP, GONE_NODE_PORT, OUTSIDE = "192.168.10.11", 30090, "203.0.113.9"
WAIT = 3.0   # how long a client waits for an answer
FAST = 1.0   # a refusal is one round trip inside the node; a drop is silence for all of WAIT


def install_kube_proxy(model: NetModel, mode: str, services) -> None:
    """kube-proxy's rules of ``mode`` in the node namespace: its nat and filter tables, or its nft table."""
    if mode == "iptables":
        for rules in (nat_rules(services, CLUSTER_CIDR), filter_rules(services)):
            run(in_netns(model.node, ["iptables-restore", "--noflush"]), input=rules)
    else:
        run(in_netns(model.node, ["nft", "-f", "-"]), input=nft_rules(services, CLUSTER_CIDR))


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def enforced(request, tmp_path_factory):
    """The model with kube-proxy's rules of one mode, a default route out of the node, the policies
    loaded on every veth."""
    from test_e2e_netns import compile_case, loaded

    require_kernel()
    cluster = load_inventory([CLUSTER])
    work = tmp_path_factory.mktemp("svcnoep")
    with NetModel(cluster, work, prefix=PREFIX) as m:
        m.outside = m.add_outside(OUTSIDE, NODE_IP)
        m.route_default(OUTSIDE)
        m.mode, m.services = request.param, cluster.services
        install_kube_proxy(m, request.param, cluster.services)
        m.artifact = compile_case([str(p) for p in POLICIES], CLUSTER, work / "art")
        with loaded(m, m.artifact, NAME):
            yield m
    assert leftovers(PREFIX) == ([], []), "namespaces or pins left after teardown"


def attempt(model: NetModel, netns: str, addr: str, port: int, protocol: str) -> dict:
    """One connected attempt from ``netns`` (netagent ``refusal``): its outcome and how long it took."""
    proc = model.spawn(netns, ["refusal", addr, str(port), protocol, str(WAIT)])
    out, err = proc.communicate(timeout=WAIT + 30)
    model.procs.remove(proc)
    assert proc.returncode == 0, err
    return json.loads(out)


def not_translated(model: NetModel) -> int:
    return drops(model, NAME).get("service-not-translated", 0)


@pytest.mark.parametrize("port,protocol", [(SERVICE_PORT, "TCP"), (DNS_PORT, "UDP")])
def test_a_service_with_no_endpoints_refuses_at_once(enforced, port, protocol):
    """x/f to x/gone's ClusterIP: kube-proxy's REJECT answers, nf_node lets the untranslated packet reach it
    and drops nothing, and x/f's to_pod admits the node's ICMP error (from the host)."""
    before = not_translated(enforced)
    got = attempt(enforced, enforced.by_name["x/f"].netns, GONE_IP, port, protocol)
    assert got["outcome"] == "refused" and got["seconds"] < FAST, got
    assert not_translated(enforced) == before


def test_a_nodeport_with_no_endpoints_refuses_at_once(enforced):
    """From outside to x/gone's NodePort: kube-proxy REJECTs it on the node's INPUT, where nf_node runs too."""
    got = attempt(enforced, enforced.outside, NODE_IP, GONE_NODE_PORT, "TCP")
    assert got["outcome"] == "refused" and got["seconds"] < FAST, got


def test_a_service_with_endpoints_still_answers(enforced):
    """x/f to x/web: DNATed, decided by nf_node against the backend kube-proxy picked (x/a and x/b admit x/f,
    x/c does not)."""
    answers = enforced.connect(enforced.by_name["x/f"].netns, WEB_IP, SERVICE_PORT, "TCP", 10)
    assert set(answers) <= {"x/a", "x/b", ""} and set(answers) & {"x/a", "x/b"}, answers


def observed_untranslated(model: NetModel) -> set[tuple[str, int, str]]:
    events = [json.loads(line) for line in model.policyc("observe", NAME, "--format", "json", "--verdict",
                                                         "deny").stdout.splitlines()]
    return {(e["destination"], e["dport"], e["endpoint"]) for e in events if e["reason"] == "service-not-translated"}


def test_a_port_nothing_translates_or_refuses_is_dropped(enforced):
    """x/f to x/web's ClusterIP on a port the Service lacks: kube-proxy has no rule for it (neither DNAT nor
    REJECT), the node would forward it along its default route; nf_node drops it after the filter table."""
    before = not_translated(enforced)
    got = attempt(enforced, enforced.by_name["x/f"].netns, WEB_IP, SERVICE_PORT + 1, "TCP")
    assert got["outcome"] == "timeout", got
    assert not_translated(enforced) > before
    assert (f"{WEB_IP} (svc:x/web)", SERVICE_PORT + 1, "x/f") in observed_untranslated(enforced)


@contextmanager
def kube_proxy_gone(model: NetModel):
    """kube-proxy's translations flushed (its rules lost, or a client that bypasses them), put back after."""
    if model.mode == "iptables":
        saved = run(in_netns(model.node, ["iptables-save", "-t", "nat"])).stdout
        run(in_netns(model.node, ["iptables", "-t", "nat", "-F", "KUBE-SERVICES"]))
    else:
        run(in_netns(model.node, ["nft", "flush", "map", "ip", "kube-proxy", "service-ips"]))
    try:
        yield
    finally:
        if model.mode == "iptables":
            run(in_netns(model.node, ["iptables-restore", "-T", "nat"]), input=saved)
        else:
            run(in_netns(model.node, ["nft", "delete", "table", "ip", "kube-proxy"]))
            install_kube_proxy(model, "nftables", model.services)


def test_a_service_whose_translation_is_gone_is_dropped(enforced):
    """Without kube-proxy's DNAT, x/f's connection to x/web (which has endpoints, so no REJECT either) would be
    forwarded to the ClusterIP itself: nf_node drops it as service-not-translated; with the rules back it
    answers again."""
    before = not_translated(enforced)
    with kube_proxy_gone(enforced):
        got = attempt(enforced, enforced.by_name["x/f"].netns, WEB_IP, SERVICE_PORT, "TCP")
    assert got["outcome"] == "timeout", got
    assert not_translated(enforced) > before
    assert (f"{WEB_IP} (svc:x/web)", SERVICE_PORT, "x/f") in observed_untranslated(enforced)
    test_a_service_with_endpoints_still_answers(enforced)


# What the loader of the previous layout left: nf_node on PREROUTING only, priority -99, pinned as
# links/netfilter-ipv4, and recorded so in the state file. Run in the node namespace.
OLD_LAYOUT = """
import os, sys
from dataclasses import replace
from pathlib import Path
from policyc.bpf_runtime import libbpf as L
from policyc.bpf_runtime.attach import Attachment, detach
from policyc.bpf_runtime.loaded import open_program
from policyc.bpf_runtime.state import read_state, write_state

state = read_state(sys.argv[1])
pins = Path(state.pin_dir)
for a in state.attachments:
    if a.hook == "netfilter":
        detach(Path(a.pin))
prog = open_program(pins, "nf_node")
fd = L.netfilter_link(prog.fd, L.NFPROTO_IPV4, L.NF_INET_PRE_ROUTING, -99)
pin = pins / "links" / "netfilter-ipv4"
L.pin_fd(fd, str(pin))
os.close(fd)
old = Attachment("ipv4", 0, "netfilter", "nf_node", "priority -99", "", str(pin))
write_state(replace(state, attachments=[a for a in state.attachments if a.hook != "netfilter"] + [old]))
"""


def netfilter_pins(model: NetModel) -> dict[str, str]:
    """The name's netfilter link pins -> the mode its state file records for them (status)."""
    status = json.loads(model.policyc("status", NAME, "--format", "json").stdout)
    return {Path(a["pin"]).name: a["mode"] for a in status["attachments"] if a["hook"] == "netfilter"}


def link_id(model: NetModel, pin: str) -> int:
    shown = model.node_run(["bpftool", "--json", "link", "show", "pinned", pin], check=True)
    return json.loads(shown.stdout)["id"]


def test_a_load_over_the_single_prerouting_link_of_an_older_load_replaces_it(enforced):
    """An older policyc left one nf_node link (PREROUTING, priority -99, pin netfilter-ipv4). Loading over it
    is a replace: the new links come beside it on all three hooks (PREROUTING at -98, the old one still
    holds -99), the old one is detached and its pin removed, and the refusal and the drop hold after."""
    made = enforced.node_run([sys.executable, "-c", OLD_LAYOUT, NAME], env=policyc_env())
    assert made.returncode == 0, made.stderr
    assert netfilter_pins(enforced) == {"netfilter-ipv4": "priority -99"}
    old = link_id(enforced, f"/sys/fs/bpf/policyc/{NAME}/links/netfilter-ipv4")
    replaced = enforced.policyc("load", str(enforced.artifact), "--name", NAME)
    assert replaced.returncode == 0, replaced.stderr
    assert netfilter_pins(enforced) == {"netfilter-ipv4-prerouting": "prerouting priority -98",
                                        "netfilter-ipv4-forward": "forward priority 1",
                                        "netfilter-ipv4-input": "input priority 1"}
    assert enforced.node_run(["bpftool", "link", "show", "id", str(old)]).returncode != 0, "old link left"
    test_a_service_with_no_endpoints_refuses_at_once(enforced, SERVICE_PORT, "TCP")
    test_a_port_nothing_translates_or_refuses_is_dropped(enforced)
