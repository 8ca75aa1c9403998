"""Endpoints at run time: add, remove and relabel pods of a loaded artifact with map updates only.

No clang, no reload: the artifact's sources.json gives back the policy set
and inventory it was compiled from; the new identity's policy entries come
from the same lowering the compiler uses (lower.subject_entries), packed with
the same layouts (mapdata), and are written before the endpoint and ipcache
entries point at the identity, so its policy is in force the moment it
exists.  Conntrack is not touched: established connections keep flowing.

Identities and policy ids are never renumbered: a label set seen before keeps
its number, a new one takes the next free number, and every change is
recorded in the state file so later changes (and observe) see it.
"""
from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..compiler.artifact import SOURCES
from ..compiler.diagnostics import PolicycError, Severity
from ..compiler.evaluate import Evaluator, subject_labels
from ..compiler.frontend import build_policy_set
from ..compiler.inventory import Inventory, build_inventory, pod_labels
from ..compiler.ir import (CLUSTER_KEY, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_KEY, Action,
                           Direction, Endpoint, EndpointKind, Identity, NamedPort, PolicySet, Protocol)
from ..compiler.layouts import layouts
from ..compiler.lower import ANY_PEER, EndpointEntry, PeerIndex, PolicyEntry, peer_identities, subject_entries
from ..compiler.mapdata import addr_bytes, endpoint_value, ipcache_host_key, policy_key, policy_value
from ..compiler.services import bind as bind_services
from ..compiler.source import parse_text
from .attach import detach, ifindex
from .bindings import bind, bump_revision, set_identity, unbind
from .errors import error
from .hooks import attach_endpoint, check_owners
from .hostaddrs import node_addresses, set_host_identity
from .libbpf import Map
from .loaded import artifact_json
from .state import State, write_state


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


def load_sources(state: State) -> Sources:
    """The policy set and inventory the artifact was compiled from (sources.json)."""
    path = Path(state.artifact) / SOURCES
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
    if len(result.policy.rules) != len(artifact_json(state, "rules.json")):
        raise error(f"{path}: its policies give {len(result.policy.rules)} rules, rules.json lists a different "
                     "number; recompile the artifact with this policyc version")
    inventory = build_inventory(docs("inventory"), data["cluster"])
    return Sources(bind_services(result.policy, inventory.services), inventory)


@dataclass(frozen=True)
class Pod:
    endpoint: Endpoint
    endpoint_id: int
    policy_id: int


def current(state: State, src: Sources) -> dict[str, Pod]:
    """Every pod now: the artifact's, with the recorded runtime changes applied in order."""
    base = {e.display: e for e in src.inventory.pods}
    ids = {e["name"]: (e["endpoint_id"], e["policy_id"]) for e in artifact_json(state, "endpoints.json")}
    pods = {name: Pod(ep, *ids[name]) for name, ep in base.items() if name in ids}
    for rec in state.runtime:
        if rec["op"] == "remove":
            pods.pop(rec["endpoint"], None)
            continue
        ns, name = rec["endpoint"].split("/", 1)
        prior = pods.get(rec["endpoint"])
        ports = named_ports(rec["ports"]) if "ports" in rec else prior.endpoint.ports if prior else ()
        ep = Endpoint(EndpointKind.POD, name, ns, tuple(ipaddress.ip_address(i) for i in rec["ips"]),
                      Identity(rec["identity"], _labels(src, ns, rec["labels"], rec["service_account"])),
                      ports, None, rec["service_account"])
        pods[rec["endpoint"]] = Pod(ep, rec["endpoint_id"], rec["policy_id"])
    return pods


def _labels(src: Sources, ns: str, labels: dict, service_account: str) -> frozenset:
    ns_labels = src.inventory.namespaces.get(ns, {"kubernetes.io/metadata.name": ns})
    return pod_labels(labels, ns, ns_labels, service_account, src.inventory.cluster)


def numbers_used(state: State, src: Sources) -> dict[str, set[int]]:
    """Every identity, policy id and endpoint id the artifact or any recorded change ever used.

    New numbers start above all of them: a number that fell out of use may still have entries in
    the policy map, and a new label set must not inherit them.
    """
    rows = artifact_json(state, "endpoints.json") + [r for r in state.runtime if r["op"] != "remove"]
    used = {key: {r[key] for r in rows} for key in ("identity", "policy_id", "endpoint_id")}
    used["identity"] |= {i.id for i in src.inventory.identities}
    return used


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


def _features_needed(entries: list[PolicyEntry], features: dict) -> None:
    """Refuse entries the compiled program cannot read (a feature switched off at compile time)."""
    need = {"deny": any(e.verdict.action is Action.DENY for e in entries),
            "any_peer": any(e.peer == ANY_PEER for e in entries), "l7": any(e.verdict.l7 for e in entries)}
    missing = [k for k, v in need.items() if v and not features.get(k)]
    if missing == ["l7"]:
        raise error("L7 rules select the pod, and policyc has no L7 proxy: recompile with `--l7 l4-only` "
                     "to enforce them as L4 only")
    if missing:
        raise error(f"the new identity needs datapath features the artifact was compiled without "
                     f"({', '.join(missing)}): recompile with the new pod in the inventory")


def _forget(maps: dict, lay: dict, addrs, addr_len: int) -> None:
    """Delete the endpoint and ipcache entries of ``addrs``: each falls back to its CIDR/world identity."""
    for ip in addrs:
        maps["endpoints"].delete(lay["endpoint_key"].pack(addr=addr_bytes(ip, addr_len)))
        maps["ipcache_hosts"].delete(ipcache_host_key(lay, ip, addr_len))


def _check_attach(state: State, iface: str) -> None:
    """Before any map update: the interface exists and no hook of this or another policyc name holds it."""
    ifindex(iface)
    check_owners(state.name, [iface])
    mine = next((a for a in state.attachments if a.iface == iface and a.hook != "xdp"), None)
    if mine is not None:
        raise error(f"--attach {iface}: {state.name} has its hooks there already (for {mine.endpoint}); "
                     f"one interface carries one pod (`policyc endpoint remove {state.name} {mine.endpoint}` first)")


def change(state: State, features: dict, op: str, endpoint: str, ips: list[str] | None = None,
           labels: dict | None = None, service_account: str | None = None, attach: str | None = None,
           save: bool = True, ports: tuple[NamedPort, ...] | None = None) -> Change:
    """Apply add / remove / relabel of ``endpoint`` to the pinned maps and record it in the state.

    ``attach`` (add only) puts from_pod/to_pod on the new pod's host-side veth after its entries are
    written, so its policy is in force from the first packet the hooks see; remove detaches every hook
    of the pod first.  ``ports`` (add) are the pod's named ports, which named-port rules resolve
    against; a relabel keeps the pod's ports.  ``save=False`` leaves writing the state file to the
    caller (replace.py applies changes to the maps of an object that is not in place yet).
    """
    start = time.perf_counter()
    src = load_sources(state)
    pods = current(state, src)
    prior = pods.get(endpoint)
    if op == "add" and prior is not None:
        raise error(f"endpoint {endpoint} exists already: use `endpoint relabel` (or remove it first)")
    if op in ("remove", "relabel") and prior is None:
        raise error(f"unknown endpoint {endpoint!r} in {state.name}")
    if attach is not None:
        _check_attach(state, attach)
    addr_len = 16 if features.get("ipv6") else 4
    lay = layouts(addr_len, bool(features.get("port_ranges")))
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
            state.runtime.append({"op": op, "endpoint": endpoint})
            result = Change(op, endpoint, prior.endpoint.identity.id, False, prior.policy_id, 0, t1 - start, t1 - t0)
        else:
            result = _set(state, features, src, pods, prior, op, endpoint, ips, labels, service_account, lay, maps,
                          start, ports)
            addrs = state.runtime[-1]["ips"]
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
                    _forget(maps, lay, [ipaddress.ip_address(i) for i in state.runtime.pop()["ips"]], addr_len)
                    raise
    finally:
        for m in maps.values():
            m.close()
    if save:
        write_state(state)
    return result


def carry_over(old: State, new: State, features: dict) -> list[str]:
    """Re-apply ``old``'s runtime endpoint changes onto ``new``'s maps, through :func:`change`.

    Only pods the new artifact does not know: for those it knows, the artifact wins.  Each pod's last
    recorded change is applied as an ``add`` (its full addresses, labels and service account), so a
    pod added, relabelled and removed at run time leaves nothing; new numbers are chosen in the new
    artifact's space.  Returns the pods carried over (their records end up in ``new.runtime``).
    """
    known = {e["name"] for e in artifact_json(new, "endpoints.json")}
    last = {rec["endpoint"]: rec for rec in old.runtime}
    out = []
    for endpoint, rec in last.items():
        if endpoint in known or rec["op"] == "remove":
            continue
        try:
            change(new, features, "add", endpoint, rec["ips"], rec["labels"], rec["service_account"], save=False,
                   ports=named_ports(rec.get("ports", [])))
        except PolicycError as exc:
            raise error(f"{endpoint} (added or changed at run time) cannot be carried over to {new.artifact}: "
                         + "; ".join(d.message for d in exc.diagnostics)
                         + f" (run `policyc endpoint remove {old.name} {endpoint}` or recompile with the pod)") from None
        out.append(endpoint)
    return out


@dataclass(frozen=True)
class Plan:
    """What setting one endpoint writes: decided without touching a map (bench/scale.py times this part)."""

    endpoint: Endpoint
    labels: dict
    endpoint_id: int
    policy_id: int
    default_deny: tuple[Direction, ...]
    entries: tuple[PolicyEntry, ...]
    new_identity: bool   # no other pod has this label set, and it takes a number never used before


def plan_set(state: State, features: dict, src: Sources, pods: dict[str, Pod], prior: Pod | None, endpoint: str,
             ips: list[str] | None, labels: dict | None, service_account: str | None,
             ports: tuple[NamedPort, ...] | None = None) -> Plan:
    """The identity, numbers and policy entries of ``endpoint`` after an add or relabel."""
    ns, name = endpoint.split("/", 1)
    addrs = tuple(ipaddress.ip_address(i) for i in ips) if ips else (prior.endpoint.ips if prior else ())
    if not addrs:
        raise error(f"endpoint add {endpoint}: give its address with --ip")
    if len({ip.version for ip in addrs}) != len(addrs):
        raise error(f"{endpoint}: --ip {', '.join(map(str, addrs))}: a pod has at most one address per family")
    if any(ip.version == 6 for ip in addrs) and not features.get("ipv6"):
        raise error(f"{endpoint}: the artifact was compiled IPv4-only; an IPv6 address needs a recompile")
    clash = sorted(n for n, p in pods.items() if n != endpoint and set(p.endpoint.ips) & set(addrs))
    if clash:
        raise error(f"{endpoint}: address {', '.join(map(str, addrs))} belongs to {clash[0]} (remove it first)")
    sa = service_account or (prior.endpoint.service_account if prior else "default")
    if labels is None:  # relabel without --label: only the addresses change
        derived = (NAMESPACE_KEY, SERVICE_ACCOUNT_KEY, CLUSTER_KEY)
        labels = {lab.key: lab.value for lab in prior.endpoint.identity.labels if lab.source == "k8s"
                  and lab.key not in derived and not lab.key.startswith(NAMESPACE_LABELS_PREFIX)}
    full = _labels(src, ns, labels, sa)
    others = [p for n, p in pods.items() if n != endpoint]
    known = {p.endpoint.identity.labels: p.endpoint.identity.id for p in others}
    known.update({i.labels: i.id for i in src.inventory.identities if i.labels not in known})
    used = numbers_used(state, src)
    all_ids = sorted(used["identity"])
    new_identity = full not in {p.endpoint.identity.labels for p in others}
    identity = known.get(full, max(all_ids + [255]) + 1)
    if prior is not None and prior.endpoint.identity.labels == full:
        identity = prior.endpoint.identity.id
    if ports is None:
        ports = prior.endpoint.ports if prior else ()
    ep = Endpoint(EndpointKind.POD, name, ns, addrs, Identity(identity, full), tuple(ports), None, sa)
    after = {**{n: p for n, p in pods.items() if n != endpoint}, endpoint: Pod(ep, 0, 0)}
    inventory = Inventory(tuple(p.endpoint for p in after.values()) + src.inventory.nodes,
                          src.inventory.namespaces, src.inventory.cluster)
    port_lpm = bool(features.get("port_ranges"))
    evaluator = Evaluator(src.policy)
    identities = peer_identities(src.policy, inventory, bool(features.get("ipv6")))
    classes = {(subject_labels(p.endpoint), p.endpoint.ports): (p.policy_id, p.endpoint) for p in others}
    entries: list[PolicyEntry] = []
    held = {np for p in others if p.endpoint.identity.id == identity for np in p.endpoint.ports}
    if new_identity or set(ep.ports) - held:  # every subject's entries for the new peer (or its new named ports)
        peer = PeerIndex(tuple(i for i in identities if i.id == identity))
        for pid, rep in classes.values():
            for d in Direction:
                entries += [e for e in subject_entries(evaluator, pid, rep, d, peer, port_lpm)
                            if e.peer == identity]
    key = (subject_labels(ep), ep.ports)
    if key in classes:
        policy_id = classes[key][0]
    else:  # a new subject class: its own entries against every identity
        policy_id = max(used["policy_id"] | {0}) + 1
        every = PeerIndex(identities)
        for d in Direction:
            entries += subject_entries(evaluator, policy_id, ep, d, every, port_lpm)
    _features_needed(entries, features)
    endpoint_id = prior.endpoint_id if prior else max(used["endpoint_id"] | {0}) + 1
    default_deny = tuple(d for d in Direction if evaluator.is_default_deny(ep, d))
    return Plan(ep, labels, endpoint_id, policy_id, default_deny, tuple(entries),
                new_identity and identity not in all_ids)


def _set(state, features, src, pods, prior, op, endpoint, ips, labels, service_account, lay, maps, start,
         ports=None) -> Change:
    plan = plan_set(state, features, src, pods, prior, endpoint, ips, labels, service_account, ports)
    ep, port_lpm = plan.endpoint, bool(features.get("port_ranges"))
    addr_len = 16 if features.get("ipv6") else 4
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
    state.runtime.append({"op": op, "endpoint": endpoint, "ips": [str(i) for i in ep.ips], "labels": plan.labels,
                          "service_account": ep.service_account, "identity": ep.identity.id,
                          "policy_id": plan.policy_id, "endpoint_id": plan.endpoint_id,
                          "ports": [[np.name, np.port, np.protocol.label] for np in ep.ports]})
    return Change(op, endpoint, ep.identity.id, plan.new_identity, plan.policy_id, len(plan.entries),
                  t1 - start, t1 - t0)
