"""A Service with no endpoints is refused at once, as kube-proxy makes it, with nf_node loaded.

kube-proxy writes no DNAT for a Service port with no ready endpoint; it REJECTs it in the filter table
(iptables: ``KUBE-SERVICES`` from FORWARD, "<svc> has no endpoints"; nftables: the ``no-endpoint-services``
map from filter-forward/input/output), and the node answers with an ICMP port unreachable: the client's
connect fails with "connection refused" at once. nf_node used to drop the untranslated packet at
PREROUTING, before the filter table, and the client waited for its timeout instead. Now it drops what
is still addressed to a Service only after the filter table (FORWARD, LOCAL_IN): neither translated nor
refused (a port the Service lacks, kube-proxy's rules gone).

The same over IPv6 (ip6tables, nft's ip6 table): kube-proxy REJECTs alike and the node answers with an
ICMPv6 port unreachable. nf_node's PREROUTING lets only a plain packet on to that REJECT (TCP, UDP or SCTP
right after the fixed header, hop limit above 1); one with an extension header is dropped there as
service-not-translated, so its sender times out instead of being refused: the trade-off docs/artifact.md
states (its "To or from a Service address" paragraph), taken because ip6_forward() hands a Hop-by-Hop
Router Alert packet to the node's raw sockets before FORWARD (tests/test_services_untranslated_paths_v6.py)
and nf_node does not tell one extension header from another there.

Cluster: tests/data/services/noendpoints.yaml (dual-stack: x/web with three backends, x/gone with none);
policies: tests/data/services/policies and attack-policies, so the client x/f admits only x/d: the node's
ICMP (ICMPv6) reaches it as the host (R3.9), which no policy can deny.
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
CLUSTER_CIDRS = {4: "10.244.0.0/16", 6: "fd00::/64"}
WEB_IP, GONE_IP, SERVICE_PORT, DNS_PORT = "10.96.0.10", "10.96.0.20", 8080, 53
WEB_IP6, GONE_IP6 = "fd00:96::10", "fd00:96::20"
NODE_IP, GONE_NODE_PORT, OUTSIDE = "192.168.10.11", 30090, "203.0.113.9"
NODE_IP6, OUTSIDE6 = "fd00:10::11", "2001:db8::9"
WAIT = 3.0   # how long a client waits for an answer
FAST = 1.0   # a refusal is one round trip inside the node; a drop is silence for all of WAIT
# An IPv6 TCP client is refused by its second SYN, one initial RTO (1 s) late: the ICMPv6 error of the first
# comes back through the veths in the softirq of the client's own connect(), which still owns the socket, and
# tcp_v6_err keeps it only as a soft error (TcpExtLockDroppedIcmps). Measured the same without policyc's
# hooks (and with them no drop, both ICMPv6 errors delivered); an IPv4 client is refused by its first SYN.
SYN_RTO = 1.0


def install_kube_proxy(model: NetModel, mode: str, services, family: int) -> None:
    """kube-proxy's rules of ``mode`` for ``family`` in the node namespace, as its proxier of that family
    writes them: its nat and filter tables (ip6tables for IPv6), or its nft table (``ip6 kube-proxy``)."""
    if mode == "iptables":
        restore = "iptables-restore" if family == 4 else "ip6tables-restore"
        for rules in (nat_rules(services, CLUSTER_CIDRS[family], family), filter_rules(services, family)):
            run(in_netns(model.node, [restore, "--noflush"]), input=rules)
    else:
        run(in_netns(model.node, ["nft", "-f", "-"]), input=nft_rules(services, CLUSTER_CIDRS[family], family))


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def enforced(request, tmp_path_factory):
    """The model with kube-proxy's rules of one mode for both families, default routes (IPv4, IPv6) out of
    the node, the policies loaded on every veth."""
    from test_e2e_netns import compile_case, loaded

    require_kernel()
    cluster = load_inventory([CLUSTER])
    work = tmp_path_factory.mktemp("svcnoep")
    with NetModel(cluster, work, prefix=PREFIX) as m:
        m.outside = m.add_outside(OUTSIDE, NODE_IP, v6=(OUTSIDE6, NODE_IP6))
        m.route_default(OUTSIDE)
        m.route_default(OUTSIDE6)
        m.mode, m.services = request.param, cluster.services
        for family in (4, 6):
            install_kube_proxy(m, request.param, cluster.services, family)
        m.artifact = compile_case([str(p) for p in POLICIES], CLUSTER, work / "art")
        with loaded(m, m.artifact, NAME):
            yield m
    assert leftovers(PREFIX) == ([], []), "namespaces or pins left after teardown"


def attempt(model: NetModel, netns: str, addr: str, port: int, protocol: str, *options: str) -> dict:
    """One connected attempt from ``netns`` (netagent ``refusal``, ``options`` such as ``dstopts``): its
    outcome and how long it took."""
    proc = model.spawn(netns, ["refusal", addr, str(port), protocol, str(WAIT), *options])
    out, err = proc.communicate(timeout=WAIT + 30)
    model.procs.remove(proc)
    assert proc.returncode == 0, err
    return json.loads(out)


def not_translated(model: NetModel) -> int:
    return drops(model, NAME).get("service-not-translated", 0)


@pytest.mark.parametrize("addr", [GONE_IP, GONE_IP6])
@pytest.mark.parametrize("port,protocol", [(SERVICE_PORT, "TCP"), (DNS_PORT, "UDP")])
def test_a_service_with_no_endpoints_refuses_at_once(enforced, addr, port, protocol):
    """x/f to x/gone's ClusterIP (IPv4 or IPv6): kube-proxy's REJECT answers, nf_node lets the untranslated
    packet reach it and drops nothing, and x/f's to_pod admits the node's ICMP (ICMPv6) error, from the
    host."""
    before = not_translated(enforced)
    got = attempt(enforced, enforced.by_name["x/f"].netns, addr, port, protocol)
    bound = FAST + (SYN_RTO if ":" in addr and protocol == "TCP" else 0.0)
    assert got["outcome"] == "refused" and got["seconds"] < bound, got
    assert not_translated(enforced) == before


def test_a_nodeport_with_no_endpoints_refuses_at_once(enforced):
    """From outside to x/gone's NodePort: kube-proxy REJECTs it on the node's INPUT, where nf_node runs too."""
    got = attempt(enforced, enforced.outside, NODE_IP, GONE_NODE_PORT, "TCP")
    assert got["outcome"] == "refused" and got["seconds"] < FAST, got


@pytest.mark.parametrize("addr", [WEB_IP, WEB_IP6])
def test_a_service_with_endpoints_still_answers(enforced, addr):
    """x/f to x/web (IPv4 or IPv6): DNATed, decided by nf_node against the backend kube-proxy picked (x/a and
    x/b admit x/f, x/c does not)."""
    answers = enforced.connect(enforced.by_name["x/f"].netns, addr, SERVICE_PORT, "TCP", 10)
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
            install_kube_proxy(model, "nftables", model.services, 4)


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
    test_a_service_with_endpoints_still_answers(enforced, WEB_IP)


@pytest.mark.parametrize("port,protocol", [(SERVICE_PORT, "TCP"), (DNS_PORT, "UDP")])
def test_an_ipv6_extension_header_to_a_service_with_no_endpoints_is_dropped_not_refused(enforced, port, protocol):
    """x/f to x/gone's IPv6 ClusterIP with a Destination Options header: nf_node's PREROUTING drops it
    (service-not-translated) instead of letting it on to kube-proxy's REJECT, so x/f times out where the
    same packet without the header is refused (the trade-off of the module docstring), and it is not forwarded
    either: nf_node's counter and event say it was dropped. The same header through a Service with endpoints
    changes nothing (tests/test_services_v6.py)."""
    before = not_translated(enforced)
    got = attempt(enforced, enforced.by_name["x/f"].netns, GONE_IP6, port, protocol, "dstopts")
    assert got["outcome"] == "timeout", got
    assert not_translated(enforced) > before
    assert (f"{GONE_IP6} (svc:x/gone)", port, "x/f") in observed_untranslated(enforced)


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
    is a replace: the new links come beside it on all three hooks (IPv4 PREROUTING at -98, the old one still
    holds -99; IPv6, where the older load left nothing, at -99), the old one is detached and its pin removed,
    and the refusal and the drop hold after."""
    made = enforced.node_run([sys.executable, "-c", OLD_LAYOUT, NAME], env=policyc_env())
    assert made.returncode == 0, made.stderr
    assert netfilter_pins(enforced) == {"netfilter-ipv4": "priority -99"}
    old = link_id(enforced, f"/sys/fs/bpf/policyc/{NAME}/links/netfilter-ipv4")
    replaced = enforced.policyc("load", str(enforced.artifact), "--name", NAME)
    assert replaced.returncode == 0, replaced.stderr
    assert netfilter_pins(enforced) == {"netfilter-ipv4-prerouting": "prerouting priority -98",
                                        "netfilter-ipv4-forward": "forward priority 1",
                                        "netfilter-ipv4-input": "input priority 1",
                                        "netfilter-ipv6-prerouting": "prerouting priority -99",
                                        "netfilter-ipv6-forward": "forward priority 1",
                                        "netfilter-ipv6-input": "input priority 1"}
    assert enforced.node_run(["bpftool", "link", "show", "id", str(old)]).returncode != 0, "old link left"
    test_a_service_with_no_endpoints_refuses_at_once(enforced, GONE_IP, SERVICE_PORT, "TCP")
    test_a_port_nothing_translates_or_refuses_is_dropped(enforced)
