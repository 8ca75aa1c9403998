"""The IPv6 Router Alert path of tests/test_services_untranslated_paths.py: ip6_forward() hands a packet with
a Hop-by-Hop Router Alert option to the IPV6_ROUTER_ALERT raw sockets before NF_INET_FORWARD."""
from __future__ import annotations

import json

import pytest

from test_services_untranslated_paths import py
from test_services_v6 import CLUSTER_IP6, SERVICE_PORT, enforced  # noqa: F401

pytestmark = pytest.mark.kernel

LISTEN_RA6 = r"""
import socket, select, json
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IPv6 RA sockets are IPPROTO_RAW
s.setsockopt(socket.IPPROTO_IPV6, 22, 0)  # IPV6_ROUTER_ALERT, selector 0 (MLD)
print("ready", flush=True)
got = []
while select.select([s], [], [], 3.0)[0]:
    data, peer = s.recvfrom(65535)
    got.append([peer[0], data[-8:].decode(errors="replace")])
print(json.dumps(got), flush=True)
"""

SEND_RA6 = r"""
import socket, sys
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, b"\x00\x00\x05\x02\x00\x00\x01\x00")
u.sendto(b"RA-PROBE", (sys.argv[1], int(sys.argv[2])))
"""


def test_ipv6_router_alert_to_an_untranslated_service_port_reaches_a_node_raw_socket(enforced):
    """x/f's datagram to x/web's IPv6 ClusterIP on a port nothing translates, with a Router Alert
    Hop-by-Hop option, is not delivered to a node's IPV6_ROUTER_ALERT raw socket (the node routes the
    Service range somewhere, as a node with a default route does)."""
    via = enforced.by_name["x/a"].host_if
    enforced.node_run(["ip", "-6", "route", "add", f"{CLUSTER_IP6}/128", "dev", via], check=True)
    try:
        listener = py(enforced.node, LISTEN_RA6)
        assert listener.stdout.readline().strip() == "ready", listener.stderr.read()
        py(enforced.by_name["x/f"].netns, SEND_RA6, CLUSTER_IP6, str(SERVICE_PORT + 1)).communicate(timeout=10)
        out, err = listener.communicate(timeout=15)
    finally:
        enforced.node_run(["ip", "-6", "route", "del", f"{CLUSTER_IP6}/128", "dev", via])
    got = json.loads(out.strip().splitlines()[-1])
    assert [g for g in got if g[1] == "RA-PROBE"] == [], (got, err)
