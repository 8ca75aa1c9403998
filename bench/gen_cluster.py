"""Generate a realistic cluster for the verification benchmarks: inventory plus policies.

N namespaces × M apps × R replicas, plus kube-system (DNS) and monitoring (prometheus, no policies).
Every application namespace is default-deny in both directions, allows DNS egress, and each app allows
ingress from its neighbours (the previous app of its namespace, and the same app of the previous
namespace through a namespaceSelector ∧ podSelector peer) and egress to the next ones.  Frontends take
traffic from the internet (ipBlock with except), workers call out to it.  Extra policies (metrics
scraping on a numbered port, a named port or a port range) fill up to the requested policy count.

Two flavours of the same cluster:
* ``k8s``: Kubernetes NetworkPolicy only, the input network-config-analyzer reads too;
* ``cilium``: CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy with entities, deny rules,
  port ranges and CIDR sets.

Output directory: ``inventory.yaml`` (a ``kind: List`` of Namespaces and Pods as ``kubectl get -o yaml``
prints it), ``namespaces.yaml`` and ``pods.yaml`` (the same objects split, for tools that read the two
lists apart), ``policies/`` (one file per namespace), and with ``--changed`` ``policies-changed/``: the
same policies with one port of one rule changed (the "one-port change" for ``diff``).

Deterministic: the same arguments and seed give byte-identical files.

    python3 bench/gen_cluster.py OUT --pods 500 --policies 540 [--flavour k8s|cilium] [--seed 1] [--changed]
"""
from __future__ import annotations

import argparse
import ipaddress
import math
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

NS_NAME_KEY = "kubernetes.io/metadata.name"
CILIUM_NS_KEY = "k8s:io.kubernetes.pod.namespace"
POD_NET = ipaddress.ip_network("10.128.0.0/9")
CLUSTER_NETS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
DNS_PODS = 2
SCRAPERS = 2  # prometheus pods in "monitoring", a namespace without policies (open egress)
SYSTEM_PODS = DNS_PODS + SCRAPERS
TEAMS = 5
# (kind, tier, port): an app's role decides its serving port and what it may reach outside.
APP_KINDS = (("web", "frontend", 8080), ("api", "backend", 8080), ("cache", "data", 6379),
             ("db", "data", 5432), ("worker", "backend", 8080), ("queue", "data", 5672))
METRICS_PORT = 9090


@dataclass(frozen=True)
class App:
    namespace: int
    index: int
    kind: str
    tier: str
    port: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index}"


@dataclass(frozen=True)
class Layout:
    namespaces: int
    apps_per_ns: int
    replicas: int
    pods: int


def ns_name(k: int) -> str:
    return f"ns-{k:04d}"


def layout(pods: int, apps_per_ns: int, replicas: int) -> Layout:
    """Enough namespaces to hold ``pods`` (of which the DNS and monitoring pods)."""
    if pods <= SYSTEM_PODS:
        raise SystemExit(f"--pods must be more than {SYSTEM_PODS} (the DNS and monitoring pods)")
    return Layout(max(2, math.ceil((pods - SYSTEM_PODS) / (apps_per_ns * replicas))), apps_per_ns, replicas, pods)


def apps_of(lay: Layout, k: int) -> list[App]:
    return [App(k, i, *APP_KINDS[i % len(APP_KINDS)]) for i in range(lay.apps_per_ns)]


def namespace_obj(name: str, labels: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {NS_NAME_KEY: name, **labels}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def pod_obj(name: str, ns: str, labels: dict, ip: str, port: int, node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "registry.example/app:1.0",
                                     "ports": [{"name": "serve", "containerPort": port, "protocol": "TCP"},
                                               {"name": "metrics", "containerPort": METRICS_PORT,
                                                "protocol": "TCP"}]}],
                     "nodeName": node, "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def inventory(lay: Layout) -> tuple[list[dict], list[dict]]:
    """(namespaces, pods); app pods fill namespace after namespace until ``lay.pods`` are placed."""
    namespaces = [namespace_obj("kube-system", {}), namespace_obj("monitoring", {"purpose": "monitoring"})]
    namespaces += [namespace_obj(ns_name(k), {"team": f"team-{k % TEAMS}", "env": ("prod", "staging")[k % 2]})
                   for k in range(lay.namespaces)]
    hosts = POD_NET.hosts()
    pods = [pod_obj(f"coredns-{r}", "kube-system", {"k8s-app": "kube-dns"}, str(next(hosts)), 53, f"node-{r % 4}")
            for r in range(DNS_PODS)]
    pods += [pod_obj(f"prometheus-{r}", "monitoring", {"app": "prometheus"}, str(next(hosts)), METRICS_PORT,
                     f"node-{r % 4}") for r in range(SCRAPERS)]
    for k in range(lay.namespaces):
        for app in apps_of(lay, k):
            for r in range(lay.replicas):
                if len(pods) == lay.pods:
                    return namespaces, pods
                pods.append(pod_obj(f"{app.name}-{r}", ns_name(k), {"app": app.name, "tier": app.tier},
                                    str(next(hosts)), app.port, f"node-{len(pods) % 4}"))
    return namespaces, pods


def kube_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


# ---- Kubernetes NetworkPolicy flavour ----

def knp(name: str, ns: str, pod_selector: dict, types: list[str], ingress=None, egress=None) -> dict:
    spec: dict = {"podSelector": pod_selector, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def knp_peer(ns: str | None, app: str) -> dict:
    peer: dict = {"podSelector": {"matchLabels": {"app": app}}}
    if ns is not None:
        peer["namespaceSelector"] = {"matchLabels": {NS_NAME_KEY: ns}}
    return peer


def tcp(port: int, end: int | None = None) -> dict:
    out: dict = {"protocol": "TCP", "port": port}
    if end is not None:
        out["endPort"] = end
    return out


def internet(excepts: tuple[str, ...] = CLUSTER_NETS) -> dict:
    return {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(excepts)}}


def knp_namespace(lay: Layout, k: int) -> list[dict]:
    """default-deny, DNS egress, and one ingress+egress policy per app."""
    ns, apps = ns_name(k), apps_of(lay, k)
    prev_ns, next_ns = ns_name((k - 1) % lay.namespaces), ns_name((k + 1) % lay.namespaces)
    out = [knp("default-deny", ns, {}, ["Ingress", "Egress"]),
           knp("allow-dns", ns, {}, ["Egress"], egress=[{
               "to": [{"namespaceSelector": {"matchLabels": {NS_NAME_KEY: "kube-system"}},
                       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
               "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}])]
    for i, app in enumerate(apps):
        prev_app, next_app = apps[i - 1], apps[(i + 1) % len(apps)]
        ingress = [{"from": [knp_peer(None, prev_app.name), knp_peer(prev_ns, app.name)],
                    "ports": [tcp(app.port)]}]
        egress = [{"to": [knp_peer(None, next_app.name), knp_peer(next_ns, app.name)],
                   "ports": [tcp(next_app.port), tcp(app.port)]}]
        if app.tier == "frontend":
            ingress.append({"from": [internet()], "ports": [tcp(443), tcp(app.port)]})
        if app.kind == "worker":
            egress.append({"to": [internet(("10.0.0.0/8", "169.254.0.0/16"))], "ports": [tcp(443)]})
        out.append(knp(f"app-{app.name}", ns, {"matchLabels": {"app": app.name}}, ["Ingress", "Egress"],
                       ingress=ingress, egress=egress))
    return out


def knp_extra(lay: Layout, n: int, rng: random.Random) -> dict:
    """Metrics scraping: mostly from prometheus (a numbered port, the named port or a port range),
    some from another team's apps, whose own egress stays closed (a half-done change, as in real life)."""
    k = n % lay.namespaces
    app = rng.choice(apps_of(lay, k))
    if rng.random() < 0.7:
        peer = {"namespaceSelector": {"matchLabels": {"purpose": "monitoring"}},
                "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["prometheus"]}]}}
    else:
        scrapers = sorted(rng.sample([a.name for a in apps_of(lay, 0)], min(2, lay.apps_per_ns)))
        peer = {"namespaceSelector": {"matchLabels": {"team": f"team-{rng.randrange(TEAMS)}"}},
                "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": scrapers}]}}
    port = rng.choice((tcp(METRICS_PORT), {"protocol": "TCP", "port": "metrics"}, tcp(9100, 9110)))
    return knp(f"extra-{n:05d}", ns_name(k), {"matchLabels": {"app": app.name}}, ["Ingress"],
               ingress=[{"from": [peer], "ports": [port]}])


# ---- Cilium flavour ----

def cnp(kind: str, name: str, ns: str | None, spec: dict) -> dict:
    meta = {"name": name} if ns is None else {"name": name, "namespace": ns}
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": spec}


def cilium_peer(ns: str | None, app: str) -> dict:
    labels = {"app": app} if ns is None else {CILIUM_NS_KEY: ns, "app": app}
    return {"matchLabels": labels}


def cilium_ports(*ports: tuple[int, int | None, str]) -> list[dict]:
    out = []
    for port, end, proto in ports:
        item: dict = {"port": str(port), "protocol": proto}
        if end is not None:
            item["endPort"] = end
        out.append(item)
    return [{"ports": out}]


def cilium_cluster() -> list[dict]:
    """Cluster-wide: DNS for every pod, and no pod reaches the cloud metadata service."""
    return [cnp("CiliumClusterwideNetworkPolicy", "cluster-dns", None, {
        "endpointSelector": {},
        "egress": [{"toEndpoints": [{"matchLabels": {CILIUM_NS_KEY: "kube-system", "k8s-app": "kube-dns"}}],
                    "toPorts": cilium_ports((53, None, "UDP"), (53, None, "TCP"))}],
        "egressDeny": [{"toCIDRSet": [{"cidr": "169.254.169.254/32"}]}]})]


def cilium_namespace(lay: Layout, k: int) -> list[dict]:
    ns, apps = ns_name(k), apps_of(lay, k)
    prev_ns, next_ns = ns_name((k - 1) % lay.namespaces), ns_name((k + 1) % lay.namespaces)
    out = [cnp("CiliumNetworkPolicy", "default-deny", ns, {"endpointSelector": {}, "ingress": [{}], "egress": [{}]})]
    for i, app in enumerate(apps):
        prev_app, next_app = apps[i - 1], apps[(i + 1) % len(apps)]
        spec: dict = {
            "endpointSelector": {"matchLabels": {"app": app.name}},
            "ingress": [{"fromEndpoints": [cilium_peer(None, prev_app.name), cilium_peer(prev_ns, app.name)],
                         "toPorts": cilium_ports((app.port, None, "TCP"))}],
            "egress": [{"toEndpoints": [cilium_peer(None, next_app.name), cilium_peer(next_ns, app.name)],
                        "toPorts": cilium_ports((next_app.port, None, "TCP"), (app.port, None, "TCP"))}],
            # Debug ports are never reachable from outside the cluster, whatever else allows.
            "ingressDeny": [{"fromEntities": ["world"], "toPorts": cilium_ports((9000, 9999, "TCP"))}]}
        if app.tier == "frontend":
            spec["ingress"].append({"fromEntities": ["world"], "toPorts": cilium_ports((443, None, "TCP"))})
        if app.kind == "worker":
            spec["egress"].append({"toCIDRSet": [{"cidr": "0.0.0.0/0", "except": list(CLUSTER_NETS)}],
                                   "toPorts": cilium_ports((443, None, "TCP"))})
            spec["egress"].append({"toEntities": ["kube-apiserver"], "toPorts": cilium_ports((6443, None, "TCP"))})
        out.append(cnp("CiliumNetworkPolicy", f"app-{app.name}", ns, spec))
    return out


def cilium_extra(lay: Layout, n: int, rng: random.Random) -> dict:
    k = n % lay.namespaces
    app = rng.choice(apps_of(lay, k))
    if rng.random() < 0.7:
        peer = {"matchLabels": {CILIUM_NS_KEY: "monitoring", "app": "prometheus"}}
    else:
        peer = {"matchLabels": {"k8s:io.cilium.k8s.namespace.labels.team": f"team-{rng.randrange(TEAMS)}"}}
    port = rng.choice(((METRICS_PORT, None, "TCP"), (9100, 9110, "TCP")))
    return cnp("CiliumNetworkPolicy", f"extra-{n:05d}", ns_name(k), {
        "endpointSelector": {"matchLabels": {"app": app.name}},
        "ingress": [{"fromEndpoints": [peer], "toPorts": cilium_ports(port)}]})


# ---- whole cluster ----

def policies(lay: Layout, flavour: str, count: int | None, seed: int) -> dict[str, list[dict]]:
    """File name -> documents; the base set plus extras up to ``count`` policies."""
    per_ns, extra = (knp_namespace, knp_extra) if flavour == "k8s" else (cilium_namespace, cilium_extra)
    files = {ns_name(k): per_ns(lay, k) for k in range(lay.namespaces)}
    if flavour == "cilium":
        files["cluster"] = cilium_cluster()
    base = sum(len(docs) for docs in files.values())
    if count is not None and count < base:
        raise SystemExit(f"--policies {count} is below the {base} policies the layout needs "
                         "(default-deny, DNS and one per app); lower --pods or --apps-per-ns")
    rng = random.Random(seed)
    for n in range((count or base) - base):
        doc = extra(lay, n, rng)
        files[doc["metadata"]["namespace"]].append(doc)
    return files


def change_one_port(files: dict[str, list[dict]], flavour: str) -> dict[str, list[dict]]:
    """A copy where the first app's ingress port moves up by one: the smallest real change."""
    import copy
    changed = copy.deepcopy(files)
    doc = next(d for d in changed[ns_name(0)] if d["metadata"]["name"].startswith("app-"))
    rule = doc["spec"]["ingress"][0]
    if flavour == "k8s":
        rule["ports"][0]["port"] += 1
    else:
        item = rule["toPorts"][0]["ports"][0]
        item["port"] = str(int(item["port"]) + 1)
    return changed


def dump(path: Path, docs: list[dict]) -> None:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False), encoding="utf-8")


def write_policies(directory: Path, files: dict[str, list[dict]]) -> None:
    directory.mkdir(parents=True)
    for name, docs in files.items():
        dump(directory / f"{name}.yaml", docs)


def generate(out: Path, pods: int, policy_count: int | None = None, flavour: str = "k8s", seed: int = 1,
             apps_per_ns: int = 10, replicas: int = 2, changed: bool = False) -> Layout:
    lay = layout(pods, apps_per_ns, replicas)
    namespaces, pod_objs = inventory(lay)
    files = policies(lay, flavour, policy_count, seed)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    dump(out / "inventory.yaml", [kube_list(namespaces + pod_objs)])
    dump(out / "namespaces.yaml", [kube_list(namespaces)])
    dump(out / "pods.yaml", [kube_list(pod_objs)])
    write_policies(out / "policies", files)
    if changed:
        write_policies(out / "policies-changed", change_one_port(files, flavour))
    return lay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory (replaced)")
    parser.add_argument("--pods", type=int, default=100, help="total pods, the DNS and monitoring pods included")
    parser.add_argument("--policies", type=int, help="total policies (default: the base set only)")
    parser.add_argument("--flavour", choices=("k8s", "cilium"), default="k8s")
    parser.add_argument("--apps-per-ns", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--changed", action="store_true", help="also write policies-changed/ (one port moved)")
    args = parser.parse_args(argv)
    lay = generate(args.out, args.pods, args.policies, args.flavour, args.seed, args.apps_per_ns,
                   args.replicas, args.changed)
    count = sum(1 for f in (args.out / "policies").iterdir() for _ in yaml.safe_load_all(f.read_text()))
    print(f"{args.out}: {lay.pods} pods in {lay.namespaces} namespaces + 2 system ones, {count} policies",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
