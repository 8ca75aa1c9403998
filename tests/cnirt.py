"""A container runtime's side of CNI, for the tests: a node network namespace, a network namespace per pod,
and the plugins of a conflist run exactly as a runtime runs them (libcni's order, environment and stdin).

The plugins are Debian's containernetworking-plugins (/usr/lib/cni: ptp, bridge, host-local,
loopback) and policyc-cni as `python -m policyc.cni install` writes it. Everything runs inside the
node namespace (``<prefix>-node``), as a runtime runs plugins in the host's: the host sides of the
veths, the bridge and the agent live there, so the machine's own namespace is never touched. Names
start with the prefix; ``Node`` removes every namespace, process, pin and file it made, also after
a failure, and at start whatever a crashed run left under the same prefix.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from netmodel import AGENT as NETAGENT, NETNS_DIR, kill_all, policyc_env, remove_netns, run
from policyc.agent.client import AgentError, AgentUnavailable, Client

CNI_BIN = Path("/usr/lib/cni")
ROOT = Path(__file__).resolve().parents[1]


def plugins_missing() -> str | None:
    missing = [p for p in ("ptp", "bridge", "host-local", "loopback") if not (CNI_BIN / p).exists()]
    return f"containernetworking-plugins lacks {', '.join(missing)} in {CNI_BIN}" if missing else None


def conflist(kind: str, prefix: str, subnet: str, ipam_dir: Path, socket: Path) -> dict:
    """ptp or bridge, then policyc-cni: the examples/cni conflists with the test's names and paths."""
    example = json.loads((ROOT / "examples" / "cni" / f"10-{kind}-policyc.conflist").read_text())
    main, policyc = example["plugins"]
    main["ipam"].update(ranges=[[{"subnet": subnet}]], dataDir=str(ipam_dir))
    main["ipMasq"] = False  # no iptables in the test node: pods only talk to each other
    if kind == "bridge":
        main["bridge"] = f"{prefix}br0"
    policyc["agentSocket"] = str(socket)
    return {**example, "name": f"{prefix}-{kind}", "plugins": [main, policyc]}


@dataclass
class Result:
    code: int
    out: dict | None
    err: str


@dataclass
class Pod:
    namespace: str
    name: str
    netns: str
    container: str
    result: dict = field(default_factory=dict)

    @property
    def display(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ip(self) -> str:
        return self.result["ips"][0]["address"].split("/")[0]

    @property
    def host_veth(self) -> str:
        return next(i["name"] for i in self.result["interfaces"]
                    if not i.get("sandbox") and i["name"].startswith("veth"))


class Node:
    """The node namespace, the CNI bin and config, the agent process and the pods."""

    def __init__(self, workdir: Path, prefix: str = "pcc"):
        self.prefix = prefix
        self.netns = f"{prefix}-node"
        self.workdir = Path(workdir)
        self.bin = self.workdir / "cni-bin"
        self.socket = self.workdir / "agent.sock"
        self.ipam = self.workdir / "ipam"
        self.pods: dict[str, Pod] = {}
        self.procs: list[subprocess.Popen] = []
        self.agent: subprocess.Popen | None = None
        self.agent_log = self.workdir / "agent.log"
        self.counter = 0

    def __enter__(self) -> "Node":
        self.cleanup()
        try:
            run(["ip", "netns", "add", self.netns])
            self.nsexec(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            self.nsexec(["ip", "link", "set", "lo", "up"])
            self.bin.mkdir(parents=True, exist_ok=True)
            for plugin in CNI_BIN.iterdir():
                (self.bin / plugin.name).symlink_to(plugin)
            run([sys.executable, "-m", "policyc.cni", "install", str(self.bin)], check=True)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        kill_all(self.procs)
        self.procs.clear()
        self.cleanup()

    def cleanup(self) -> None:
        """Namespaces named with the prefix, their processes, pins and state (also a crashed run's)."""
        for path in sorted(NETNS_DIR.glob(f"{self.prefix}-*")) if NETNS_DIR.is_dir() else ():
            if path.name != self.netns:
                remove_netns(path.name)
        for pins in sorted(Path("/sys/fs/bpf/policyc").glob(f"{self.prefix}*")):
            subprocess.run(self.in_node([sys.executable, "-m", "policyc.cli", "unload", pins.name]),
                           capture_output=True, env=policyc_env(), timeout=60)
        if (NETNS_DIR / self.netns).exists():
            remove_netns(self.netns)
        state = Path(os.environ.get("POLICYC_STATE_DIR", "/run/policyc"))
        for path in state.glob(f"{self.prefix}*"):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        shutil.rmtree(state / "artifacts" / f"{self.prefix}test", ignore_errors=True)

    # -- processes in the node -------------------------------------------------------------
    def in_node(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", *argv]

    def nsexec(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return run(self.in_node(argv), **kw)

    def policyc(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.in_node([sys.executable, "-m", "policyc.cli", *args]), capture_output=True,
                              text=True, timeout=timeout, env=self.env())

    def env(self) -> dict:
        return {**policyc_env(), "POLICYC_AGENT_SOCKET": str(self.socket)}

    def start_agent(self, name: str, artifact: Path, *args: str, wait: bool = True) -> subprocess.Popen:
        """`policyc agent NAME` in the node; returns once its socket answers (or it died)."""
        log = open(self.agent_log, "a")
        self.agent = subprocess.Popen(self.in_node([sys.executable, "-m", "policyc.cli", "agent", name,
                                                    "--artifact", str(artifact), "--socket", str(self.socket),
                                                    "--poll", "0.2", *args]),
                                      stdout=log, stderr=log, env=self.env())
        self.procs.append(self.agent)
        if wait:
            self.wait_agent()
        return self.agent

    def wait_agent(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.agent.poll() is not None:
                raise RuntimeError(f"the agent exited {self.agent.returncode}: {self.agent_log.read_text()[-3000:]}")
            try:
                if Client(str(self.socket), timeout=2).call("GET", "/v1/health")["ready"]:
                    return
            except (AgentUnavailable, AgentError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the agent did not answer within {timeout} s: {self.agent_log.read_text()[-3000:]}")

    def stop_agent(self, sig: int = signal.SIGTERM) -> int:
        self.agent.send_signal(sig)
        code = self.agent.wait(timeout=30)
        return code

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.agent_log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    # -- CNI -------------------------------------------------------------------------------
    def exec_plugin(self, plugin: str, command: str, conf: dict, pod: Pod, ifname: str = "eth0",
                    args: str | None = None) -> Result:
        """One plugin as libcni runs it: environment, config on stdin, JSON on stdout."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": pod.container, "CNI_NETNS": str(NETNS_DIR / pod.netns), "CNI_IFNAME": ifname,
               "CNI_PATH": str(self.bin),
               "CNI_ARGS": args if args is not None else
               f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};"
               f"K8S_POD_INFRA_CONTAINER_ID={pod.container}"}
        proc = subprocess.run(self.in_node([str(self.bin / plugin)]), input=json.dumps(conf), capture_output=True,
                              text=True, env=env, timeout=120)
        try:
            out = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            out = {"unparsed": proc.stdout}
        return Result(proc.returncode, out, proc.stderr)

    def derived(self, net: dict, plugin: dict, prev: dict | None) -> dict:
        """The execution configuration of one plugin (SPEC.md section 3)."""
        conf = {k: v for k, v in plugin.items() if k != "capabilities"}
        conf.update(cniVersion=net["cniVersion"], name=net["name"])
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def new_pod(self, display: str) -> Pod:
        ns, name = display.split("/")
        self.counter += 1
        pod = Pod(ns, name, f"{self.prefix}-{ns}-{name}", f"{self.prefix}c{self.counter:04d}{ns}{name}")
        run(["ip", "netns", "add", pod.netns])
        return pod

    def add(self, net: dict, pod: Pod, args: str | None = None) -> Result:
        """ADD through the chain; on failure the runtime deletes what was added (spec: DEL after a failed ADD)."""
        prev = None
        for plugin in net["plugins"]:
            res = self.exec_plugin(plugin["type"], "ADD", self.derived(net, plugin, prev), pod, args=args)
            if res.code != 0:
                self.delete(net, pod, prev)
                return res
            prev = res.out
        pod.result = prev
        self.pods[pod.display] = pod
        return Result(0, prev, "")

    def delete(self, net: dict, pod: Pod, prev: dict | None = None) -> list[Result]:
        prev = pod.result if prev is None else prev
        return [self.exec_plugin(p["type"], "DEL", self.derived(net, p, prev or None), pod)
                for p in reversed(net["plugins"])]

    def check(self, net: dict, pod: Pod) -> list[Result]:
        return [self.exec_plugin(p["type"], "CHECK", self.derived(net, p, pod.result), pod) for p in net["plugins"]]

    # -- traffic ---------------------------------------------------------------------------
    def spawn(self, pod: Pod, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(["nsenter", f"--net={NETNS_DIR / pod.netns}", sys.executable, str(NETAGENT), *argv],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def serve(self, pod: Pod, *ports: int) -> subprocess.Popen:
        proc = self.spawn(pod, ["serve", pod.display, *map(str, ports)])
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"server in {pod.display} did not start: {line!r} {proc.stderr.read()}")
        return proc

    def probe(self, src: Pod, flows: list[tuple[str, int, str]], timeout: float = 0.4) -> list[str]:
        """Verdicts (allow / deny / error) of ``[(address, port, "TCP"|"UDP")]`` from ``src``."""
        proc = self.spawn(src, ["probe", str(timeout)])
        out, err = proc.communicate(json.dumps([list(f) for f in flows]), timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"prober in {src.display} failed: {err}")
        return [v for v, _ in json.loads(out)]
