"""The node agent's figures (docs/benchmarks.md, "Agent and CNI plugin"), measured in one run each.

Run as root, under the kernel lock, from the repository root:

    PYTHONPATH=.:tests python3 bench/agent_bench.py cni [--pods 100]
    PYTHONPATH=.:tests python3 bench/agent_bench.py scale [--pods 1000 10000] [--relabels 200]

``cni``: a node namespace with the agent; ``--pods`` pods plugged in one by one by Debian's ptp
with host-local, as a runtime does (tests/cnirt.py). For each pod three timed plugin runs: ptp ADD
(the main plugin), tuning ADD with no settings (a chained plugin that only passes prevResult on:
the floor of any chained plugin, process start included), policyc-cni ADD (the agent registers the
pod and attaches its hooks before it returns); each pod's ADD of the whole conflist (ptp then
policyc-cni) is set beside ptp alone. Then artifact replaces through the watched directory (the
kubelet's ``..data`` swap, agent ``--poll 0.2`` as tests/cnirt.py starts it): from the swap to the
new manifest in force, and the replace itself as the agent logs it; then DEL of every pod.

``scale``: an artifact of a generated cluster (bench/gen_cluster.py, --pods 1000, 1000 policies)
loaded by the agent; pods are added through the agent's API up to each ``--pods`` count (replicas
of the cluster's pods: their labels and named ports, new addresses; no veth, no hooks), then the
agent's resident memory (VmRSS) is read and relabels are timed: client call to return (the map writes are done when it returns: the new verdict is in
force), to a label set another pod holds and to a new one each time, beside the same relabel as a
`policyc endpoint relabel` process without the agent.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cnirt import Node, conflist  # noqa: E402
from policyc.agent.client import Client  # noqa: E402
from policyc.cli import main as cli  # noqa: E402
from test_cni import COMPILED, NAMESPACES, POLICIES, WIDER, kube_list, pod, publish  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> str:
    return f"{pct(values, 50) * 1000:.1f} / {pct(values, 99) * 1000:.1f}"


def compile_small(out: Path, policies: str) -> Path:
    src = out.parent / f"{out.name}-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "p.yaml").write_text(policies)
    (src / "inv.yaml").write_text(kube_list(COMPILED))
    assert cli(["compile", str(src / "p.yaml"), "--inventory", str(src / "inv.yaml"), "--output-dir", str(out)]) == 0
    return out


def timed(node: Node, plugin: str, net: dict, conf_plugin: dict, prev, p) -> tuple[float, dict]:
    start = time.perf_counter()
    res = node.exec_plugin(plugin, "ADD", node.derived(net, conf_plugin, prev), p)
    took = time.perf_counter() - start
    if res.code != 0:
        raise SystemExit(f"{plugin} ADD failed for {p.display}: {res.out} {res.err}")
    return took, res.out


def bench_cni(pods: int, work: Path) -> None:
    a1, a2 = compile_small(work / "a1", POLICIES), compile_small(work / "a2", WIDER)
    inventory = work / "inventory"
    inventory.mkdir()
    (inventory / "ns.yaml").write_text(kube_list(NAMESPACES))
    (inventory / "pods.yaml").write_text(kube_list([pod("x", f"web-{i}", {"app": "web"}) for i in range(pods)]))
    volume = work / "volume"
    publish(volume, a1, "0")
    with Node(work, "pcb") as node:
        node.start_agent("pcbtest", volume, "--inventory-dir", str(inventory), "--node-name", "node-1",
                         "--listen", "off")
        net = conflist("ptp", node.prefix, "10.246.0.0/16", node.ipam, node.socket)
        tuning = {"type": "tuning"}
        main_t, floor_t, policyc_t, start_t, made = [], [], [], [], []
        for i in range(pods):
            p = node.new_pod(f"x/web-{i}")
            t_main, prev = timed(node, "ptp", net, net["plugins"][0], None, p)
            t_floor, prev = timed(node, "tuning", net, tuning, prev, p)
            t_pc, prev = timed(node, "policyc-cni", net, net["plugins"][1], prev, p)
            t = time.perf_counter()
            node.exec_plugin("policyc-cni", "VERSION", {"cniVersion": "1.0.0"}, p)
            start_t.append(time.perf_counter() - t)
            p.result = prev
            main_t.append(t_main), floor_t.append(t_floor), policyc_t.append(t_pc)
            made.append(p)
        registered = [line for line in node.log_lines() if line["msg"].startswith("registered ")]
        agent_t = [line["seconds"] for line in registered]
        maps_t = [line["seconds_maps"] for line in registered]
        chained = [m + c for m, c in zip(main_t, policyc_t)]
        floor = [m + f for m, f in zip(main_t, floor_t)]
        print(f"ADD of the conflist over {pods} pods, p50 / p99 ms: ptp alone {ms(main_t)}; ptp then tuning "
              f"{ms(floor)}; ptp then policyc-cni {ms(chained)} (ratio to ptp alone at p50 "
              f"{pct(chained, 50) / pct(main_t, 50):.2f}, ptp then tuning {pct(floor, 50) / pct(main_t, 50):.2f})")
        print(f"ADD over {pods} pods, p50 / p99 ms: ptp {ms(main_t)}; tuning (a chained plugin that does "
              f"nothing) {ms(floor_t)}; policyc-cni {ms(policyc_t)}, of which the agent's registration "
              f"{ms(agent_t)} (identity and map writes {ms(maps_t)}, the rest mostly the two tcx attachments) and the "
              f"plugin's own start (its VERSION) {ms(start_t)}; policyc-cni minus tuning "
              f"at p50 {(pct(policyc_t, 50) - pct(floor_t, 50)) * 1000:.1f} ms")
        swaps, replaces = [], []
        client = Client(str(node.socket))
        for n, art in enumerate([a2, a1] * 3):
            sha = hashlib.sha256((art / "manifest.json").read_bytes()).hexdigest()
            publish(volume, art, f"{n + 1}")
            start = time.perf_counter()  # the ..data rename is publish's last step
            while client.call("GET", "/v1/health")["artifact"] != sha:
                time.sleep(0.005)
            swaps.append(time.perf_counter() - start)
        logged = [line["seconds"] for line in node.log_lines() if line["msg"] == "replaced the artifact"]
        replaces += logged
        print(f"artifact replace through the watched directory ({len(swaps)} swaps, {pods} pods with hooks), "
              f"p50 / max ms: swap to in force {pct(swaps, 50) * 1000:.0f} / {max(swaps) * 1000:.0f} "
              f"(poll 0.2 s); the replace itself {pct(replaces, 50) * 1000:.0f} / {max(replaces) * 1000:.0f}")
        dels = []
        for p in made:
            start = time.perf_counter()
            res = node.exec_plugin("policyc-cni", "DEL", node.derived(net, net["plugins"][1], p.result), p)
            dels.append(time.perf_counter() - start)
            assert res.code == 0
            node.exec_plugin("ptp", "DEL", node.derived(net, net["plugins"][0], p.result), p)
        print(f"DEL over {pods} pods, p50 / p99 ms: policyc-cni {ms(dels)}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_scale(counts: list[int], relabels: int, work: Path) -> None:
    cluster = work / "cluster"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_cluster.py"), str(cluster), "--pods", "1000",
                    "--policies", "1000"], check=True, capture_output=True)
    art = work / "art"
    top = max(counts)
    sizes = [f"endpoints={2 * top + 4096}", f"ipcache_hosts={2 * top + 4096}"]
    start = time.perf_counter()
    assert cli(["compile", str(cluster / "policies"), "--inventory", str(cluster / "inventory.yaml"),
                "--output-dir", str(art), *[x for s in sizes for x in ("--map-size", s)]]) == 0
    print(f"compiled the 1000-pod cluster in {time.perf_counter() - start:.1f} s")
    pods, ns, held, other = relabel_pair(cluster, art)
    with Node(work, "pcs") as node:
        node.start_agent("pcstest", art, "--listen", "off")
        client = Client(str(node.socket), timeout=120)
        agent_pid = node.agent.pid
        names = sorted(pods)
        base = len(names)
        target = f"{ns}/bench-target"
        client.call("POST", "/v1/endpoint", {"op": "add", "endpoint": target, "ips": ["10.98.0.1"], **held})
        print(f"agent RSS with the artifact's {base} pods: {rss_kib(agent_pid) / 1024:.0f} MiB")
        added = 0
        for count in counts:
            t0 = time.perf_counter()
            while base + 1 + added < count:  # replicas of the cluster's pods: their labels, new addresses
                twin = names[added % base]
                ip = f"10.{99 - added // 65536}.{added // 256 % 256}.{added % 256}"  # outside the cluster's /9
                client.call("POST", "/v1/endpoint", {"op": "add", "endpoint": f"{twin}-r{added}", "ips": [ip],
                                                     **pods[twin]})
                added += 1
            fill = time.perf_counter() - t0
            rss = rss_kib(agent_pid) / 1024
            known, new, served = [], [], []  # served: the agent's own time for a new label set (Change)
            for i in range(relabels):
                spec = other if i % 2 == 0 else held
                t = time.perf_counter()
                client.call("POST", "/v1/endpoint", {"op": "relabel", "endpoint": target, **spec})
                known.append(time.perf_counter() - t)
            for i in range(max(30, relabels // 10)):
                t = time.perf_counter()
                answer = client.call("POST", "/v1/endpoint", {"op": "relabel", "endpoint": target, **other,
                                                              "labels": {**other["labels"], "bench": f"n{count}-{i}"}})
                new.append(time.perf_counter() - t)
                served.append(answer["seconds_total"])
            cli_times = []
            node.stop_agent()
            for i in range(5):
                t = time.perf_counter()
                spec = other if i % 2 == 0 else held
                out = node.policyc("endpoint", "relabel", "pcstest", target, "--service-account",
                                   spec["service_account"], *[f"--label={k}={v}" for k, v in spec["labels"].items()])
                cli_times.append(time.perf_counter() - t)
                assert out.returncode == 0, out.stderr
            node.start_agent("pcstest", art, "--listen", "off")
            agent_pid = node.agent.pid
            client = Client(str(node.socket), timeout=120)
            print(f"{count} pods ({added + 1} added through the agent, {fill:.1f} s): agent RSS {rss:.0f} MiB; "
                  f"relabel through the agent p50 / p99 ms: to a held label set {ms(known)}, to a new one "
                  f"{ms(new)} (in the agent {ms(served)}); `policyc endpoint relabel` process without the agent p50 "
                  f"{pct(cli_times, 50) * 1000:.0f} ms (ratio {pct(cli_times, 50) / pct(known, 50):.0f}x)")


def relabel_pair(cluster: Path, art: Path) -> tuple[dict[str, dict], str, dict, dict]:
    """Every pod as the agent's API takes it, and a namespace with two of its pods' label sets (named
    ports included) that a relabelled pod moves between: both stay held by their pods."""
    ports = named_ports_of(cluster / "inventory.yaml")
    pods = {e["name"]: {**own(e["labels"]), "ports": ports.get(e["name"], [])}
            for e in json.loads((art / "endpoints.json").read_text())}
    ns = next(n for n in sorted({p.split("/")[0] for p in pods})
              if len({json.dumps(spec, sort_keys=True) for p, spec in pods.items() if p.startswith(n + "/")}) > 1)
    mates = [p for p in sorted(pods) if p.startswith(ns + "/")]
    held = pods[mates[0]]
    return pods, ns, held, next(pods[p] for p in mates if pods[p] != held)


def named_ports_of(inventory: Path) -> dict[str, list]:
    """Each pod's named container ports, ``[[name, port, protocol], ...]`` as the agent's API takes them: a
    pod joins its label set's policy class only with the same named ports (endpoints._class_key)."""
    import yaml
    out = {}
    for doc in yaml.safe_load_all(inventory.read_text()):
        for item in (doc or {}).get("items", [doc]) if isinstance(doc, dict) else ():
            if isinstance(item, dict) and item.get("kind") == "Pod":
                meta = item["metadata"]
                out[f"{meta.get('namespace', 'default')}/{meta['name']}"] = [
                    [p["name"], p["containerPort"], p.get("protocol", "TCP")]
                    for c in item["spec"].get("containers", []) for p in c.get("ports", []) if p.get("name")]
    return out


def own(labels: list[str]) -> dict:
    """A pod's own labels and service account from endpoints.json's ``source:key=value`` strings, as the
    agent's endpoint API takes them (``labels``, ``service_account``)."""
    pairs = dict(lab.split(":", 1)[1].split("=", 1) for lab in labels if lab.startswith("k8s:"))
    return {"labels": {k: v for k, v in pairs.items() if not k.startswith(("io.kubernetes.", "io.cilium."))},
            "service_account": pairs.get("io.cilium.k8s.policy.serviceaccount", "default")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cni")
    c.add_argument("--pods", type=int, default=100)
    s = sub.add_parser("scale")
    s.add_argument("--pods", type=int, nargs="+", default=[1000, 10000])
    s.add_argument("--relabels", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pcbench-") as tmp:
        if args.what == "cni":
            bench_cni(args.pods, Path(tmp))
        else:
            bench_scale(sorted(args.pods), args.relabels, Path(tmp))


if __name__ == "__main__":
    main()
