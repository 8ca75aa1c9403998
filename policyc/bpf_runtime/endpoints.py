"""Endpoints at run time: add, remove and relabel pods of a loaded artifact with map updates only.

No clang, no reload: the artifact's sources.json gives back the policy set
and inventory it was compiled from; the new identity's policy entries come
from the same lowering the compiler uses (lower.subject_entries), packed with
the same layouts (mapdata), and are written before the endpoint and ipcache
entries point at the identity, so its policy is in force the moment it
exists.  Conntrack is not touched: established connections keep flowing.

Identities and policy ids are never renumbered: a label set seen before keeps
its number, a new one takes the next free number, and every change is
recorded in the state (journal) so later changes (and observe) see it.

A ``Catalog`` holds what a change needs (the pods, their classes and
identities, the numbers used) and is updated by each change, so a resident
process (the agent) keeps one and pays only for the new identity's lowering;
the CLI builds one per command.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..compiler.artifact import SOURCES
from ..compiler.diagnostics import PolicycError, Severity
from ..compiler.entities import FIRST_CIDR_ID, FIRST_CLUSTER_ID
from ..compiler.evaluate import Evaluator, LabelIndex, PeerBuckets, subject_labels
from ..compiler.frontend import build_policy_set
from ..compiler.inventory import Inventory, build_inventory, own_labels, pod_labels
from ..compiler.ir import (NAMESPACE_NAME_LABEL, SERVICE_ACCOUNT_KEY, Action, Direction, Endpoint, EndpointKind,
                           Identity, NamedPort, PolicySet, Protocol, pending_label, pending_scope)
from ..compiler.layouts import layouts
from ..compiler.lower import (ANY_PEER, LEVEL_ANY, LEVEL_PORT, LEVEL_PROTO, EndpointEntry, PeerIdentity, PeerIndex,
                              PolicyEntry, fallback_levels, peer_identities, subject_entries)
from ..compiler.mapdata import addr_bytes, endpoint_value, ipcache_host_key, policy_key, policy_value
from ..compiler.services import bind as bind_services
from ..compiler.source import parse_text
from .attach import detach, ifindex
from .bindings import bind, bump_revision, set_identity, unbind
from .errors import error
from .hooks import attach_endpoint, check_owners
from .hostaddrs import node_addresses, set_host_identity
from .libbpf import Map
from .loaded import artifact_json, manifest_of
from .state import State, journal_change


def current_pods(state: State) -> dict[str, tuple[list[str], int]]:
    """ns/pod → (addresses, identity) after the runtime changes; cheap (no sources), for naming flows."""
    pods = {e["name"]: (list(e["ips"]), e["identity"]) for e in artifact_json(state, "endpoints.json")}
    for rec in state.runtime:
        if rec["op"] == "remove":
            pods.pop(rec["endpoint"], None)
        else:
            pods[rec["endpoint"]] = (list(rec["ips"]), rec["identity"])
    return pods


def named_ports(rows: list) -> tuple[NamedPort, ...]:
    """The state file's ``[name, port, protocol]`` rows of a runtime pod's named ports."""
    return tuple(NamedPort(name, int(port), Protocol.parse(proto)) for name, port, proto in rows)


@dataclass(frozen=True)
class Sources:
    policy: PolicySet
    inventory: Inventory
    evaluator: Evaluator  # one per artifact: its rule selection per label set is cached across changes
    levels: tuple[int, ...]  # the exact-mode fall-back levels the compiled program tries (lower.fallback_levels)
    peer_rules: PeerBuckets  # the rules a new label set may be a peer of, found from its labels


def load_sources(state: State) -> Sources:
    """The policy set and inventory the artifact was compiled from (sources.json), parsed once per artifact."""
    return _sources(state.artifact, state.manifest_sha256)


@functools.lru_cache(maxsize=4)
def _sources(artifact: str, manifest_sha256: str) -> Sources:
    """Keyed by the manifest's hash: a directory whose content was swapped (a ConfigMap) is read again."""
    path = Path(artifact) / SOURCES
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path}: cannot read ({exc}); runtime endpoint changes need an artifact compiled "
                     "by `policyc compile` (which writes sources.json)") from None
    docs = lambda key: [d for f in data[key] for d in parse_text(f["text"], f["path"])]  # noqa: E731
    result = build_policy_set(docs("policies"), data["cluster"])
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    if errors:
        raise PolicycError(*errors)
    try:
        compiled_rules = len(json.loads((Path(artifact) / "rules.json").read_text()))
    except (OSError, ValueError):
        compiled_rules = -1
    if len(result.policy.rules) != compiled_rules:
        raise error(f"{path}: its policies give {len(result.policy.rules)} rules, rules.json lists a different "
                     "number; recompile the artifact with this policyc version")
    inventory = build_inventory(docs("inventory"), data["cluster"])
    policy = bind_services(result.policy, inventory.services)
    return Sources(policy, inventory, Evaluator(policy), fallback_levels(policy.rules), PeerBuckets(policy.rules))


@dataclass(frozen=True)
class Pod:
    endpoint: Endpoint
    endpoint_id: int
    policy_id: int


def _labels(src: Sources, ns: str, labels: dict, service_account: str, rec: dict) -> frozenset:
    """The identity labels of a pod: its own, its namespace's (the record's, else the artifact's), its
    service account; a pending pod (``rec["pending"]``) has only what its namespace gives, plus the marker."""
    pending = rec.get("pending")
    ns_labels = rec.get("namespace_labels") or src.inventory.namespaces.get(ns, {NAMESPACE_NAME_LABEL: ns})
    if pending == "namespace":
        ns_labels = {NAMESPACE_NAME_LABEL: ns}
    full = pod_labels({} if pending else labels, ns, ns_labels, service_account, src.inventory.cluster)
    if pending:
        full = frozenset(lab for lab in full if lab.key != SERVICE_ACCOUNT_KEY) | {pending_label(pending)}
    return full


def _class_key(ep: Endpoint) -> tuple:
    return subject_labels(ep), ep.ports


class Catalog:
    """Every pod of a loaded name as its maps hold them, with the classes, identities and numbers a change needs.

    Built from the artifact's pods and the recorded changes (linear in pods); ``apply`` then keeps it
    right change by change.  Numbers only grow: a number that fell out of use may still have entries in
    the policy map, and a new label set must not inherit them.
    """

    def __init__(self, state: State, src: Sources, features: dict):
        self.src = src
        self.features = features
        self.pods: dict[str, Pod] = {}
        self.records: dict[str, dict] = {}  # the last run-time record of each pod changed at run time
        self.by_ip: dict = {}
        self.holders: dict[frozenset, set[str]] = {}      # identity labels → pods holding them now
        self.port_counts: dict[frozenset, Counter] = {}   # identity labels → its holders' named ports, counted
        self.classes: dict[tuple, tuple[int, set[str]]] = {}  # (subject labels, ports) → (policy id, pods)
        self._peer_of: dict[frozenset, PeerIdentity] = {}    # identity labels → as a peer now (``peers``)
        self._universe: LabelIndex | None = None             # every identity's labels (``label_universe``)
        self.compiled_ids = {i.labels: i.id for i in src.inventory.identities}
        self.top = {"identity": max([255] + [i.id for i in src.inventory.identities if i.id < FIRST_CIDR_ID]),
                    "policy_id": 0, "endpoint_id": 0}
        # reserved, node and CIDR identities as compiled (the ipcache holds their numbers); pods are added below
        self.fixed_peers = {i.id: i for i in peer_identities(src.policy, src.inventory, bool(features.get("ipv6")))
                            if not FIRST_CLUSTER_ID <= i.id < FIRST_CIDR_ID}
        base = {e.display: e for e in src.inventory.pods}
        for row in artifact_json(state, "endpoints.json"):
            self._count(row)
            if row["name"] in base:
                self._put(row["name"], Pod(base[row["name"]], row["endpoint_id"], row["policy_id"]))
        for rec in state.runtime:
            self.apply(rec)

    def _count(self, row: dict) -> None:
        for key in self.top:
            self.top[key] = max(self.top[key], row[key])

    def _put(self, name: str, pod: Pod) -> None:
        self._drop(name)
        labels = pod.endpoint.identity.labels
        self._peer_of.pop(labels, None)
        if self._universe is not None and labels not in self._universe:
            self._universe.add(labels)
        self.pods[name] = pod
        for ip in pod.endpoint.ips:
            self.by_ip[ip] = name
        self.holders.setdefault(pod.endpoint.identity.labels, set()).add(name)
        self.port_counts.setdefault(pod.endpoint.identity.labels, Counter()).update(pod.endpoint.ports)
        self.classes.setdefault(_class_key(pod.endpoint), (pod.policy_id, set()))[1].add(name)

    def _drop(self, name: str) -> None:
        self.records.pop(name, None)
        pod = self.pods.pop(name, None)
        if pod is None:
            return
        for ip in pod.endpoint.ips:
            if self.by_ip.get(ip) == name:
                del self.by_ip[ip]
        labels = pod.endpoint.identity.labels
        self._peer_of.pop(labels, None)
        self.port_counts[labels].subtract(pod.endpoint.ports)
        for table, key in ((self.holders, labels), (self.classes, _class_key(pod.endpoint))):
            members = table[key] if table is self.holders else table[key][1]
            members.discard(name)
            if not members:
                del table[key]
        if labels not in self.holders:
            del self.port_counts[labels]

    def apply(self, rec: dict) -> None:
        """One recorded change (a line of ``State.runtime``)."""
        if rec["op"] == "remove":
            self._drop(rec["endpoint"])
            return
        self._count(rec)
        ns, name = rec["endpoint"].split("/", 1)
        prior = self.pods.get(rec["endpoint"])
        ports = named_ports(rec["ports"]) if "ports" in rec else prior.endpoint.ports if prior else ()
        ep = Endpoint(EndpointKind.POD, name, ns, tuple(ipaddress.ip_address(i) for i in rec["ips"]),
                      Identity(rec["identity"], _labels(self.src, ns, rec["labels"], rec["service_account"], rec)),
                      ports, None, rec["service_account"])
        self._put(rec["endpoint"], Pod(ep, rec["endpoint_id"], rec["policy_id"]))
        self.records[rec["endpoint"]] = rec

    def identity_of(self, labels: frozenset, endpoint: str) -> tuple[int, bool]:
        """(number, held by another pod) for a pod taking ``labels``: a current holder's or the compiled
        number, else the next free one."""
        holder = _another(self.holders.get(labels, ()), endpoint)
        if holder is not None:
            return self.pods[holder].endpoint.identity.id, True
        return self.compiled_ids.get(labels, self.top["identity"] + 1), False

    def other_classes(self, endpoint: str):
        """(policy id, a member's endpoint) of every class with a pod other than ``endpoint``, by class key."""
        for key, (pid, members) in self.classes.items():
            member = _another(members, endpoint)
            if member is not None:
                yield key, pid, self.pods[member].endpoint

    def peers(self, extra: Endpoint | None = None, without: str | None = None) -> tuple[PeerIdentity, ...]:
        """Every identity as a policy peer (what lower.peer_identities gives), optionally as if ``without``
        had left and ``extra`` had come; linear in identities, not pods (named ports are kept counted)."""
        gone = self.pods.get(without) if without else None
        changed: dict[frozenset, Counter | None] = {}  # label sets the change touches → their ports (None: gone)
        if gone is not None:
            labels = gone.endpoint.identity.labels
            changed[labels] = None if self.holders[labels] == {without} else self.held_ports(labels, without)
        if extra is not None:
            labels = extra.identity.labels
            before = changed[labels] if labels in changed else self.port_counts.get(labels)
            changed[labels] = (before or Counter()) + Counter(extra.ports)
        out = dict(self.fixed_peers)
        for labels in self.port_counts:
            if labels not in changed:
                peer = self._peer_of.get(labels)
                if peer is None:
                    peer = self._peer_of[labels] = self._as_peer(labels, self.port_counts[labels])
                out[peer.id] = peer
        for labels, ports in changed.items():
            if ports is not None:
                ident = extra.identity.id if extra is not None and labels == extra.identity.labels else None
                peer = self._as_peer(labels, ports, ident)
                out[peer.id] = peer
        return tuple(out[k] for k in sorted(out))

    def label_universe(self, *more: frozenset) -> LabelIndex:
        """A label index over every identity's labels and ``more``, kept across changes: a relabel to a new
        label set adds one set instead of indexing them all again.  Sets no pod holds any longer stay
        (they match no identity) until they outnumber the held ones; then it is built afresh."""
        held = len(self.port_counts) + len(self.fixed_peers)
        if self._universe is None or len(self._universe.label_sets) > 2 * held + 64:
            self._universe = LabelIndex([*{p.labels for p in self.fixed_peers.values()}, *self.port_counts])
        for labels in more:
            if labels not in self._universe:
                self._universe.add(labels)
        return self._universe

    def _as_peer(self, labels: frozenset, ports: Counter, ident: int | None = None) -> PeerIdentity:
        """The label set as a peer, numbered as its holders are (or ``ident``), with their named ports."""
        if ident is None:
            ident = self.pods[next(iter(self.holders[labels]))].endpoint.identity.id
        return PeerIdentity(ident, labels, None, _sorted_ports(+ports), pending_scope(labels))

    def identity_labels(self, endpoint: str, labels: dict, service_account: str, extra: "Extra") -> frozenset:
        """The identity labels ``endpoint`` would get from a change with these arguments."""
        return _labels(self.src, endpoint.split("/", 1)[0], labels, service_account, extra.fields())

    def held_ports(self, labels: frozenset, without: str) -> Counter:
        """The named ports of the pods other than ``without`` that hold ``labels``, counted."""
        held = self.port_counts.get(labels, Counter())
        gone = self.pods.get(without)
        return held - Counter(gone.endpoint.ports) if gone and gone.endpoint.identity.labels == labels else +held

    def peer(self, ep: Endpoint, held: Counter) -> PeerIdentity:
        """``ep``'s identity as a peer: its named ports and those the other holders have (``held``)."""
        return self._as_peer(ep.identity.labels, held + Counter(ep.ports), ep.identity.id)


def _sorted_ports(counts: Counter) -> tuple:
    return tuple(sorted((p for p, n in counts.items() if n > 0),
                        key=lambda n: (n.name, n.protocol, n.port)))


def _another(members, name: str) -> str | None:
    """A member other than ``name`` (without copying the set: classes hold thousands of pods)."""
    for member in members:
        if member != name:
            return member
    return None


def current(state: State, src: Sources) -> dict[str, Pod]:
    """Every pod now: the artifact's, with the recorded runtime changes applied in order."""
    return Catalog(state, src, manifest_of(state)["features"]).pods


def catalog_of(state: State, features: dict) -> Catalog:
    return Catalog(state, load_sources(state), features)


@dataclass(frozen=True)
class Change:
    """What one endpoint command did, and how long the map updates took."""

    op: str
    endpoint: str
    identity: int
    new_identity: bool
    policy_id: int
    policy_entries: int
    seconds_total: float   # sources, lowering and map updates
    seconds_maps: float    # only the map updates: the time the datapath is in transition


def _level(e: PolicyEntry) -> int:
    return LEVEL_ANY if e.protocol is None else LEVEL_PORT if e.port_bits == 16 else LEVEL_PROTO


def _features_needed(entries: list[PolicyEntry], features: dict, levels: tuple[int, ...]) -> None:
    """Refuse entries the compiled program cannot read (a feature switched off at compile time, or an
    exact-mode fall-back level it never tries)."""
    need = {"deny": any(e.verdict.action is Action.DENY for e in entries),
            "any_peer": any(e.peer == ANY_PEER for e in entries), "l7": any(e.verdict.l7 for e in entries)}
    missing = [k for k, v in need.items() if v and not features.get(k)]
    if missing == ["l7"]:
        raise error("L7 rules select the pod, and policyc has no L7 proxy: recompile with `--l7 l4-only` "
                    "to enforce them as L4 only")
    if not features.get("port_ranges") and any(_level(e) not in levels for e in entries):
        missing.append("port fall-back level")
    if missing:
        raise error(f"the new identity needs datapath features the artifact was compiled without "
                     f"({', '.join(missing)}): recompile with the new pod in the inventory")


def _forget(maps: dict, lay: dict, addrs, addr_len: int) -> None:
    """Delete the endpoint and ipcache entries of ``addrs``: each falls back to its CIDR/world identity."""
    for ip in addrs:
        maps["endpoints"].delete(lay["endpoint_key"].pack(addr=addr_bytes(ip, addr_len)))
        maps["ipcache_hosts"].delete(ipcache_host_key(lay, ip, addr_len))


def _check_attach(state: State, endpoint: str, iface: str) -> None:
    """Before any map update: the interface exists and no hook of this or another policyc name holds it."""
    ifindex(iface)
    check_owners(state.name, [iface])
    mine = next((a for a in state.attachments if a.iface == iface and a.hook != "xdp"), None)
    if mine is not None:
        raise error(f"--attach {iface}: {state.name} has its hooks there already (for {mine.endpoint}); "
                     f"one interface carries one pod (`policyc endpoint remove {state.name} {mine.endpoint}` first)")
    hooked = sorted({a.iface for a in state.attachments if a.endpoint == endpoint and a.hook != "xdp"})
    if hooked:
        raise error(f"--attach {iface}: {endpoint} is hooked on {hooked[0]} already (one pod, one interface)")


@dataclass(frozen=True)
class Extra:
    """What the node agent adds to a change: the namespace's labels as it knows them (a namespace newer
    than the artifact), and a pending pod's scope (ir.pending_scope: its labels are not known yet)."""

    namespace_labels: dict | None = None
    pending: str | None = None

    def fields(self) -> dict:
        return {k: v for k, v in (("namespace_labels", self.namespace_labels), ("pending", self.pending)) if v}


def change(state: State, features: dict, op: str, endpoint: str, ips: list[str] | None = None,
           labels: dict | None = None, service_account: str | None = None, attach: str | None = None,
           save: bool = True, catalog: Catalog | None = None, extra: Extra = Extra(),
           ports: tuple[NamedPort, ...] | None = None) -> Change:
    """Apply add / remove / relabel of ``endpoint`` to the pinned maps and record it in the state.

    ``attach`` (add or relabel) puts from_pod/to_pod on the pod's host-side veth after its entries are
    written, so its policy is in force from the first packet the hooks see; remove detaches every hook
    of the pod first.  ``ports`` are the pod's named ports, which named-port rules resolve
    against (None keeps the ones it has: `endpoint relabel` changes labels and addresses only).  ``save=False`` leaves recording to the caller (replace.py
    applies changes to the maps of an object that is not in place yet).  ``catalog`` (the state's, as a
    resident agent keeps it) saves rebuilding one and is updated with the change.
    """
    start = time.perf_counter()
    cat = catalog if catalog is not None else catalog_of(state, features)
    prior = cat.pods.get(endpoint)
    if op == "add" and prior is not None:
        raise error(f"endpoint {endpoint} exists already: use `endpoint relabel` (or remove it first)")
    if op in ("remove", "relabel") and prior is None:
        raise error(f"unknown endpoint {endpoint!r} in {state.name}")
    if attach is not None:
        _check_attach(state, endpoint, attach)
    addr_len = 16 if features.get("ipv6") else 4
    lay = layouts(addr_len, bool(features.get("port_ranges")))
    before, node_ips_before = list(state.attachments), list(state.node_ips)
    maps = {n: Map.open_pinned(str(Path(state.pin_dir) / "maps" / n))
            for n in ("ipcache_hosts", "endpoints", "policy", "interfaces", "revision")}
    hooked = sorted({a.ifindex for a in state.attachments if a.endpoint == endpoint and a.hook != "xdp"})
    try:
        if op == "remove":
            for a in [a for a in state.attachments if a.endpoint == endpoint]:
                detach(Path(a.pin))  # the pod leaves: its hooks first, then its identity
            state.attachments = [a for a in state.attachments if a.endpoint != endpoint]
            t0 = time.perf_counter()
            for index in hooked:
                unbind(maps, features, index, prior.endpoint.ips)
            _forget(maps, lay, prior.endpoint.ips, addr_len)
            bump_revision(maps["revision"])  # its conntrack entries name an endpoint id never used again
            t1 = time.perf_counter()
            record = {"op": op, "endpoint": endpoint}
            result = Change(op, endpoint, prior.endpoint.identity.id, False, prior.policy_id, 0, t1 - start, t1 - t0)
        else:
            result, record = _set(cat, prior, op, endpoint, ips, labels, service_account, extra, lay, maps, start,
                                  ports)
            addrs = record["ips"]
            if op == "add":  # a CNI adds addresses (a bridge, a gateway) as it plugs a pod in: they are host
                state.node_ips = node_addresses(Path(state.artifact), tuple(state.node_ips))
                set_host_identity(maps["ipcache_hosts"], features, state.node_ips)
            hooked += [ifindex(attach)] if attach is not None else []
            for index in hooked:  # the pod's hooks read its new record (and addresses) from their interface
                bind(maps, features, index, addrs)
            bump_revision(maps["revision"])  # tracked flows of the pod and of its peers are decided again
            if attach is not None:
                try:
                    state.attachments += attach_endpoint(state, endpoint, attach)
                except BaseException:
                    unbind(maps, features, hooked[-1], addrs)
                    if prior is None:  # a new pod leaves nothing; a relabel stays done and recorded
                        _forget(maps, lay, [ipaddress.ip_address(i) for i in addrs], addr_len)
                        raise
                    _record(state, cat, record, before, save, node_ips_before)
                    raise
    finally:
        for m in maps.values():
            m.close()
    _record(state, cat, record, before, save, node_ips_before)
    return result


def _record(state: State, cat: Catalog, record: dict, before: list, save: bool, node_ips_before: list) -> None:
    state.runtime.append(record)
    cat.apply(record)
    if save:
        journal_change(state, record, before, node_ips_before=node_ips_before)


def record_extra(rec: dict) -> Extra:
    return Extra(rec.get("namespace_labels"), rec.get("pending"))


def carry_over(old: State, new: State, features: dict) -> list[str]:
    """Re-apply ``old``'s runtime endpoint changes onto ``new``'s maps, through :func:`change`.

    Pods the new artifact does not know are added (their last recorded addresses, labels and service
    account), so a pod added, relabelled and removed at run time leaves nothing.  For a pod it knows the
    artifact wins, unless the pod's recorded addresses differ from the compiled ones: the pod was
    re-created with a new address since the compile, and keeps it (with its recorded labels).  New
    numbers are chosen in the new artifact's space.  Returns the pods carried over (their records end up
    in ``new.runtime``).
    """
    compiled = {e["name"]: sorted(e["ips"]) for e in artifact_json(new, "endpoints.json")}
    last = {rec["endpoint"]: rec for rec in old.runtime}
    todo = [(endpoint, rec) for endpoint, rec in last.items()
            if rec["op"] != "remove" and compiled.get(endpoint) != sorted(rec["ips"])]
    cat = catalog_of(new, features) if todo else None
    for endpoint, rec in todo:
        op = "relabel" if endpoint in compiled else "add"
        try:
            change(new, features, op, endpoint, rec["ips"], rec["labels"], rec["service_account"], save=False,
                   catalog=cat, extra=record_extra(rec), ports=named_ports(rec["ports"]) if "ports" in rec else None)
        except PolicycError as exc:
            raise error(f"{endpoint} (added or changed at run time) cannot be carried over to {new.artifact}: "
                         + "; ".join(d.message for d in exc.diagnostics)
                         + f" (run `policyc endpoint remove {old.name} {endpoint}` or recompile with the pod)") from None
    return [endpoint for endpoint, _ in todo]


@dataclass(frozen=True)
class Plan:
    """What setting one endpoint writes: decided without touching a map (bench/scale.py times this part)."""

    endpoint: Endpoint
    record: dict         # the state's record of the change, numbers included (State.runtime, the journal)
    endpoint_id: int
    policy_id: int
    default_deny: tuple[Direction, ...]
    entries: tuple[PolicyEntry, ...]
    new_identity: bool   # the identity takes a number never used before


def plan_set(cat: Catalog, prior: Pod | None, op: str, endpoint: str, ips: list[str] | None, labels: dict | None,
             service_account: str | None, extra: Extra = Extra(),
             ports: tuple[NamedPort, ...] | None = None) -> Plan:
    """The identity, numbers and policy entries of ``endpoint`` after an add or relabel; ``cat`` is read,
    never changed (the change updates it once the maps hold the plan)."""
    features, src = cat.features, cat.src
    ns, name = endpoint.split("/", 1)
    addrs = tuple(ipaddress.ip_address(i) for i in ips) if ips else (prior.endpoint.ips if prior else ())
    if not addrs:
        raise error(f"endpoint add {endpoint}: give its address with --ip")
    if len({ip.version for ip in addrs}) != len(addrs):
        raise error(f"{endpoint}: --ip {', '.join(map(str, addrs))}: a pod has at most one address per family")
    if any(ip.version == 6 for ip in addrs) and not features.get("ipv6"):
        raise error(f"{endpoint}: the artifact was compiled IPv4-only; an IPv6 address needs a recompile")
    clash = sorted({cat.by_ip[ip] for ip in addrs if cat.by_ip.get(ip, endpoint) != endpoint})
    if clash:
        raise error(f"{endpoint}: address {', '.join(map(str, addrs))} belongs to {clash[0]} (remove it first)")
    sa = service_account or (prior.endpoint.service_account if prior else "default")
    if labels is None:  # relabel without --label: only the addresses change
        labels = own_labels(prior.endpoint.identity.labels)
    record = {"op": op, "endpoint": endpoint, "ips": [str(i) for i in addrs], "labels": labels,
              "service_account": sa, **extra.fields()}
    full = _labels(src, ns, labels, sa, record)
    identity, shared = cat.identity_of(full, endpoint)
    if prior is not None and prior.endpoint.identity.labels == full:
        identity = prior.endpoint.identity.id
    if ports is None:
        ports = prior.endpoint.ports if prior else ()
    ep = Endpoint(EndpointKind.POD, name, ns, addrs, Identity(identity, full), tuple(ports), None, sa)
    pid, members = cat.classes.get(_class_key(ep), (None, ()))
    joined = pid if _another(members, endpoint) is not None else None
    policy_id = joined if joined is not None else cat.top["policy_id"] + 1
    try:
        entries = _entries(cat, ep, shared, policy_id, joined is None)
        default_deny = tuple(d for d in Direction if src.evaluator.is_default_deny(ep, d))
    except PolicycError:
        if not extra.pending:
            raise
        # the artifact cannot express what the pod might be allowed: it is allowed nothing until its
        # labels are known (its own hooks see all of its traffic, so its peers' entries do not matter)
        entries, default_deny, record["lockdown"] = [], tuple(Direction), True
    endpoint_id = prior.endpoint_id if prior else cat.top["endpoint_id"] + 1
    record.update(identity=identity, policy_id=policy_id, endpoint_id=endpoint_id,
                  ports=[[np.name, np.port, np.protocol.label] for np in ep.ports])
    return Plan(ep, record, endpoint_id, policy_id, default_deny, tuple(entries), identity > cat.top["identity"])


def _set(cat: Catalog, prior: Pod | None, op: str, endpoint: str, ips, labels, service_account, extra: Extra,
         lay, maps, start: float, ports: tuple[NamedPort, ...] | None = None) -> tuple[Change, dict]:
    plan = plan_set(cat, prior, op, endpoint, ips, labels, service_account, extra, ports)
    ep, features = plan.endpoint, cat.features
    addr_len = 16 if features.get("ipv6") else 4
    port_lpm = bool(features.get("port_ranges"))
    t0 = time.perf_counter()
    for e in plan.entries:  # policy first: the identity is in force the moment the endpoint points at it
        maps["policy"].update(policy_key(lay["policy_key"], e, port_lpm), policy_value(lay, e))
    if prior is not None:
        _forget(maps, lay, set(prior.endpoint.ips) - set(ep.ips), addr_len)
    for ip in ep.ips:
        entry = EndpointEntry(ip, plan.endpoint_id, ep.identity.id, plan.policy_id, plan.default_deny, endpoint)
        maps["endpoints"].update(lay["endpoint_key"].pack(addr=addr_bytes(ip, addr_len)), endpoint_value(lay, entry))
        set_identity(maps["ipcache_hosts"], lay, addr_len, ip, ep.identity.id)
    t1 = time.perf_counter()
    return (Change(op, endpoint, ep.identity.id, plan.new_identity, plan.policy_id, len(plan.entries),
                   t1 - start, t1 - t0), plan.record)


def _entries(cat: Catalog, ep: Endpoint, shared: bool, policy_id: int, new_class: bool) -> list[PolicyEntry]:
    """The policy entries a pod taking ``ep``'s identity needs: every class's entries for it as a peer
    (when no other pod holds the identity, or the pod brings named ports its holders lack), and its own
    class's (when no other pod is in it)."""
    features, evaluator = cat.features, cat.src.evaluator
    port_lpm = bool(features.get("port_ranges"))
    entries: list[PolicyEntry] = []
    held = cat.held_ports(ep.identity.labels, ep.display)
    if not shared or set(ep.ports) - set(held):
        peer = PeerIndex((cat.peer(ep, held),))
        # only rules whose peers match the new identity give it entries: find them once, then lower only
        # the classes such a rule selects (the evaluator's selection per class is cached)
        labels = ep.identity.labels
        hits = {id(r) for r in cat.src.peer_rules.candidates(labels, pending_scope(labels)) if peer.rule(r)}
        for _, pid, rep in cat.other_classes(ep.display):
            for d in Direction:
                allows, denies, _ = evaluator.subject_rules(rep, d)
                if any(id(r) in hits for r in allows + denies):
                    entries += [e for e in subject_entries(evaluator, pid, rep, d, peer, port_lpm)
                                if e.peer == ep.identity.id]
    if new_class:
        every = PeerIndex(cat.peers(extra=ep, without=ep.display), cat.label_universe(ep.identity.labels))
        for d in Direction:
            entries += subject_entries(evaluator, policy_id, ep, d, every, port_lpm)
    _features_needed(entries, features, cat.src.levels)
    return entries
