"""Paths by which a packet still addressed to a Service leaves PREROUTING and is consumed before FORWARD.

nf_node used to drop an untranslated Service destination at PREROUTING; it now drops it at FORWARD and
LOCAL_IN. Between PREROUTING and the FORWARD hook, ip_forward() still acts on the packet: it hands a
datagram with the IPv4 Router Alert option to every raw socket that asked for IP_ROUTER_ALERT (and
forwards nothing), and answers a TTL of 1 with an ICMP time exceeded. Both happen before NF_INET_FORWARD.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from netmodel import in_netns
from test_services_no_endpoints import WEB_IP, SERVICE_PORT, enforced, not_translated  # noqa: F401

pytestmark = pytest.mark.kernel

LISTEN_RA = r"""
import socket, sys, select, json
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.setsockopt(socket.IPPROTO_IP, 5, 1)  # IP_ROUTER_ALERT
print("ready", flush=True)
got = []
while select.select([s], [], [], 3.0)[0]:
    data, peer = s.recvfrom(65535)
    dst = socket.inet_ntoa(data[16:20])
    got.append([peer[0], dst, data[-8:].decode(errors="replace")])
print(json.dumps(got), flush=True)
"""

SEND_RA = r"""
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"\x94\x04\x00\x00")  # Router Alert
u.sendto(b"RA-PROBE", (sys.argv[1], int(sys.argv[2])))
"""

SEND_TTL1 = r"""
import socket, sys, select, json, struct
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
u.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
u.connect((sys.argv[1], int(sys.argv[2])))
u.send(b"TTL1")
r = select.select([u], [], [], 2.0)[0]
out = None
if r:
    msg, anc, flags, addr = u.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    for level, typ, data in anc:
        ee_errno, origin, etype, ecode = struct.unpack("IBBB", data[:7])
        offender = socket.inet_ntoa(data[20:24])
        out = {"errno": ee_errno, "type": etype, "code": ecode, "offender": offender}
print(json.dumps(out))
"""


def py(netns: str, code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(in_netns(netns, [sys.executable, "-c", code, *args]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_router_alert_datagram_to_an_untranslated_service_port_reaches_a_node_raw_socket(enforced):
    """A node daemon with an IP_ROUTER_ALERT raw socket (RSVP, some multicast daemons): x/f's UDP datagram
    to x/web's ClusterIP on a port kube-proxy does not translate, with the Router Alert option, must not be
    delivered to it untranslated."""
    listener = py(enforced.node, LISTEN_RA)
    assert listener.stdout.readline().strip() == "ready"
    sender = py(enforced.by_name["x/f"].netns, SEND_RA, WEB_IP, str(SERVICE_PORT + 1))
    sender.communicate(timeout=10)
    out, err = listener.communicate(timeout=15)
    got = json.loads(out.strip().splitlines()[-1])
    assert [g for g in got if g[1] == WEB_IP] == [], got


def test_ttl_one_to_an_untranslated_service_port_gets_no_answer(enforced):
    """x/f to x/web's ClusterIP on a port nothing translates, TTL 1: dropped silently (as before the change),
    not answered with the node's ICMP time exceeded."""
    before = not_translated(enforced)
    out, err = py(enforced.by_name["x/f"].netns, SEND_TTL1, WEB_IP, str(SERVICE_PORT + 1)).communicate(timeout=10)
    assert json.loads(out) is None, out


NODE_CLIENT = r"""
import socket, sys, json, threading, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[3], int(sys.argv[2]))); srv.listen(4)
def serve():
    c, _ = srv.accept(); c.sendall(b"node-backend"); c.close()
threading.Thread(target=serve, daemon=True).start()
c = socket.socket(); c.settimeout(3.0)
t = time.monotonic()
try:
    c.connect((sys.argv[1], int(sys.argv[2]))); out = c.recv(64).decode()
except OSError as e:
    out = type(e).__name__
print(json.dumps({"got": out, "seconds": round(time.monotonic() - t, 2)}))
"""


def test_the_node_reaches_a_service_whose_backend_is_the_node_itself(enforced):
    """A host-network client (kubelet, an agent) to a ClusterIP kube-proxy DNATs, in OUTPUT, to a backend on
    the node itself (the default/kubernetes Service on a control-plane node: the apiserver on the node's
    address). The reply is reverse-NATed to the ClusterIP in POSTROUTING and comes back through lo's
    PREROUTING with the ClusterIP as its source: it is the node's own reply, not a forged one."""
    port, node_ip = "9443", "192.168.10.11"
    rule = ["-t", "nat", "-I", "OUTPUT", "-d", WEB_IP, "-p", "tcp", "--dport", port, "-j", "DNAT",
            "--to-destination", f"{node_ip}:{port}"]
    enforced.node_run(["iptables", *rule], check=True)
    before = not_translated(enforced)
    try:
        out, err = py(enforced.node, NODE_CLIENT, WEB_IP, port, node_ip).communicate(timeout=15)
    finally:
        enforced.node_run(["iptables", *["-D" if a == "-I" else a for a in rule]], check=True)
    assert json.loads(out)["got"] == "node-backend", (out, err, not_translated(enforced) - before)
