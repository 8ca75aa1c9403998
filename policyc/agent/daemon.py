"""The node agent: one resident process per node in front of the runtime operations (docs/agent.md).

It loads (or, after a restart, adopts from the pins) one named artifact and keeps what a change
needs in memory: the parsed sources and evaluator (endpoints.load_sources) and the pods, classes
and numbers (endpoints.Catalog).  Endpoint changes, CNI registrations and artifact replaces all go
through the same operations as the CLI (endpoints.change, loader.load); the agent adds no datapath
logic of its own.  It never unloads: stopping, crashing or upgrading it leaves every pin, hook and
map in place, and the next agent adopts them.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..bpf_runtime import bpffs
from ..bpf_runtime.endpoints import Catalog, Extra, catalog_of, change, named_ports
from ..bpf_runtime.libbpf import BPFError
from ..bpf_runtime.loaded import loaded_state, manifest_of
from ..bpf_runtime.loader import Request, load, unload
from ..bpf_runtime.observe import observe
from ..bpf_runtime.state import STATE_DIR, name_lock, read_state, state_version
from ..bpf_runtime.status import collect
from ..compiler.diagnostics import PolicycError
from ..compiler.inventory import own_labels
from ..compiler.ir import pending_scope
from . import artifacts, watch
from .labels import Book, read_book, read_directory
from .web import AgentMetrics

REGISTRY_FORMAT = "policyc-cni/1"


@dataclass(frozen=True)
class Config:
    name: str
    artifact_dir: Path
    inventory: tuple[Path, ...] = ()
    inventory_dir: Path | None = None
    node_name: str | None = None
    node_ips: tuple[str, ...] = ()
    tc_mode: str = "tcx"
    xdp: str | None = None
    xdp_mode: str = "auto"
    poll: float = 1.0
    state_dir: Path = STATE_DIR


class Refusal(Exception):
    """A request the agent turns down; ``code`` names why (docs/agent.md, API), ``status`` is HTTP's."""

    def __init__(self, message: str, code: str, status: int = 400):
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


@dataclass(frozen=True)
class Registration:
    """A pod the CNI plugin registered: its container, the interface in it, the host side of its veth."""

    pod: str
    container: str
    ifname: str
    iface: str
    ifindex: int
    ips: tuple[str, ...]
    netns: str = ""


@dataclass
class ArtifactStatus:
    source: str
    in_force: str | None = None           # manifest sha256
    path: str | None = None               # the verified copy loaded
    since: float | None = None
    refused: dict | None = None           # {sha256, reason, at}
    history: list = field(default_factory=list)  # staged copies kept: in force, and the one before


def reason(exc: BaseException) -> str:
    if isinstance(exc, PolicycError):
        return "; ".join(d.message for d in exc.diagnostics)
    return str(exc)


class Agent:
    def __init__(self, config: Config, log: logging.Logger):
        self.config = config
        self.log = log
        self.lock = threading.RLock()
        self.state = None
        self.features: dict = {}
        self.catalog: Catalog | None = None
        self.unreadable: str | None = None  # why the catalog of the artifact in force could not be built
        self.version = None
        self.artifact = ArtifactStatus(str(config.artifact_dir))
        self.seen_artifact = None
        self.given = read_book(list(config.inventory), "default")  # a bad file stops the start: exit 2
        self.directory = Book()
        self.seen_directory = None
        self.inventory_error: str | None = None
        self.registry: dict[str, Registration] = {}
        self.started = time.time()
        self.serving = False
        self.metrics = AgentMetrics(self._statuses)

    # ---- files -------------------------------------------------------------------------------
    @property
    def store(self) -> Path:
        return self.config.state_dir / "artifacts" / self.config.name

    @property
    def registry_path(self) -> Path:
        return self.config.state_dir / f"{self.config.name}.cni.json"

    def _save_registry(self) -> None:
        path = self.registry_path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": REGISTRY_FORMAT, "pods": {p: asdict(r) for p, r in self.registry.items()}},
                                  indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def _load_registry(self) -> None:
        try:
            data = json.loads(self.registry_path.read_text())
            if data.get("format") == REGISTRY_FORMAT:
                self.registry = {p: Registration(**{**r, "ips": tuple(r["ips"])}) for p, r in data["pods"].items()}
        except (OSError, ValueError, TypeError, KeyError):
            self.registry = {}

    # ---- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Adopt what is pinned (or load the watched artifact), read the inventory, register nothing new."""
        bpffs.ensure_bpffs()
        name = self.config.name
        pins = bpffs.pin_dir(bpffs.check_name(name))
        if pins.is_dir() and read_state(name) is None:
            self.log.error("pins without a state file (a load that crashed): unloading them to start clean",
                           extra={"fields": {"name": name}})
            unload(name)
        self._load_registry()
        with self.lock:
            if pins.is_dir():
                self._reload()
                self.artifact.in_force, self.artifact.path = self.state.manifest_sha256, self.state.artifact
                self.artifact.since = self.state.loaded_at
                self.metrics.set_artifact(self.state.manifest_sha256)
                self.log.info("adopted the policy in force", extra={"fields": {
                    "name": name, "artifact": self.state.artifact, "sha256": self.state.manifest_sha256,
                    "attachments": len(self.state.attachments), "runtime_changes": len(self.state.runtime)}})
            self.poll()

    @property
    def ready(self) -> bool:
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        if self.state is None:
            return False, "no policy in force yet" + (f" ({self.artifact.refused['reason']})"
                                                      if self.artifact.refused else "")
        if self.catalog is None:
            return False, f"the artifact in force cannot be changed by this agent: {self.unreadable}"
        return (True, "ok") if self.serving else (False, "API socket not serving yet")

    def run(self, stop: threading.Event) -> None:
        """Poll the watched directories until ``stop``; every failure is logged, none ends the loop."""
        while not stop.wait(self.config.poll):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the agent outlives a bad poll; the next one tries again
                self.log.exception("poll failed")

    def poll(self) -> None:
        with self.lock:
            self._notice_unload()
            self._poll_inventory()
            self._poll_artifact()
            self._collect_gone()
            self._count()

    # ---- state -------------------------------------------------------------------------------
    def _reload(self) -> None:
        """Read the state and build the catalog again (after a replace, or a change by another process).

        An artifact in force that this policyc cannot lower for (compiled by another version: its
        sources give another rule count) stays in force untouched; no change is possible until the
        watched directory brings one it can read, which a replace takes over as usual."""
        self.state = loaded_state(self.config.name)
        self.features = manifest_of(self.state)["features"]
        self.version = state_version(self.config.name)
        try:
            self.catalog, self.unreadable = catalog_of(self.state, self.features), None
        except PolicycError as exc:
            self.catalog, self.unreadable = None, reason(exc)
            self.log.error("the artifact in force cannot be changed by this agent; it stays in force until the "
                           "watched directory brings one this version reads", extra={"fields": {
                               "artifact": self.state.artifact, "reason": self.unreadable}})

    def _notice_unload(self) -> None:
        """`policyc unload` by another process took the policy away: forget it, and load the watched
        artifact again on this poll (what the next agent would do), with its registered pods re-attached.
        The agent exists to keep the watched policy in force; removing policy from a node means
        stopping the agent first (docs/agent.md)."""
        if self.state is None or read_state(self.config.name) is not None:
            return
        self.log.warning("the policy in force was unloaded by another process: loading the watched artifact "
                         "again", extra={"fields": {"name": self.config.name, "artifact": self.state.artifact}})
        self.metrics.artifact_loads.labels("unloaded-elsewhere").inc()
        self.state = self.catalog = self.version = None
        self.artifact.in_force = None
        self.seen_artifact = None

    def _fresh(self) -> None:
        """Under the name lock: pick up what another process (`policyc endpoint` without the agent,
        `policyc load`, `policyc unload`) changed since this agent last wrote."""
        self._notice_unload()
        if self.state is None:
            raise Refusal("no policy in force yet: the agent is waiting for a valid artifact in "
                          f"{self.config.artifact_dir}", "not-ready", 503)
        if state_version(self.config.name) != self.version:
            self._reload()
        if self.catalog is None:
            raise Refusal(f"the artifact in force cannot be changed by this agent: {self.unreadable}",
                          "not-ready", 503)

    def _change(self, op: str, endpoint: str, ips=None, labels=None, sa=None, attach=None, extra=Extra(),
                ports=None):
        """endpoints.change with the agent's catalog, under the name lock."""
        with name_lock(self.config.name):
            self._fresh()
            try:
                return change(self.state, self.features, op, endpoint, ips, labels, sa, attach,
                              catalog=self.catalog, extra=extra, ports=ports)
            finally:
                self.version = state_version(self.config.name)

    # ---- the artifact ------------------------------------------------------------------------
    def _poll_artifact(self) -> None:
        fp = watch.fingerprint(self.config.artifact_dir)
        if fp == self.seen_artifact:
            return
        self.seen_artifact = fp
        sha = artifacts.manifest_sha256(self.config.artifact_dir)
        if self.state is not None and sha == self.state.manifest_sha256:
            self._refusal_cleared()
            return
        try:
            staged = artifacts.stage(self.config.artifact_dir, self.store)
        except artifacts.Refused as exc:
            self._refuse(sha, str(exc))
            return
        except OSError as exc:
            self._refuse(sha, f"cannot copy the artifact to {self.store}: {exc.strerror or exc}")
            return
        replacing = self.state is not None
        start = time.perf_counter()
        try:
            req = Request(staged.path, self.config.name, (), None if replacing else self.config.xdp,
                          self.config.xdp_mode, self.config.node_ips, self.config.tc_mode)
            result = load(req)
        except (PolicycError, BPFError, OSError) as exc:
            self._refuse(staged.sha256, reason(exc))
            return
        previous = self.artifact.in_force
        self._reload()
        self.artifact.in_force, self.artifact.path, self.artifact.since = staged.sha256, str(staged.path), time.time()
        self.artifact.history = [s for s in (staged.sha256, previous) if s]
        artifacts.prune(self.store, set(self.artifact.history))
        self._refusal_cleared()
        self.metrics.artifact_loads.labels("replaced" if replacing else "loaded").inc()
        self.metrics.set_artifact(staged.sha256)
        self.log.info("replaced the artifact" if replacing else "loaded the artifact", extra={"fields": {
            "sha256": staged.sha256, "path": str(staged.path), "seconds": round(time.perf_counter() - start, 4),
            "conntrack_kept": result.conntrack_kept, "conntrack_dropped": result.conntrack_dropped}})
        self._reconcile()

    def _refuse(self, sha: str | None, reason: str) -> None:
        self.artifact.refused = {"sha256": sha, "reason": reason, "at": time.time()}
        self.metrics.artifact_loads.labels("refused").inc()
        self.metrics.artifact_refused.set(1)
        self.log.error("refused the artifact in the watched directory; the one in force stays", extra={"fields": {
            "directory": str(self.config.artifact_dir), "sha256": sha, "reason": reason,
            "in_force": self.artifact.in_force}})

    def _refusal_cleared(self) -> None:
        self.artifact.refused = None
        self.metrics.artifact_refused.set(0)

    # ---- labels ------------------------------------------------------------------------------
    @property
    def book(self) -> Book:
        return self.directory.over(self.given)

    def _poll_inventory(self) -> None:
        directory = self.config.inventory_dir
        if directory is None:
            return
        fp = watch.fingerprint(directory)
        if fp == self.seen_directory:
            return
        try:
            book = read_directory(directory, "default")
        except PolicycError as exc:  # a file being rewritten, or a bad one: keep what was read before
            self.inventory_error = reason(exc)
            self.metrics.inventory_errors.inc()
            self.log.error("cannot read the inventory directory; the labels read before stay",
                           extra={"fields": {"directory": str(directory), "reason": self.inventory_error}})
            return
        self.seen_directory = fp
        before, self.directory, self.inventory_error = self.directory, book, None
        self.log.info("read the inventory directory", extra={"fields": {
            "directory": str(directory), "pods": len(book.pods), "namespaces": len(book.namespaces)}})
        if self.state is not None:
            self._reconcile(gone=set(before.pods) - set(book.pods))

    def _wanted(self, pod: str) -> tuple[dict, str, Extra, tuple | None]:
        """(labels, service account, extra, named ports) a pod should have: the book's; else the artifact's
        when it compiled the pod; else pending (its namespace's labels only, docs/agent.md).  Ports None:
        whatever the catalog has (the compiled pod's, or none)."""
        ns = pod.split("/", 1)[0]
        ns_labels = self.book.namespaces.get(ns)
        facts = self.book.pods.get(pod)
        known_ns = ns_labels is not None or ns in self.catalog.src.inventory.namespaces
        if facts is not None and known_ns:
            return facts.labels, facts.service_account, Extra(ns_labels), facts.ports
        compiled = self.catalog.pods.get(pod)
        if compiled is not None and not pending_scope(compiled.endpoint.identity.labels):
            return (own_labels(compiled.endpoint.identity.labels), compiled.endpoint.service_account,
                    Extra(ns_labels), None)
        return {}, "default", Extra(ns_labels, "pod" if known_ns else "namespace"), None

    def _differs(self, pod: str, ips: tuple[str, ...], labels: dict, sa: str, extra: Extra, ports) -> bool:
        have = self.catalog.pods.get(pod)
        if have is None:
            return True
        want = self.catalog.identity_labels(pod, labels, sa, extra)
        return (have.endpoint.identity.labels != want or sorted(map(str, have.endpoint.ips)) != sorted(ips)
                or (ports is not None and set(have.endpoint.ports) != set(ports)))

    def _reconcile(self, gone: set[str] = frozenset()) -> None:
        """Bring every pod the agent knows to what it should be: local (CNI) pods to the book's labels and
        onto their hooks (a load after `policyc unload` has none), other nodes' pods (from the inventory
        directory) to their labels and addresses."""
        if self.catalog is None:
            return
        for pod in sorted(self.registry):
            reg = self.registry[pod]
            labels, sa, extra, ports = self._wanted(pod)
            attach = reg.iface if self._unhooked(reg) else None
            if attach or self._differs(pod, reg.ips, labels, sa, extra, ports):
                op = "relabel" if pod in self.catalog.pods else "add"
                self._try(op, pod, list(reg.ips), labels, sa, extra, ports, attach)
        if self.config.inventory_dir is None:
            return
        for pod, facts in sorted(self.directory.pods.items()):
            if pod in self.registry or not facts.ips or (self.config.node_name and facts.node == self.config.node_name):
                continue  # the CNI plugin is the authority for this node's pods and their addresses
            labels, sa, extra, ports = self._wanted(pod)
            if extra.pending is None and self._differs(pod, facts.ips, labels, sa, extra, ports):
                self._try("relabel" if pod in self.catalog.pods else "add", pod, list(facts.ips), labels, sa, extra,
                          ports)
        for pod in sorted(gone - set(self.registry)):
            if pod in self.catalog.pods:
                self._try("remove", pod)

    def _unhooked(self, reg: Registration) -> bool:
        """A registered pod whose veth is there (the same interface) but carries none of its hooks."""
        return _alive(reg) and not any(a.endpoint == reg.pod and a.hook != "xdp" for a in self.state.attachments)

    def _try(self, op: str, pod: str, ips=None, labels=None, sa=None, extra=Extra(), ports=None,
             attach: str | None = None) -> None:
        try:
            result = self._change(op, pod, ips, labels, sa, attach, extra=extra, ports=ports)
            self.log.info(f"{op} {pod}", extra={"fields": {"identity": result.identity, "pending": extra.pending,
                                                             "attached": attach,
                                                             "seconds": round(result.seconds_total, 5)}})
        except (PolicycError, BPFError, OSError) as exc:
            self.log.error(f"cannot {op} {pod}", extra={"fields": {"reason": reason(exc)}})

    # ---- CNI ---------------------------------------------------------------------------------
    def cni_add(self, req: dict) -> dict:
        start = time.perf_counter()
        pod, container, ifname = _pod(req), _text(req, "container_id"), _text(req, "ifname")
        ips = _ips(req)
        iface = _host_veth(req)
        with self.lock:
            if self.catalog is None:
                self._fresh()  # refuses: no policy in force, or one this agent cannot change
            reg = self.registry.get(pod)
            if reg is not None and (reg.container, reg.ifname) == (container, ifname):
                raise Refusal(f"{pod}: container {container} interface {ifname} is registered already "
                              f"(on {reg.iface}); DEL it first", "duplicate", 409)
            if reg is not None and reg.container == container:
                raise Refusal(f"{pod}: container {container} is registered already with interface {reg.ifname} "
                              f"(on {reg.iface}); policyc enforces one interface per pod, so a second one "
                              f"({ifname}) is refused rather than left unfiltered or taking the first's policy away",
                              "second-interface", 409)
            if reg is not None:  # a new sandbox of the same pod: the old one's hooks and addresses go first
                self.log.info(f"{pod}: a new container replaces {reg.container}", extra={"fields": {"new": container}})
                self._unregister(reg)
            self._evict(pod, ips)
            labels, sa, extra, ports = self._wanted(pod)
            op = "relabel" if pod in self.catalog.pods else "add"
            result = self._change(op, pod, list(ips), labels, sa, iface, extra, ports)
            self.registry[pod] = Registration(pod, container, ifname, iface, socket.if_nametoindex(iface), ips,
                                              str(req.get("netns", "")))
            lowered = result.seconds_total
            self._save_registry()
            self._count()
        record = self.catalog.records.get(pod, {})
        self.log.info(f"registered {pod}", extra={"fields": {
            "container": container, "iface": iface, "ips": list(ips), "identity": result.identity,
            "pending": extra.pending, "lockdown": bool(record.get("lockdown")),
            "seconds": round(time.perf_counter() - start, 5), "seconds_maps": round(lowered, 5)}})
        return {"endpoint": pod, "iface": iface, "ips": list(ips), "identity": result.identity,
                "policy_id": result.policy_id, "pending": extra.pending, "lockdown": bool(record.get("lockdown"))}

    def _evict(self, pod: str, ips: tuple[str, ...]) -> None:
        """An address the CNI plugin just gave ``pod`` is the pod's: a record of another pod holding it is
        stale (a pod of another node or of an old artifact), unless that pod is registered here too."""
        for ip in ips:
            holder = self.catalog.by_ip.get(ipaddress.ip_address(ip))
            if holder is None or holder == pod:
                continue
            if holder in self.registry:
                raise Refusal(f"{pod}: address {ip} is registered for {holder} on this node "
                              f"({self.registry[holder].iface}); two pods cannot hold one address",
                              "address-in-use", 409)
            self.log.info(f"{holder} held {ip}, now {pod}'s: removing the stale record")
            self._change("remove", holder)

    def _unregister(self, reg: Registration) -> None:
        if self.catalog is None:
            self._fresh()
        if reg.pod in self.catalog.pods:
            self._change("remove", reg.pod)
        self.registry.pop(reg.pod, None)
        self._save_registry()

    def cni_del(self, req: dict) -> dict:
        container, ifname = _text(req, "container_id"), _text(req, "ifname")
        with self.lock:
            reg = next((r for r in self.registry.values() if (r.container, r.ifname) == (container, ifname)), None)
            if reg is None:
                return {"deleted": False}  # DEL is idempotent: nothing of this container is here (any more)
            if self.state is None:  # no policy in force (unloaded): nothing to undo but the registration
                self.registry.pop(reg.pod)
                self._save_registry()
            else:
                self._unregister(reg)
            self._count()
        self.log.info(f"unregistered {reg.pod}", extra={"fields": {"container": container, "iface": reg.iface}})
        return {"deleted": True, "endpoint": reg.pod}

    def cni_check(self, req: dict) -> dict:
        container, ifname = _text(req, "container_id"), _text(req, "ifname")
        with self.lock:
            reg = next((r for r in self.registry.values() if (r.container, r.ifname) == (container, ifname)), None)
            if reg is None:
                raise Refusal(f"container {container} interface {ifname} is not registered with policyc",
                              "unknown-container", 404)
            problems = self._problems(reg, _ips(req))
        if problems:
            raise Refusal(f"{reg.pod}: " + "; ".join(problems), "check-failed", 409)
        return {"endpoint": reg.pod, "iface": reg.iface, "ok": True}

    def _problems(self, reg: Registration, ips: tuple[str, ...]) -> list[str]:
        out = [] if _alive(reg) else [f"{reg.iface} is gone (or another interface took its name)"]
        hooks = {a.hook for a in self.state.attachments if a.endpoint == reg.pod
                 and (Path(a.pin).exists() or Path(a.pin).is_symlink())}
        out += [f"no {h} hook on {reg.iface}" for h in ("ingress", "egress") if h not in hooks]
        have = self.catalog.pods.get(reg.pod) if self.catalog else None
        if have is None:
            out.append("not an endpoint of the loaded policy")
        elif sorted(map(str, have.endpoint.ips)) != sorted(ips):
            out.append(f"its addresses are {', '.join(map(str, have.endpoint.ips))}, prevResult says {', '.join(ips)}")
        return out

    def _collect_gone(self) -> None:
        """Pods whose host-side veth went away without a DEL (the runtime lost it, the agent was down)."""
        for reg in list(self.registry.values()):
            if not _alive(reg) and self.catalog is not None:
                self.log.info(f"{reg.pod}: its interface {reg.iface} is gone; unregistering")
                try:
                    self._unregister(reg)
                except (PolicycError, BPFError, OSError) as exc:
                    self.log.error(f"cannot unregister {reg.pod}", extra={"fields": {"reason": reason(exc)}})

    # ---- the CLI's requests ------------------------------------------------------------------
    def endpoint(self, req: dict) -> dict:
        """`policyc endpoint add|remove|relabel` through the agent: the same operation, its catalog."""
        op = _text(req, "op")
        if op not in ("add", "remove", "relabel"):
            raise Refusal(f"unknown endpoint operation {op!r}", "bad-request")
        endpoint = _text(req, "endpoint")
        with self.lock:
            before = {a.iface for a in self.state.attachments if a.endpoint == endpoint} if self.state else set()
            result = self._change(op, endpoint, req.get("ips"), req.get("labels"), req.get("service_account"),
                                  req.get("attach"), ports=_ports(req))
            hooks = [a for a in self.state.attachments if a.endpoint == endpoint]
            if op == "remove" and self.registry.pop(endpoint, None) is not None:
                self._save_registry()  # removed by hand: the CNI plugin's registration goes with it
        return {**asdict(result), "attachments": [a.as_dict() for a in hooks],
                "detached": sorted(before - {a.iface for a in hooks})}

    def status(self) -> dict:
        with self.lock:
            agent = self._agent_status()
        return {"agent": agent, "loaded": self._collect()}

    def _collect(self) -> dict | None:
        """`status` of the loaded name, read without the agent's lock (it walks every map: a scrape must not
        hold up a pod's registration); a replace moving the pins meanwhile is retried under the lock."""
        state = self.state
        if state is None:
            return None
        try:
            return collect(state)
        except (PolicycError, BPFError, OSError):
            with self.lock:
                return collect(self.state)

    def _agent_status(self) -> dict:
        records = self.catalog.records if self.catalog else {}
        pending = sorted(p for p in self.registry if records.get(p, {}).get("pending"))
        return {"name": self.config.name, "pid": os.getpid(), "started_at": self.started, "ready": self.ready,
                "artifact": asdict(self.artifact),
                "endpoints": {"cni": len(self.registry), "pending": pending,
                              "lockdown": [p for p in pending if records[p].get("lockdown")]},
                "inventory": {"files": [str(p) for p in self.config.inventory],
                              "directory": str(self.config.inventory_dir) if self.config.inventory_dir else None,
                              "pods": len(self.book.pods), "namespaces": len(self.book.namespaces),
                              "error": self.inventory_error}}

    def observe(self, emit, follow: bool, timeout: float | None, verdict: str | None) -> int:
        with self.lock:
            self._fresh()
            state = self.state
        return observe(state, emit, follow, timeout, verdict)

    # ---- metrics -----------------------------------------------------------------------------
    def _statuses(self) -> list[dict]:
        loaded = self._collect()
        return [loaded] if loaded is not None else []

    def _count(self) -> None:
        records = self.catalog.records if self.catalog else {}
        pending = [p for p in self.registry if records.get(p, {}).get("pending")]
        locked = [p for p in pending if records[p].get("lockdown")]
        self.metrics.endpoints.labels("ready").set(len(self.registry) - len(pending))
        self.metrics.endpoints.labels("pending").set(len(pending) - len(locked))
        self.metrics.endpoints.labels("lockdown").set(len(locked))
        self.metrics.ready.set(1 if self.ready else 0)


def _alive(reg: Registration) -> bool:
    """The registered host-side veth is still there: its name answers with the index it had."""
    try:
        return socket.if_nametoindex(reg.iface) == reg.ifindex
    except OSError:
        return False


# ---- request fields ------------------------------------------------------------------------------
def _text(req: dict, key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value:
        raise Refusal(f"{key}: a non-empty string is required", "bad-request")
    return value


def _ports(req: dict):
    """The request's named ports, ``[[name, port, protocol], ...]`` as the state file keeps them."""
    rows = req.get("ports")
    if rows is None:
        return None
    try:
        return named_ports(rows)
    except (TypeError, ValueError, KeyError):
        raise Refusal("ports: a list of [name, port, protocol] is required", "bad-request") from None


def _pod(req: dict) -> str:
    pod = _text(req, "pod")
    if pod.count("/") != 1 or "" in pod.split("/"):
        raise Refusal(f"pod {pod!r}: expected NAMESPACE/NAME", "bad-request")
    return pod


def _ips(req: dict) -> tuple[str, ...]:
    ips = req.get("ips")
    if not isinstance(ips, list) or not ips:
        raise Refusal("ips: the pod's addresses are required (prevResult gave none for its interface)", "bad-request")
    try:
        return tuple(str(ipaddress.ip_address(str(ip).split("/", 1)[0])) for ip in ips)
    except ValueError as exc:
        raise Refusal(f"ips: {exc}", "bad-request") from None


def _driver(iface: str) -> str | None:
    """The kernel driver behind an interface (ethtool's ETHTOOL_GDRVINFO): "veth", "bridge", ..."""
    import array
    import fcntl
    import struct
    info = array.array("B", struct.pack("I", 3) + bytes(192))  # ETHTOOL_GDRVINFO, then struct ethtool_drvinfo
    request = struct.pack("16sP16x", iface.encode()[:15], info.buffer_info()[0])  # struct ifreq
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            fcntl.ioctl(sock.fileno(), 0x8946, request)  # SIOCETHTOOL
        except OSError:
            return None
    return info.tobytes()[4:36].split(b"\0", 1)[0].decode() or None


def _host_veth(req: dict) -> str:
    """The host side of the pod's veth among prevResult's interfaces: no sandbox, driver veth."""
    interfaces = req.get("interfaces")
    if not isinstance(interfaces, list):
        raise Refusal("interfaces: prevResult's interface list is required", "bad-request")
    host = [i.get("name") for i in interfaces if isinstance(i, dict) and i.get("name") and not i.get("sandbox")]
    veths = [name for name in host if _driver(name) == "veth"]
    if len(veths) != 1:
        what = f"{len(veths)} veths" if veths else "no veth"
        raise Refusal(f"prevResult names {what} on the host side (host interfaces: {', '.join(host) or 'none'}); "
                      "policyc-cni must be chained after a plugin that plugs the pod in with a veth "
                      "(ptp, bridge, ...)", "bad-prev-result")
    return veths[0]
