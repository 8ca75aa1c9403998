"""The Kubernetes e2e model in network namespaces: one netns per pod, routed through one node netns.

Each pod of an inventory gets its own namespace with ``eth0``, its inventory addresses (/32, /128)
and a default route to a gateway address that every host-side veth holds (169.254.1.1, fe80::1);
the host sides (``<prefix>h<i>``) live in the node namespace, which routes one /32 (/128) per pod
and forwards. Neighbour entries are static by default, so no ARP or ND has to cross the policy
hooks, which sit on the host-side veths exactly where Cilium puts them; ``static_neighbours=False``
leaves address resolution to ARP and IPv6 neighbour discovery, through the hooks.

Every pod runs tests/netagent.py as a TCP and UDP server that answers with its ``ns/pod``; probes
run from each source pod in one process, all destinations at once. ``NetModel`` is a context
manager that removes every namespace, process and pin it made, and at start whatever an earlier
crashed run left under the same prefix.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
AGENT = Path(__file__).resolve().parent / "netagent.py"
NETNS_DIR = Path("/var/run/netns")
PIN_ROOT = Path("/sys/fs/bpf/policyc")
STATE_DIR = Path("/run/policyc")  # the loader's state files, <name>.json
GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"
DENY_TIMEOUT = 0.4


@dataclass(frozen=True)
class Pod:
    """One pod of the model: where it lives and how the node reaches it."""
    display: str  # ns/pod, as the inventory and `policyc matrix` name it
    netns: str
    host_if: str  # host side of its veth, in the node namespace
    ips: tuple  # ipaddress objects
    index: int

    @property
    def host_mac(self) -> str:
        return f"02:00:00:00:{self.index:02x}:01"

    @property
    def pod_mac(self) -> str:
        return f"02:00:00:00:{self.index:02x}:02"

    @property
    def attach(self) -> str:
        """``NS/POD=IFACE`` for ``policyc load --attach``."""
        return f"{self.display}={self.host_if}"


def run(argv: list[str], *, input: str | None = None, check: bool = True,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command; a failure raises with its stderr, so set-up errors say what went wrong."""
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _default(addr: str) -> str:
    """The default route's prefix of ``addr``'s family (``ip route add default`` assumes IPv4)."""
    return "::/0" if ":" in addr else "0.0.0.0/0"


def in_netns(netns: str, argv: list[str]) -> list[str]:
    """``argv`` run inside ``netns`` with nsenter: unlike `ip netns exec` it keeps /sys, so bpffs
    pins stay visible to the loader."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", *argv]


def policyc_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "policyc.cli", *args]


def policyc_env() -> dict:
    """Subprocesses import policyc from this checkout, not from whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def leftovers(prefix: str) -> tuple[list[str], list[Path]]:
    """Namespaces and pin directories named with ``prefix``: what a crashed run may have left."""
    netns = sorted(p.name for p in NETNS_DIR.glob(f"{prefix}-*")) if NETNS_DIR.is_dir() else []
    pins = sorted(PIN_ROOT.glob(f"{prefix}*")) if PIN_ROOT.is_dir() else []
    return netns, pins


def kill_all(procs) -> None:
    """Kill and reap every process still running (a test's servers, probes, agents)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def remove_netns(name: str) -> None:
    """Stop every process in ``name`` (only ours ever run there), then delete it with its links."""
    pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    run(["ip", "netns", "delete", name], check=False)


def cleanup(prefix: str) -> None:
    """Unload what is still pinned (pins are the loader's source of truth), then delete namespaces."""
    netns, pins = leftovers(prefix)
    for path in pins:
        subprocess.run(policyc_argv("unload", path.name), capture_output=True, env=policyc_env(), timeout=60)
        shutil.rmtree(path, ignore_errors=True)
        Path(STATE_DIR, f"{path.name}.json").unlink(missing_ok=True)
    for name in netns:
        remove_netns(name)


class NetModel:
    """Build the topology on enter, tear all of it down on exit (even after a failure)."""

    def __init__(self, inventory, workdir: Path, prefix: str = "pce", ports: tuple[int, ...] = (80, 81),
                 static_neighbours: bool = True):
        self.prefix = prefix
        self.node = f"{prefix}-node"
        self.workdir = Path(workdir)
        self.ports = ports
        self.static_neighbours = static_neighbours
        self.pods = [Pod(ep.display, f"{prefix}-{ep.namespace}-{ep.name}", f"{prefix}h{i}", tuple(ep.ips), i)
                     for i, ep in enumerate(inventory.pods)]
        self.by_name = {p.display: p for p in self.pods}
        self.ipv6 = any(ip.version == 6 for p in self.pods for ip in p.ips)
        self.servers: dict[str, subprocess.Popen] = {}
        self.procs: list[subprocess.Popen] = []

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> "NetModel":
        cleanup(self.prefix)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        kill_all([*self.procs, *self.servers.values()])
        self.procs.clear()
        self.servers.clear()
        cleanup(self.prefix)

    def _build(self) -> None:
        run(["ip", "netns", "add", self.node])
        self.sysctl(self.node, "net.ipv4.ip_forward", "1")
        if self.ipv6:
            self.sysctl(self.node, "net.ipv6.conf.all.forwarding", "1")
        node_cmds = ["link set lo up"]
        for pod in self.pods:
            node_cmds += self._plug(pod)
        run(["ip", "-n", self.node, "-batch", "-"], input="\n".join(node_cmds) + "\n")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._serve(self.pods)

    def _plug(self, pod: Pod) -> list[str]:
        """The pod's netns, its veth and its side configured; returns the node side's `ip` commands."""
        run(["ip", "netns", "add", pod.netns])
        run(["ip", "-n", self.node, "link", "add", pod.host_if, "address", pod.host_mac, "type", "veth",
             "peer", "name", "eth0", "address", pod.pod_mac, "netns", pod.netns])
        node_cmds = [f"link set {pod.host_if} up", f"addr add {GATEWAY4}/32 dev {pod.host_if}"]
        if self.ipv6:
            node_cmds.append(f"addr add {GATEWAY6}/64 dev {pod.host_if} nodad")
        for ip in pod.ips:
            node_cmds.append(f"route add {ip}/{ip.max_prefixlen} dev {pod.host_if}")
            if self.static_neighbours:
                node_cmds.append(f"neigh replace {ip} lladdr {pod.pod_mac} dev {pod.host_if} nud permanent")
        run(["ip", "-n", pod.netns, "-batch", "-"], input="\n".join(self._pod_cmds(pod)) + "\n")
        return node_cmds

    def _serve(self, pods: list[Pod]) -> None:
        for pod in pods:
            self.servers[pod.display] = self.spawn(
                pod.netns, ["serve", pod.display, *map(str, self.ports), "--seqlog", str(self.seqlog(pod))])
        for pod in pods:
            line = self.servers[pod.display].stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"server of {pod.display} did not start: {line!r} "
                                   f"{self.servers[pod.display].stderr.read()}")

    def add_pod(self, display: str, ips: tuple, before_up: Callable[[Pod], None] = lambda pod: None) -> Pod:
        """A pod that arrives while the model runs (a pod scheduled between two compiles).

        ``before_up`` runs while the host side of its veth is still down and unrouted, as a CNI attaches
        the datapath before the pod can receive: traffic already flowing to its address meets the hooks.
        """
        ns, name = display.split("/")
        index = max(p.index for p in self.pods) + 1
        pod = Pod(display, f"{self.prefix}-{ns}-{name}", f"{self.prefix}h{index}", tuple(ips), index)
        try:
            node_cmds = self._plug(pod)
            before_up(pod)
            run(["ip", "-n", self.node, "-batch", "-"], input="\n".join(node_cmds) + "\n")
            self._serve([pod])
        except BaseException:
            remove_netns(pod.netns)
            raise
        self.pods.append(pod)
        self.by_name[display] = pod
        return pod

    def remove_pod(self, display: str) -> None:
        """The pod leaves: its server stops, its veth goes (deleted here: a deleted netns takes its links
        with it only once the kernel has cleaned it up, later, so a new pod on the same interface name
        could find the old one still there), then its netns."""
        pod = self.by_name.pop(display)
        self.pods.remove(pod)
        server = self.servers.pop(display, None)
        if server is not None:
            server.kill()
            server.wait()
            self.procs.remove(server)
        run(["ip", "-n", self.node, "link", "delete", pod.host_if], check=False)
        remove_netns(pod.netns)

    def _pod_cmds(self, pod: Pod) -> list[str]:
        cmds = ["link set lo up", "link set eth0 up"]
        has6 = any(ip.version == 6 for ip in pod.ips)
        for ip in pod.ips:
            cmds.append(f"addr add {ip}/{ip.max_prefixlen} dev eth0" + (" nodad" if ip.version == 6 else ""))
        if any(ip.version == 4 for ip in pod.ips):
            cmds += [f"route add {GATEWAY4} dev eth0 scope link", f"route add default via {GATEWAY4} dev eth0"]
            if self.static_neighbours:
                cmds.append(f"neigh replace {GATEWAY4} lladdr {pod.host_mac} dev eth0 nud permanent")
        if has6:
            cmds.append(f"route add ::/0 via {GATEWAY6} dev eth0")
            if self.static_neighbours:
                cmds.append(f"neigh replace {GATEWAY6} lladdr {pod.host_mac} dev eth0 nud permanent")
        return cmds

    def sysctl(self, netns: str, key: str, value: str) -> None:
        run(in_netns(netns, ["sysctl", "-q", "-w", f"{key}={value}"]))

    # -- processes --------------------------------------------------------------------------
    def spawn(self, netns: str, agent_args: list[str], **kw) -> subprocess.Popen:
        """tests/netagent.py in ``netns``; killed on close if still running."""
        proc = subprocess.Popen(in_netns(netns, [sys.executable, str(AGENT), *agent_args]),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kw)
        self.procs.append(proc)
        return proc

    def node_run(self, argv: list[str], *, check: bool = False, timeout: float = 120,
                 env: dict | None = None) -> subprocess.CompletedProcess:
        """A command in the node namespace (the loader attaches to the host-side veths there)."""
        return subprocess.run(in_netns(self.node, argv), capture_output=True, text=True, check=check,
                              timeout=timeout, env=env)

    def policyc(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``policyc ARGS`` from this checkout, run in the node namespace."""
        return self.node_run(policyc_argv(*args), timeout=timeout, env=policyc_env())

    def seqlog(self, pod: Pod) -> Path:
        return self.workdir / f"{pod.netns}.seq"

    def attach_args(self) -> list[str]:
        return [arg for pod in self.pods for arg in ("--attach", pod.attach)]

    # -- probing ----------------------------------------------------------------------------
    def probe(self, flows: list[tuple[str, str, int, str]], timeout: float = DENY_TIMEOUT) -> dict:
        """``{(from, to, port, protocol): (verdict, answer)}`` over real connections.

        One prober per source pod runs all its flows at once; a destination with addresses of
        both families is probed on each, and any disagreement between them is an ``error``.
        """
        todo: dict[str, list] = {}
        for flow in flows:
            src, dst = self.by_name[flow[0]], self.by_name[flow[1]]
            for ip in dst.ips:
                if any(s.version == ip.version for s in src.ips):
                    todo.setdefault(src.display, []).append((flow, [str(ip), flow[2], flow[3]]))
        procs = {}
        for src, items in todo.items():
            proc = self.spawn(self.by_name[src].netns, ["probe", str(timeout)])
            proc.stdin.write(json.dumps([job for _, job in items]))
            proc.stdin.close()
            procs[src] = proc
        results: dict = {}
        for src, proc in procs.items():
            out = proc.stdout.read()
            if proc.wait() != 0:
                raise RuntimeError(f"prober in {src} failed: {proc.stderr.read()}")
            for (flow, _), (verdict, answer) in zip(todo[src], json.loads(out)):
                if verdict == "allow" and answer != flow[1]:
                    verdict, answer = "error", f"answered by {answer!r}"
                previous = results.setdefault(flow, (verdict, answer))
                if previous[0] != verdict:
                    results[flow] = ("error", f"families disagree: {previous} vs {(verdict, answer)}")
            self.procs.remove(proc)
        return results

    def all_flows(self, ports: list[tuple[int, str]] | None = None) -> list[tuple[str, str, int, str]]:
        """Every ordered pair of distinct pods on every port, as `policyc matrix` lists them."""
        ports = ports or [(p, proto) for proto in ("TCP", "UDP") for p in self.ports]
        return [(s.display, d.display, port, proto) for port, proto in ports
                for s in self.pods for d in self.pods if s is not d]

    def received(self, pod: Pod) -> list[tuple[str, str, int]]:
        """``(source address, stream, seq)`` of every ``seq`` datagram ``pod`` received so far."""
        path = self.seqlog(pod)
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                out.append((parts[0], parts[1], int(parts[2])))
        return out

    # -- outside the cluster ----------------------------------------------------------------------
    def add_outside(self, addr: str, node_addr: str, name: str = "out",
                    v6: tuple[str, str] | None = None) -> str:
        """A client outside the cluster (its own netns ``<prefix>-<name>`` holding ``addr``) wired to the
        node through ``<prefix>x0``, where the node holds ``node_addr`` (its address for NodePorts); ``v6``,
        an (outside, node) pair of IPv6 addresses on the same link, makes the link dual-stack.
        Returns the netns; close() removes it with the rest."""
        netns, node_if = f"{self.prefix}-{name}", f"{self.prefix}x0"
        node_mac, out_mac = "02:00:00:00:ff:01", "02:00:00:00:ff:02"
        run(["ip", "netns", "add", netns])
        run(["ip", "-n", self.node, "link", "add", node_if, "address", node_mac, "type", "veth", "peer", "name",
             "eth0", "address", out_mac, "netns", netns])
        node_cmds, out_cmds = [f"link set {node_if} up"], ["link set lo up", "link set eth0 up"]
        for there, here in ((addr, node_addr), *([v6] if v6 else [])):
            host = "128" if ":" in there else "32"
            node_cmds += [f"addr add {here}/{host} dev {node_if}" + (" nodad" if host == "128" else ""),
                          f"route add {there}/{host} dev {node_if}",
                          f"neigh replace {there} lladdr {out_mac} dev {node_if} nud permanent"]
            out_cmds += [f"addr add {there}/{host} dev eth0" + (" nodad" if host == "128" else ""),
                         f"route add {here} dev eth0", f"route add {_default(there)} via {here} dev eth0",
                         f"neigh replace {here} lladdr {node_mac} dev eth0 nud permanent"]
        run(["ip", "-n", self.node, "-batch", "-"], input="\n".join(node_cmds) + "\n")
        run(["ip", "-n", netns, "-batch", "-"], input="\n".join(out_cmds) + "\n")
        return netns

    def route_default(self, via: str) -> None:
        """The node's default route (of ``via``'s family) through the outside client ``via`` (add_outside),
        as a real node has one: a packet for an address the node neither holds nor routes elsewhere (a
        Service address no DNAT rewrote) is then forwarded, and meets the FORWARD hooks, instead of dying
        in routing."""
        run(["ip", "-n", self.node, "route", "add", _default(via), "via", via, "dev", f"{self.prefix}x0"])

    def add_vxlan(self, local: str, vni: int, mac: str) -> str:
        """A VXLAN device ``<prefix>vx0`` in the node namespace that decapsulates network ``vni`` arriving
        for ``local`` on UDP 4789, as a VXLAN CNI's device does, reverse-path filtering off as those CNIs
        run it (the kernel then forwards whatever inner source it carries). Returns its name; close()
        removes it with the node namespace, remove_link() earlier."""
        name = f"{self.prefix}vx0"
        run(["ip", "-n", self.node, "link", "add", name, "address", mac, "type", "vxlan", "id", str(vni),
             "dstport", "4789", "local", local, "nolearning"])
        for key in ("all", name):
            self.sysctl(self.node, f"net.ipv4.conf.{key}.rp_filter", "0")
        run(["ip", "-n", self.node, "link", "set", name, "up"])
        return name

    def remove_link(self, name: str) -> None:
        run(["ip", "-n", self.node, "link", "delete", name], check=False)

    def connect(self, netns: str, addr: str, port: int, protocol: str, count: int,
                timeout: float = DENY_TIMEOUT) -> list[str]:
        """``count`` single-attempt connections from ``netns``: each answer (a server's name), or ""."""
        proc = self.spawn(netns, ["connect", addr, str(port), protocol, str(count), str(timeout)])
        out, err = proc.communicate(timeout=count * (timeout + 1) + 30)
        self.procs.remove(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"connect from {netns} failed: {err}")
        return json.loads(out)
