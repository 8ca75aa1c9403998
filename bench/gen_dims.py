"""Inputs that grow one dimension at a time, for bench/scale.py and the growth guards.

Each generator returns a ``Case``: the policy documents, the inventory objects and the "changed"
policy documents (one small edit, for ``diff``), all as plain values; ``write`` puts them in a
directory the way ``policyc`` reads them.  Everything is deterministic (no randomness at all), and
every other dimension stays at a small fixed size while the named one grows.

Dimensions (``n`` is the size of the one that grows):

* ``cidr``: ``n`` prefixes in ``fromCIDRSet`` entries on one pod of 9, 100 per CNP, half /24 and
  half /32 (every other /32 inside one of the /24s, every tenth /24 with an ``except``): the shape
  of issue 15's table;
* ``pods``: ``n`` pods in namespaces of 20, a fixed policy set (one per namespace);
* ``open`` / ``allowall``: ``n`` pods of ``n / 2`` apps with no policy that selects them, or with one
  clusterwide allow to `all` beside a deny (Cilium's advice for deny policies);
* ``policies``: ``n`` CNPs over a fixed 100 pods;
* ``rules``: one CNP with ``n`` ingress rules;
* ``ports`` / ``portranges``: ``n`` distinct ports (or port ranges) in one policy's rules;
* ``namespaces``: ``n`` namespaces of 2 pods each, one policy each;
* ``labels``: pods carrying ``n`` label keys with ``n`` values in all, selectors over them;
* ``entities``: ``n`` rules over the entity list (the same entities again and again);
* ``nodes``: ``n`` nodes with labels, node-selector and host peers.
"""
from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

CNP_KIND, CCNP_KIND = "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"
NS_KEY = "k8s:io.kubernetes.pod.namespace"
PER_CNP = 100  # fromCIDRSet entries per CNP in the cidr dimension
POD_NET = ipaddress.ip_network("10.128.0.0/9")
NODE_NET = ipaddress.ip_network("10.0.0.0/16")
ENTITIES = ("world", "cluster", "host", "remote-node", "kube-apiserver", "health", "init", "ingress",
            "unmanaged", "all")


@dataclass(frozen=True)
class Case:
    """One input: policies, inventory objects, the policies after one small change, and a pod to relabel."""

    dimension: str
    size: int
    policies: tuple[dict, ...]
    inventory: tuple[dict, ...]
    changed: tuple[dict, ...]
    relabel: str  # ns/pod a relabel benchmark moves to a new label set


def cnp(name: str, ns: str, spec: dict) -> dict:
    return {"apiVersion": "cilium.io/v2", "kind": CNP_KIND, "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def namespace(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}}


def pod(name: str, ns: str, labels: dict, ip, node: str = "node-0", ports: tuple = ()) -> dict:
    container: dict = {"name": "main", "image": "registry.example/app:1.0"}
    if ports:
        container["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [container], "nodeName": node},
            "status": {"podIP": str(ip), "podIPs": [{"ip": str(ip)}]}}


def node(name: str, ip, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"addresses": [{"type": "InternalIP", "address": str(ip)}]}}


def pods_in(ns: str, count: int, start: int = 0, labels=lambda i: {"app": f"app-{i}"}) -> list[dict]:
    """``count`` pods of one namespace with addresses from the pod network, numbered from ``start``."""
    return [pod(f"pod-{i}", ns, labels(i), POD_NET[start + i + 1]) for i in range(count)]


def tcp(*ports) -> list[dict]:
    return [{"ports": [{"port": str(p), "protocol": "TCP"} for p in ports]}]


def base_inventory(pods: int = 9, ns: str = "ns-0") -> list[dict]:
    return [namespace(ns), *pods_in(ns, pods)]


def with_change(policies: list[dict], edit) -> tuple[dict, ...]:
    """A deep copy of ``policies`` with ``edit`` applied to it (the one change ``diff`` must find)."""
    import copy
    changed = copy.deepcopy(policies)
    edit(changed)
    return tuple(changed)


# ---- CIDR prefixes ----

def cidr_entries(n: int) -> list[dict]:
    """``n`` fromCIDRSet entries: even ones /24, odd ones /32; /32 number 4k+1 lies in /24 number 4k."""
    out = []
    for g in range(n):
        block = ipaddress.IPv4Address(int(ipaddress.IPv4Address("20.0.0.0")) + (g // 2) * 256)
        if g % 2 == 0:
            entry: dict = {"cidr": f"{block}/24"}
            if g % 20 == 0:
                entry["except"] = [f"{block + 16}/28"]
        elif g % 4 == 1:
            entry = {"cidr": f"{block + 77}/32"}  # inside /24 number g - 1
        else:
            entry = {"cidr": f"{ipaddress.IPv4Address(int(ipaddress.IPv4Address('100.0.0.0')) + g)}/32"}
        out.append(entry)
    return out


def cidr_case(n: int) -> Case:
    entries = cidr_entries(n)
    policies = [cnp(f"allow-cidr-{k:05d}", "ns-0", {
        "endpointSelector": {"matchLabels": {"app": "app-0"}},
        "ingress": [{"fromCIDRSet": entries[k:k + PER_CNP], "toPorts": tcp(443)}]})
        for k in range(0, n, PER_CNP)]

    def edit(docs):  # one /32 moves by one address
        rule = docs[0]["spec"]["ingress"][0]["fromCIDRSet"]
        rule[1] = {"cidr": "198.51.100.1/32"}
    return Case("cidr", n, tuple(policies), tuple(base_inventory()), with_change(policies, edit), "ns-0/pod-0")


# ---- pods and policies (bench/gen_cluster.py's clusters) ----

def from_gen_cluster(dimension: str, n: int, pods: int, policies: int | None, flavour: str,
                     replicas: int = 2) -> Case:
    """A gen_cluster cluster as a Case (its inventory, policies and one-port change)."""
    import gen_cluster
    lay = gen_cluster.layout(pods, 10, replicas)
    namespaces, pod_objs = gen_cluster.inventory(lay)
    files = gen_cluster.policies(lay, flavour, policies, seed=1)
    docs = [d for name in sorted(files) for d in files[name]]
    changed = gen_cluster.change_one_port(files, flavour)
    return Case(f"{dimension}-{flavour}", n, tuple(docs), tuple(namespaces + pod_objs),
                tuple(d for name in sorted(changed) for d in changed[name]), "ns-0000/web-0-1")


def pods_case(n: int, flavour: str = "cilium") -> Case:
    """``n`` pods as replicas of the same 50 apps in 5 namespaces: identities and policies stay fixed."""
    return from_gen_cluster("pods", n, n, None, flavour, replicas=max(1, -(-(n - 4) // 50)))


def open_case(n: int) -> Case:
    """``n`` pods of ``n / 2`` apps and one policy that selects none of them: a cluster that has not
    adopted policies, where every class reaches every class (the connectivity graph's open pairs)."""
    case = from_gen_cluster("open", n, n, None, "cilium")
    policy = cnp("selects-nothing", "nothing-here", {"endpointSelector": {"matchLabels": {"app": "none"}},
                                                     "ingress": [{"fromEndpoints": [{}], "toPorts": tcp(80)}]})
    return replace(case, policies=(policy,),
                   changed=with_change([policy], lambda ps: ps[0]["spec"]["ingress"][0].update(toPorts=tcp(81))))


def allowall_case(n: int) -> Case:
    """The pods of ``open`` under Cilium's advice for deny policies: one clusterwide policy lets every
    pod egress to `all` but the metadata address, so a rule decides every egress toward every peer."""
    case = from_gen_cluster("allowall", n, n, None, "cilium")
    policy = {"apiVersion": "cilium.io/v2", "kind": CCNP_KIND, "metadata": {"name": "no-metadata-server"},
              "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["all"]}],
                       "egressDeny": [{"toCIDR": ["169.254.169.254/32"]}]}}
    return replace(case, policies=(policy,), changed=with_change(
        [policy], lambda ps: ps[0]["spec"]["egressDeny"][0].update(toCIDR=["169.254.169.253/32"])))


def policies_case(n: int, flavour: str = "cilium") -> Case:
    """``n`` policies over 100 pods (the base set, then metrics-scraping extras)."""
    return from_gen_cluster("policies", n, 100, n, flavour)


def cluster_case(n: int, flavour: str = "cilium") -> Case:
    """``n`` pods and ``n`` policies together: the shape of the verification benchmark."""
    return from_gen_cluster("cluster", n, n, n, flavour)


# ---- one policy growing inside: rules, ports, port ranges, entities ----

def single_policy_case(dimension: str, n: int, rules: list[dict], edit) -> Case:
    policies = [cnp("grow", "ns-0", {"endpointSelector": {"matchLabels": {"app": "app-0"}}, "ingress": rules})]
    return Case(dimension, n, tuple(policies), tuple(base_inventory(100)), with_change(policies, edit),
                "ns-0/pod-0")


def rules_case(n: int) -> Case:
    """One CNP with ``n`` ingress rules, rule j from app-(1 + j mod 99) on port 1000 + j div 99."""
    rules = [{"fromEndpoints": [{"matchLabels": {"app": f"app-{1 + j % 99}"}}], "toPorts": tcp(1000 + j // 99)}
             for j in range(n)]

    def edit(docs):
        docs[0]["spec"]["ingress"][0]["toPorts"] = tcp(30000)
    return single_policy_case("rules", n, rules, edit)


def port_items(n: int, ranges: bool) -> list[dict]:
    """``n`` distinct ports (1000, 1002, ...) or ranges (1000-1002, 1004-1006, ...), 40 per PortRule."""
    items = [{"port": str(1000 + 4 * j), "endPort": 1002 + 4 * j, "protocol": "TCP"} if ranges
             else {"port": str(1000 + 2 * j), "protocol": "TCP"} for j in range(n)]
    return [{"ports": items[k:k + 40]} for k in range(0, n, 40)]


def ports_case(n: int, ranges: bool = False) -> Case:
    """One rule from app-1 with ``n`` distinct ports or port ranges."""
    rules = [{"fromEndpoints": [{"matchLabels": {"app": "app-1"}}], "toPorts": port_items(n, ranges)}]

    def edit(docs):
        docs[0]["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"] = "999"
    return single_policy_case("portranges" if ranges else "ports", n, rules, edit)


def entities_case(n: int) -> Case:
    """``n`` rules, each from one entity (the whole list in turn) on its own port."""
    rules = [{"fromEntities": [ENTITIES[j % len(ENTITIES)]], "toPorts": tcp(1000 + j)} for j in range(n)]

    def edit(docs):
        docs[0]["spec"]["ingress"][0]["toPorts"] = tcp(999)
    return single_policy_case("entities", n, rules, edit)


# ---- namespaces, labels, nodes ----

def namespaces_case(n: int) -> Case:
    """``n`` namespaces with one pod and one CNP each: in from the previous namespace, out to the next
    one's pods through a namespace label (every namespace has its own ``idx`` label)."""
    inv, policies = [], []
    for k in range(n):
        ns = f"ns-{k}"
        inv += [namespace(ns, {"team": f"team-{k % 5}", "idx": f"n{k}"}),
                pod("pod-0", ns, {"app": "app"}, POD_NET[k + 1])]
        policies.append(cnp("own", ns, {"endpointSelector": {}, "ingress": [
            {"fromEndpoints": [{"matchLabels": {NS_KEY: f"ns-{(k - 1) % n}"}}], "toPorts": tcp(80)}],
            "egress": [{"toEndpoints": [{"matchLabels": {
                "k8s:io.cilium.k8s.namespace.labels.idx": f"n{(k + 1) % n}"}}], "toPorts": tcp(80)}]}))

    def edit(docs):
        docs[0]["spec"]["ingress"][0]["toPorts"] = tcp(81)
    return Case("namespaces", n, tuple(policies), tuple(inv), with_change(policies, edit), "ns-0/pod-0")


def labels_case(n: int) -> Case:
    """100 pods carrying ``n`` distinct label pairs in all (n/100 keys each); policy p admits pod p+1
    through a key of its own."""
    keys = max(1, n // 100)
    inv = [namespace("ns-0")] + pods_in("ns-0", 100, labels=lambda p: {
        "app": f"app-{p}", **{f"k{i}": f"v{p}" for i in range(keys)}})
    policies = [cnp(f"p{p}", "ns-0", {"endpointSelector": {"matchLabels": {"app": f"app-{p}"}}, "ingress": [
        {"fromEndpoints": [{"matchExpressions": [{"key": f"k{p % keys}", "operator": "In",
                                                  "values": [f"v{(p + 1) % 100}"]}]}],
         "toPorts": tcp(80)}]}) for p in range(100)]

    def edit(docs):
        docs[0]["spec"]["ingress"][0]["toPorts"] = tcp(81)
    return Case("labels", n, tuple(policies), tuple(inv), with_change(policies, edit), "ns-0/pod-0")


def nodes_case(n: int) -> Case:
    """``n`` labelled nodes running 100 pods; pods admit their host, remote nodes of one zone, and
    node-selected peers on egress."""
    nodes = [node(f"node-{i}", NODE_NET[i + 1], {"zone": f"z{i % 4}", "kubernetes.io/hostname": f"node-{i}"})
             for i in range(n)]
    pods = [pod(f"pod-{p}", "ns-0", {"app": f"app-{p % 10}"}, POD_NET[p + 1], f"node-{p % n}") for p in range(100)]
    policies = [cnp(f"p{a}", "ns-0", {"endpointSelector": {"matchLabels": {"app": f"app-{a}"}},
                                      "ingress": [{"fromEntities": ["host"], "toPorts": tcp(8080)},
                                                  {"fromNodes": [{"matchLabels": {"zone": f"z{a % 4}"}}],
                                                   "toPorts": tcp(9100)}],
                                      "egress": [{"toNodes": [{"matchLabels": {"zone": f"z{(a + 1) % 4}"}}],
                                                  "toPorts": tcp(10250)}]}) for a in range(10)]

    def edit(docs):
        docs[0]["spec"]["ingress"][0]["toPorts"] = tcp(8081)
    return Case("nodes", n, tuple(policies), tuple([namespace("ns-0")] + nodes + pods),
                with_change(policies, edit), "ns-0/pod-0")


# ---- driver ----

GENERATORS = {
    "cidr": cidr_case,
    "pods": pods_case,
    "open": open_case,
    "allowall": allowall_case,
    "policies": policies_case,
    "rules": rules_case,
    "ports": ports_case,
    "portranges": lambda n: ports_case(n, ranges=True),
    "namespaces": namespaces_case,
    "labels": labels_case,
    "entities": entities_case,
    "nodes": nodes_case,
    "cluster-k8s": lambda n: cluster_case(n, "k8s"),
    "cluster-cilium": lambda n: cluster_case(n, "cilium"),
}


def case(dimension: str, n: int) -> Case:
    return GENERATORS[dimension](n)


def dump(path: Path, docs) -> None:
    path.write_text(yaml.dump_all(list(docs), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False),
                    encoding="utf-8")


def write(c: Case, out: Path) -> Path:
    """``out``/policies.yaml, policies-changed.yaml, inventory.yaml; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    dump(out / "policies.yaml", c.policies)
    dump(out / "policies-changed.yaml", c.changed)
    dump(out / "inventory.yaml", [{"apiVersion": "v1", "kind": "List", "items": list(c.inventory)}])
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dimension", choices=sorted(GENERATORS))
    parser.add_argument("size", type=int)
    parser.add_argument("out", type=Path, help="directory to write policies.yaml, policies-changed.yaml, "
                                               "inventory.yaml and relabel (the pod a relabel moves)")
    args = parser.parse_args(argv)
    c = case(args.dimension, args.size)
    write(c, args.out)
    (args.out / "relabel").write_text(c.relabel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
