"""End to end over real traffic: conformance cases loaded with `policyc load` on the 9-pod netns model.

The topology (tests/netmodel.py) is built once per module; each case is compiled, loaded onto the
host-side veths from inside the node namespace, probed pair by pair and port by port with real TCP
connections and UDP exchanges, compared with `policyc matrix` for the same inputs, and unloaded.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from bccreq import require_bcc
from cases import E2E_INVENTORY, inventory as case_inventory, own, own_cases, params, policy_paths
from kernelreq import require_kernel
from netmodel import (AGENT, GATEWAY4, PIN_ROOT, STATE_DIR, NetModel, in_netns, leftovers, policyc_argv,
                      policyc_env, remove_netns, run)
from policyc.bpf_runtime.state import journal_path, read_state, state_path
from policyc.compiler.inventory import Inventory, load_inventory

pytestmark = pytest.mark.kernel

PREFIX = "pce"
INVENTORY = E2E_INVENTORY
PORTS = "80/TCP,81/TCP,80/UDP,81/UDP"  # what every pod of the model serves over TCP and UDP


# -- helpers --------------------------------------------------------------------------------------

def policyc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``policyc ARGS`` from this checkout in the root namespace (compile, matrix: no kernel)."""
    proc = subprocess.run(policyc_argv(*args), capture_output=True, text=True, env=policyc_env(), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"policyc {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def compile_case(paths: list[str], inventory: Path, out: Path) -> Path:
    policyc("compile", *paths, "--inventory", str(inventory), "--output-dir", str(out))
    return out


def matrix(paths: list[str], inventory: Path) -> dict:
    """``{(from, to, port, protocol): verdict}`` from `policyc matrix --format json` (pods only)."""
    flows = json.loads(policyc("matrix", *paths, "--inventory", str(inventory), "--ports", PORTS,
                               "--format", "json").stdout)["flows"]
    return {(f["from"], f["to"], f["port"], f["protocol"]): f["verdict"] for f in flows}


def pins(name: str) -> Path:
    return PIN_ROOT / name


@contextmanager
def loaded(model: NetModel, artifact: Path, name: str, *extra: str):
    """`policyc load` in the node namespace on every pod's host-side veth; always `policyc unload`."""
    try:
        load = model.policyc("load", str(artifact), "--name", name, *model.attach_args(), *extra)
        assert load.returncode == 0, f"policyc load failed ({load.returncode}):\n{load.stderr}"
        yield
    finally:
        unload = model.policyc("unload", name)
        assert unload.returncode == 0, f"policyc unload failed ({unload.returncode}):\n{unload.stderr}"
        assert not pins(name).exists(), f"{pins(name)} left after unload"


def mismatches(expected: dict, observed: dict) -> list[str]:
    return [f"{src} -> {dst} {port}/{proto}: matrix {verdict}, kernel {observed[(src, dst, port, proto)]}"
            for (src, dst, port, proto), verdict in sorted(expected.items())
            if observed[(src, dst, port, proto)][0] != verdict]


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    require_kernel()
    inventory = load_inventory([INVENTORY])
    with NetModel(inventory, tmp_path_factory.mktemp("netmodel"), prefix=PREFIX) as m:
        yield m
    assert leftovers(PREFIX) == ([], []), "namespaces or pins left after teardown"


@pytest.fixture(scope="module")
def empty(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("no-policies")


# -- the harness itself ---------------------------------------------------------------------------

def test_model_without_policy_allows_everything(model):
    """Every pod answers on every port with its own name: routing and servers are right."""
    results = model.probe(model.all_flows())
    assert len(results) == 9 * 8 * 4
    wrong = {flow: r for flow, r in results.items() if r[0] != "allow"}
    assert not wrong, wrong


def test_prober_sees_drops(model):
    """A flow dropped in the node namespace (by iptables, not policyc) probes as deny: the harness can fail."""
    node = ["nsenter", f"--net=/var/run/netns/{model.node}"]
    rule = ["FORWARD", "-d", str(model.by_name["y/b"].ips[0]), "-p", "udp", "--dport", "81", "-j", "DROP"]
    run(node + ["iptables", "-A", *rule])
    try:
        results = model.probe([("x/a", "y/b", 81, "UDP"), ("x/a", "y/b", 80, "UDP"), ("x/a", "y/b", 81, "TCP")])
    finally:
        run(node + ["iptables", "-D", *rule])
    assert [r[0] for r in results.values()] == ["deny", "allow", "allow"]


def test_teardown_after_a_failure_removes_everything(tmp_path, empty):
    """A test that fails with an artifact loaded still leaves no namespace, process, pin or state file."""
    require_kernel()
    inventory = load_inventory([INVENTORY])
    small = Inventory(endpoints=inventory.pods[:2], namespaces=inventory.namespaces)
    artifact = compile_case(policy_paths(own("L11-knp-empty-podselector-isolates-namespace"), empty), INVENTORY,
                            tmp_path / "artifact")
    prefix, name = f"{PREFIX}t", f"{PREFIX}t-crash"
    with pytest.raises(RuntimeError, match="planned"):
        with NetModel(small, tmp_path / "work", prefix=prefix) as m:
            load = m.policyc("load", str(artifact), "--name", name, *m.attach_args())
            assert load.returncode == 0, load.stderr
            assert pins(name).is_dir()
            processes = list(m.servers.values())
            raise RuntimeError("planned failure")
    assert leftovers(prefix) == ([], [])
    assert all(p.poll() is not None for p in processes)
    assert not (STATE_DIR / f"{name}.json").exists()


# -- conformance cases over real connections ------------------------------------------------------

CLSACT_CASES = [own("L25-cnp-deny-beats-allow"), own("L20-knp-endport-range")]
BCC_CASES = [own("L25-cnp-deny-beats-allow"), own("L19-knp-named-port-resolves-at-destination")]
# Cases with an inventory of their own (the Services cases) do not fit the 9-pod model: their backends
# meet real traffic through kube-proxy's NAT in test_services_netns.py, and the kernel in test_datapath_kernel.py.
MODEL_CASES = [c for c in own_cases() if case_inventory(c) == E2E_INVENTORY]
VARIANTS = ([pytest.param(*p.values, "tcx", "libbpf", id=p.id, marks=p.marks) for p in params(MODEL_CASES)]
            + [pytest.param(c, "clsact", "libbpf", id=f"{c.name}-clsact") for c in CLSACT_CASES]
            + [pytest.param(c, "tcx", "bcc", id=f"{c.name}-bcc") for c in BCC_CASES])


@pytest.mark.parametrize("case,tc_mode,compiler", VARIANTS)
def test_conformance_case_over_real_traffic(model, case, tc_mode, compiler, tmp_path, empty, monkeypatch,
                                            tmp_path_factory):
    """tcx links by default; a few cases also through clsact filters (kernels before 6.6) and through
    programs bcc compiled on the node (`load --compiler bcc`)."""
    if compiler == "bcc":
        require_bcc(tmp_path_factory.getbasetemp(), monkeypatch)
    inventory = case_inventory(case)
    pods = load_inventory([inventory]).pods
    assert [(p.display, p.ips) for p in pods] == [(p.display, p.ips) for p in model.pods], \
        f"{case.name}: inventory differs from the model built from {INVENTORY}"
    paths = policy_paths(case, empty)
    expected = matrix(paths, inventory)
    artifact = compile_case(paths, inventory, tmp_path / "artifact")
    name = f"{PREFIX}-e2e"
    with loaded(model, artifact, name, "--tc-mode", tc_mode, "--compiler", compiler):
        observed = model.probe(list(expected))
        status = model.policyc("status", name, "--format", "json")
    assert status.returncode == 0, status.stderr
    status = json.loads(status.stdout)
    hooks = {(a["iface"], a["hook"], a["mode"], a["present"]) for a in status["attachments"]}
    assert hooks == {(p.host_if, hook, tc_mode, True) for p in model.pods for hook in ("ingress", "egress")}
    # every probed flow met at least one hook as a new flow, and each such verdict is counted by rule
    assert sum(r["packets"] for r in status["rules"]) >= len(expected), status["rules"]
    bad = mismatches(expected, observed)
    assert not bad, f"{case.name}: {len(bad)} of {len(expected)} flows differ:\n" + "\n".join(bad[:40])


# -- the DaemonSet's veth discovery (examples/deploy/policyc-node.sh) on the model --------------

NODE_SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "deploy" / "policyc-node.sh"


@pytest.mark.parametrize("discovery", ["route", "netns"])
def test_node_script_finds_every_pod_veth(model, discovery, tmp_path):
    """Run in the node namespace, the script maps each pod's address to its host-side veth,
    by the /32 route and by the peer index of the pod's eth0."""
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    for pod in model.pods:  # only our namespaces: the script enters every one it is given
        (netns_dir / pod.netns).symlink_to(f"/var/run/netns/{pod.netns}")
    lines = "".join(f"{pod.display} {pod.ips[0]}\n" for pod in model.pods) + "x/ghost 10.99.0.1\n"
    proc = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{model.node}", "env", f"POLICYC_DISCOVERY={discovery}",
         f"POLICYC_NETNS_DIRS={netns_dir}", "sh", str(NODE_SCRIPT), "attachments"],
        input=lines, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [pod.attach for pod in model.pods]
    assert "x/ghost" in proc.stderr


# -- atomic replace under continuous traffic ------------------------------------------------------

SWAP_A = own("L12-knp-pod-peer-is-own-namespace")  # x/a ingress: only x/b 80/TCP
SWAP_B = own("L15-knp-egress-type-without-rules")  # x/a egress: nothing
# One UDP stream per kind of flow: allowed by both, only by A (egress of x/a), only by B (ingress of x/a).
STREAMS = {"both": ("y/a", "z/b", 80, "UDP"), "aonly": ("x/a", "x/b", 80, "UDP"), "bonly": ("x/b", "x/a", 81, "UDP")}
STREAM_INTERVAL = 0.001
SWAPS = "BABABA"


def in_force(timeline: list[tuple[float, float, str]], first: str, t: float) -> str | None:
    """The artifact in force at time ``t``, or None while a load is in progress (any verdict may do)."""
    current = first
    for start, end, key in timeline:
        if t < start:
            return current
        if t <= end:
            return None
        current = key
    return current


def test_atomic_replace_under_traffic(model, tmp_path, empty):
    """Swap two artifacts back and forth under the same name while UDP streams with sequence
    numbers run: no datagram of a flow both allow is lost, and between swaps every datagram gets
    exactly the verdict of the artifact in force (none of a denied flow gets through)."""
    inventory = case_inventory(SWAP_A)
    mats, arts = {}, {}
    for key, case in (("A", SWAP_A), ("B", SWAP_B)):
        paths = policy_paths(case, empty)
        mats[key] = matrix(paths, inventory)
        arts[key] = compile_case(paths, inventory, tmp_path / key)
    assert [(mats["A"][f], mats["B"][f]) for f in STREAMS.values()] == \
        [("allow", "allow"), ("allow", "deny"), ("deny", "allow")], "the cases no longer fit the streams"

    name = f"{PREFIX}-swap"
    timeline: list[tuple[float, float, str]] = []
    with loaded(model, arts["A"], name):
        senders = {}
        for stream, (src, dst, port, _) in STREAMS.items():
            proc = model.spawn(model.by_name[src].netns,
                               ["stream", str(model.by_name[dst].ips[0]), str(port), stream, str(STREAM_INTERVAL)])
            assert proc.stdout.readline().strip() == "started", proc.stderr.read()
            senders[stream] = proc
        time.sleep(0.3)
        for key in SWAPS:
            start = time.monotonic()
            load = model.policyc("load", str(arts[key]), "--name", name, *model.attach_args())
            end = time.monotonic()
            assert load.returncode == 0, f"load over {name} failed:\n{load.stderr}"
            timeline.append((start, end, key))
            time.sleep(0.3)
        sent = {}
        for stream, proc in senders.items():
            out, err = proc.communicate(input="", timeout=30)
            sent[stream] = json.loads(out)["sent"]
            model.procs.remove(proc)
        time.sleep(0.3)  # the last datagrams reach the servers' logs

    received: dict[str, set[int]] = {}
    for stream, (src, dst, _, _) in STREAMS.items():
        src_ips = {str(ip) for ip in model.by_name[src].ips}
        received[stream] = {seq for ip, s, seq in model.received(model.by_name[dst]) if s == stream and ip in src_ips}

    lost, unfiltered, counted = [], [], {"allow": 0, "deny": 0}
    for stream, flow in STREAMS.items():
        for seq, t in sent[stream]:
            key = in_force(timeline, "A", t)
            if key is None and stream != "both":
                continue  # a flow whose verdict changes, sent during a load: either verdict is right
            want = "allow" if stream == "both" else mats[key][flow]
            counted[want] += 1
            got = seq in received[stream]
            if want == "allow" and not got:
                lost.append((stream, seq, key))
            elif want == "deny" and got:
                unfiltered.append((stream, seq, key))
    total = sum(len(s) for s in sent.values())
    report = (f"{total} datagrams over {len(SWAPS)} swaps ({counted}); lost {len(lost)} {lost[:10]}, "
              f"unfiltered {len(unfiltered)} {unfiltered[:10]}; loads took "
              f"{[round(e - s, 2) for s, e, _ in timeline]} s")
    assert counted["deny"] > 100 and counted["allow"] > 1000, report
    print(report)
    assert not lost and not unfiltered, report


# -- relabel under traffic ------------------------------------------------------------------------

RELABEL_CASE = own("L12-knp-pod-peer-is-own-namespace")  # x/a admits only x/b on 80/TCP
RELABEL = {"x/b": {"pod": "c"}, "x/c": {"pod": "b"}}  # swap the labels of x/b and x/c


def relabelled_inventory(source: Path, changes: dict[str, dict], out: Path) -> Path:
    """``source`` with the labels of some pods replaced: the inventory `matrix` must agree with."""
    doc = yaml.safe_load(source.read_text())
    for item in doc["items"]:
        meta = item["metadata"]
        ref = f"{meta.get('namespace')}/{meta['name']}"
        if item["kind"] == "Pod" and ref in changes:
            meta["labels"] = dict(changes[ref])
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def test_relabel_under_traffic(model, tmp_path, empty):
    """`policyc endpoint relabel` swaps the labels of x/b and x/c while a TCP connection x/b -> x/a:80
    is open: new connections get the verdicts `matrix` gives for the relabelled inventory at once,
    and so does the established one: x/a admits only pod=b, so x/b's packets on it are dropped now
    (conntrack entries are decided again under the new revision)."""
    inventory = case_inventory(RELABEL_CASE)
    paths = policy_paths(RELABEL_CASE, empty)
    before = matrix(paths, inventory)
    after = matrix(paths, relabelled_inventory(inventory, RELABEL, tmp_path / "relabelled.yaml"))
    changed = sorted(f for f in before if before[f] != after[f])
    assert ("x/b", "x/a", 80, "TCP") in changed and ("x/c", "x/a", 80, "TCP") in changed

    artifact = compile_case(paths, inventory, tmp_path / "artifact")
    name = f"{PREFIX}-relabel"
    with loaded(model, artifact, name):
        assert not mismatches(before, model.probe(list(before)))
        held = model.spawn(model.by_name["x/b"].netns, ["hold", str(model.by_name["x/a"].ips[0]), "80"])
        assert held.stdout.readline().strip() == "connected"
        held.stdin.write("ping\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "x/a"

        for pod, labels in RELABEL.items():
            proc = model.policyc("endpoint", "relabel", name, pod,
                                 *[arg for k, v in labels.items() for arg in ("--label", f"{k}={v}")])
            assert proc.returncode == 0, f"relabel {pod} failed:\n{proc.stderr}"
        observed = model.probe(list(after))
        held.stdin.write("ping\n")
        held.stdin.flush()
        still = held.stdout.readline().strip()
        held.stdin.close()
        held.wait(timeout=10)
        model.procs.remove(held)

    bad = mismatches(after, observed)
    assert not bad, f"after relabel {len(bad)} flows differ from matrix:\n" + "\n".join(bad)
    assert still == "timeout", f"the connection x/a no longer admits still carries data: {still!r}"


# -- observe --------------------------------------------------------------------------------------

OBSERVE_CASES = [own("L25-cnp-deny-beats-allow"),            # denied by an ingressDeny rule
                 own("L12-knp-pod-peer-is-own-namespace")]  # denied by default deny


def query_why(paths: list[str], inventory: Path, flow) -> dict:
    """The evaluator's deciding direction of a denied flow: ``{"direction", "rules", "default_deny_from"}``."""
    src, dst, port, proto = flow
    out = json.loads(policyc("query", *paths, "--inventory", str(inventory), "--from", src, "--to", dst,
                             "--port", f"{port}/{proto}", "--format", "json").stdout)["queries"][0]
    for direction in ("egress", "ingress"):
        if out[direction]["verdict"] == "deny":
            return {"direction": direction, **out[direction]}
    raise AssertionError(f"{flow} is not denied")


@pytest.mark.parametrize("case", OBSERVE_CASES, ids=[c.name for c in OBSERVE_CASES])
def test_observe_reports_denied_flows_with_the_deciding_rule(model, case, tmp_path, empty):
    inventory = case_inventory(case)
    paths = policy_paths(case, empty)
    expected = matrix(paths, inventory)
    denied = [f for f, v in expected.items() if v == "deny"][:12]
    assert denied
    artifact = compile_case(paths, inventory, tmp_path / "artifact")
    name = f"{PREFIX}-observe"
    with loaded(model, artifact, name):
        observer = subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{model.node}",
             *policyc_argv("observe", name, "--follow", "--timeout", "5", "--verdict", "deny", "--format", "json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=policyc_env())
        try:
            time.sleep(1.0)  # the observer opens the ring buffer before the traffic starts
            probed = model.probe(denied)
            out, err = observer.communicate(timeout=30)
        finally:
            if observer.poll() is None:
                observer.kill()
                observer.wait()
    assert all(v[0] == "deny" for v in probed.values()), probed
    assert observer.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert events, f"observe printed no events:\n{err}"
    seen = {(e["source"], e["destination"], e["dport"], e["protocol"]): e for e in events}
    for flow in denied:
        assert flow in seen, f"{flow} missing from observe ({len(events)} events, e.g. {events[:2]})"
        event = seen[flow]
        why = query_why(paths, inventory, flow)
        # observe and query speak one vocabulary (evaluate.Reason values): compare the strings as printed
        assert (event["verdict"], event["direction"], event["reason"]) == ("deny", why["direction"], why["reason"]), (event, why)
        if why["rules"]:  # the deciding rule, by its origin
            assert (event["rule"], event["policy"]) == (why["rules"][0]["id"], why["rules"][0]["namespace"] + "/"
                                                        + why["rules"][0]["name"]), (event, why)
        else:
            assert event["rule_id"] == 0 and why["reason"] == "default-deny", (event, why)


# -- dual stack -----------------------------------------------------------------------------------

DUAL_STACK_CASES = [own("L25-cnp-deny-beats-allow"), own("L27-cnp-namespace-egress-to-one-namespace")]


def dual_stack_inventory(source: Path, out: Path) -> Path:
    """``source`` with an IPv6 address fd00::<ns>:<pod> beside each pod's 10.244.<ns>.<pod>."""
    doc = yaml.safe_load(source.read_text())
    for item in doc["items"]:
        if item["kind"] == "Pod":
            v4 = item["status"]["podIP"]
            _, _, ns, pod = v4.split(".")
            item["status"]["podIPs"] = [{"ip": v4}, {"ip": f"fd00::{ns}:{pod}"}]
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


@pytest.mark.parametrize("case", DUAL_STACK_CASES, ids=[c.name for c in DUAL_STACK_CASES])
def test_dual_stack_over_real_traffic(case, tmp_path, empty):
    """Pods with an IPv4 and an IPv6 address: every flow is probed over both families, which must
    agree with each other and with `matrix` (the artifact is compiled with its ipv6 feature)."""
    require_kernel()
    inventory = dual_stack_inventory(case_inventory(case), tmp_path / "inventory.yaml")
    paths = policy_paths(case, empty)
    expected = matrix(paths, inventory)
    artifact = compile_case(paths, inventory, tmp_path / "artifact")
    assert json.loads((artifact / "manifest.json").read_text())["features"]["ipv6"]
    with NetModel(load_inventory([inventory]), tmp_path / "work", prefix=f"{PREFIX}6") as m:
        assert m.ipv6
        with loaded(m, artifact, f"{PREFIX}6-e2e"):
            observed = m.probe(list(expected))
    assert leftovers(f"{PREFIX}6") == ([], [])
    bad = mismatches(expected, observed)
    assert not bad, f"{case.name} dual stack: {len(bad)} of {len(expected)} flows differ:\n" + "\n".join(bad[:40])


# -- a pod added between two compiles --------------------------------------------------------------

ADD_CASES = (own("L12-knp-pod-peer-is-own-namespace"),  # pod=a admits only x/b on 80/TCP
             own("L15-knp-egress-type-without-rules"))  # pod=a sends nothing
ADDED = ("x/d", "10.244.1.9", {"pod": "a"})  # x/a's labels: both policies select the new pod


def inventory_with_pod(source: Path, display: str, ip: str, labels: dict, out: Path) -> Path:
    """``source`` plus one pod: a copy of the first pod of its namespace, renamed, readdressed, relabelled."""
    doc = yaml.safe_load(source.read_text())
    ns, name = display.split("/")
    pod = copy.deepcopy(next(i for i in doc["items"] if i["kind"] == "Pod" and i["metadata"]["namespace"] == ns))
    pod["metadata"].update(name=name, labels=dict(labels))
    pod["status"].update(podIP=ip, podIPs=[{"ip": ip}])
    doc["items"].append(pod)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def test_pod_added_at_run_time_is_enforced_and_survives_a_replace(tmp_path, empty):
    """A pod the artifacts were compiled without gets a netns and veth while an artifact is loaded;
    `endpoint add --attach` puts it under policy: real traffic matches `matrix` on an inventory that
    has the pod, before and after an atomic replace with another artifact that does not know it
    either (its identity is re-applied, its hooks swapped with the others); `endpoint remove` takes
    its hooks off and leaves no pin or state behind."""
    require_kernel()
    display, ip, labels = ADDED
    prefix, name = "pcq", "pcq-addpod"
    inventory = case_inventory(ADD_CASES[0])
    grown = inventory_with_pod(inventory, display, ip, labels, tmp_path / "grown.yaml")
    arts, mats = [], []
    for n, case in enumerate(ADD_CASES):
        paths = policy_paths(case, empty)
        arts.append(compile_case(paths, inventory, tmp_path / f"artifact{n}"))  # without the pod
        mats.append(matrix(paths, grown))                                      # the truth with it
    with NetModel(load_inventory([inventory]), tmp_path / "work", prefix=prefix) as m:
        compiled_attach = m.attach_args()
        with loaded(m, arts[0], name):
            pod = m.add_pod(display, (ipaddress.ip_address(ip),))
            add = m.policyc("endpoint", "add", name, display, "--ip", ip, "--attach", pod.host_if, "--format", "json",
                            *[arg for k, v in labels.items() for arg in ("--label", f"{k}={v}")])
            assert add.returncode == 0, add.stderr
            assert {(a["iface"], a["hook"]) for a in json.loads(add.stdout)["attachments"]} == \
                {(pod.host_if, "ingress"), (pod.host_if, "egress")}
            before = m.probe(list(mats[0]))

            swap = m.policyc("load", str(arts[1]), "--name", name, *compiled_attach)  # the 9 compiled pods only
            assert swap.returncode == 0, swap.stderr
            after = m.probe(list(mats[1]))
            status = json.loads(m.policyc("status", name, "--format", "json").stdout)
            hooks = {(a["iface"], a["hook"], a["endpoint"], a["present"]) for a in status["attachments"]}
            assert {(pod.host_if, h, display, True) for h in ("ingress", "egress")} <= hooks
            assert [(r["op"], r["endpoint"]) for r in read_state(name, STATE_DIR).runtime] == [("add", display)]

            remove = m.policyc("endpoint", "remove", name, display)
            assert remove.returncode == 0, remove.stderr
            assert not any(pod.host_if in p.name for p in (pins(name) / "links").iterdir())
            state = read_state(name, STATE_DIR)  # the snapshot with its journal of changes replayed
            assert not [a for a in state.attachments if a.endpoint == display]
            assert state.runtime[-1] == {"op": "remove", "endpoint": display}
            unhooked = m.probe([(display, "y/a", 80, "TCP")])  # pod=a sends nothing, but no hook checks it now
            m.remove_pod(display)
    assert leftovers(prefix) == ([], []) and not state_path(name, STATE_DIR).exists()
    assert not journal_path(name, STATE_DIR).exists()
    # L12 denies flows *to* the pod (its to_pod decides), L15 flows *from* it (its from_pod)
    for label, end, expected, observed in (("before the replace", 1, mats[0], before), ("after it", 0, mats[1], after)):
        assert any(flow[end] == display and v == "deny" for flow, v in expected.items()), label
        bad = mismatches(expected, observed)
        assert not bad, f"{label}: {len(bad)} of {len(expected)} flows differ:\n" + "\n".join(bad[:40])
    assert mats[1][(display, "y/a", 80, "TCP")] == "deny" and unhooked[(display, "y/a", 80, "TCP")][0] == "allow"


# -- a node's own traffic: neighbour discovery, PMTU discovery, fragments --------------------------

NODE_TRAFFIC = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: locked, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: b}}, {matchLabels: {pod: c}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "9000", protocol: TCP}, {port: "9000", protocol: UDP}]}]
  egress:
  - toEndpoints: [{matchLabels: {pod: b}}, {matchLabels: {pod: c}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "9000", protocol: TCP}, {port: "9000", protocol: UDP}]}]
"""
SMALL_MTU = 1280  # the smallest IPv6 allows


def agent(model: NetModel, pod: str, *args: str) -> str:
    """Run one netagent command in ``pod`` to its end; its output."""
    proc = model.spawn(model.by_name[pod].netns, list(args))
    out, err = proc.communicate(timeout=60)
    model.procs.remove(proc)
    assert proc.returncode == 0, err
    return out.strip()


def serving(model: NetModel, pod: str, *args: str):
    proc = model.spawn(model.by_name[pod].netns, list(args))
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_node_traffic_through_the_hooks(tmp_path, empty):
    """x/a is default-deny both ways and talks only to x/b and x/c, yet with no static neighbours:
    IPv6 neighbour discovery (and ARP) crosses its hooks, so every allowed flow works over both
    families and denied ones stay denied; x/b sits behind a 1280-byte link, so a large TCP transfer
    from x/a needs the node's fragmentation-needed / Packet Too Big to reach x/a; a 4000-byte UDP
    datagram to x/c and its 4000-byte answer cross the hooks in fragments."""
    require_kernel()
    inventory = dual_stack_inventory(INVENTORY, tmp_path / "inventory.yaml")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "locked.yaml").write_text(NODE_TRAFFIC)
    paths = [str(tmp_path / "policies")]
    pods = load_inventory([inventory]).pods[:3]  # x/a, x/b, x/c
    expected = {f: v for f, v in matrix(paths, inventory).items()
                if f[0] in {p.display for p in pods} and f[1] in {p.display for p in pods}}
    artifact = compile_case(paths, inventory, tmp_path / "artifact")
    prefix, name = f"{PREFIX}n", f"{PREFIX}n-node"
    with NetModel(Inventory(endpoints=pods), tmp_path / "work", prefix=prefix, static_neighbours=False) as m:
        xb = m.by_name["x/b"]
        run(in_netns(m.node, ["ip", "link", "set", xb.host_if, "mtu", str(SMALL_MTU)]))
        with loaded(m, artifact, name):
            observed = m.probe(list(expected))
            neighbours = m.node_run(["ip", "-6", "neigh", "show", "dev", m.by_name["x/a"].host_if]).stdout
            transfers = {}
            for ip in xb.ips:
                sink = serving(m, "x/b", "sink", "9000")
                transfers[ip.version] = json.loads(agent(m, "x/a", "send", str(ip), "9000", "300000", "10"))
                sink.wait(timeout=10)
                m.procs.remove(sink)
            echo = serving(m, "x/c", "udpecho", "9000")
            answers = {ip.version: max(int(agent(m, "x/a", "udpbig", str(ip), "9000", "4000", "1")) for _ in range(3))
                       for ip in m.by_name["x/c"].ips}
            status = json.loads(m.policyc("status", name, "--format", "json").stdout)
    assert echo.poll() is not None  # killed with the model
    bad = mismatches(expected, observed)
    assert not bad, "without static neighbours:\n" + "\n".join(bad)
    assert any(v == "allow" for v in expected.values()) and any(v == "deny" for v in expected.values())
    assert "fd00::1:1 lladdr" in neighbours, neighbours  # learned by neighbour discovery, through the hooks
    assert transfers == {4: {"answer": "300000"}, 6: {"answer": "300000"}}, transfers
    assert answers == {4: 4000, 6: 4000}, answers
    stats = status["datapath"]["stats"]
    assert stats["nd_passed"] > 0 and stats["icmp_related"] > 0, stats
    assert not status["datapath"]["drops"], status["datapath"]["drops"]


# -- bypasses closed, over real traffic (docs/runtime.md, Threat model) ------------------------------------

EGRESS_LOCKED = own("L15-knp-egress-type-without-rules")  # x/a sends nothing: its answers need conntrack


def observer(model: NetModel, name: str, seconds: float) -> subprocess.Popen:
    """`policyc observe --follow` of denied flows in the node namespace, for ``seconds``."""
    proc = subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{model.node}",
         *policyc_argv("observe", name, "--follow", "--timeout", str(seconds), "--verdict", "deny",
                       "--format", "json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=policyc_env())
    time.sleep(1.0)  # the observer opens the ring buffer before the traffic starts
    return proc


def sends(model: NetModel, senders: list[tuple[str, list[str]]]) -> None:
    """Each ``(netns, netagent argv)`` sender run to its ``sent``."""
    for netns, argv in senders:
        sender = model.spawn(netns, argv)
        assert sender.stdout.readline().strip() == "sent", sender.stderr.read()
        sender.wait()
        model.procs.remove(sender)


def observed_sends(model: NetModel, name: str, senders: list[tuple[str, list[str]]]) -> tuple[list, str, dict]:
    """``sends`` while `policyc observe` watches the drops of loaded ``name``: the drop events, observe's
    stderr, and `status`'s drop counters by reason."""
    watch = observer(model, name, 4)
    sends(model, senders)
    out, err = watch.communicate(timeout=30)
    time.sleep(0.3)
    status = json.loads(model.policyc("status", name, "--format", "json").stdout)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return events, err, {d["reason"]: d["packets"] for d in status["datapath"]["drops"]}


def test_kubelet_probe_reaches_a_pod_whose_egress_is_default_deny(model, tmp_path, empty):
    """A TCP probe from the node's own namespace (as the kubelet probes: its source is the pod veth's
    gateway address, 169.254.1.1, a local address and so `host`) to x/a, which may send nothing: the
    probe connects and gets x/a's answer, while x/a still cannot open a connection itself."""
    paths = policy_paths(EGRESS_LOCKED, empty)
    artifact = compile_case(paths, case_inventory(EGRESS_LOCKED), tmp_path / "artifact")
    xa = model.by_name["x/a"]
    with loaded(model, artifact, f"{PREFIX}-kubelet"):
        probe = run(in_netns(model.node, [sys.executable, str(AGENT), "probe", "0.4"]),
                    input=json.dumps([[str(xa.ips[0]), 80, "TCP"], [str(xa.ips[0]), 81, "TCP"]]))
        own = model.probe([("x/a", "y/a", 80, "TCP")])
        events = model.policyc("observe", f"{PREFIX}-kubelet", "--format", "json", "--verdict", "allow")
    assert json.loads(probe.stdout) == [["allow", "x/a"], ["allow", "x/a"]], probe.stdout
    assert own[("x/a", "y/a", 80, "TCP")][0] == "deny"
    allowed = [json.loads(line) for line in events.stdout.splitlines()]
    assert {(e["source"].split(" ")[0], e["reason"]) for e in allowed if e["destination"] == "x/a"} == \
        {("169.254.1.1", "allow-localhost")}, allowed


def test_an_icmp_error_quoting_past_the_linear_part_is_related(model, tmp_path, empty):
    """The node sends x/a (which may send nothing) a UDP datagram; x/a answers with a port unreachable
    as a packet socket (or a driver with small linear buffers) builds it: outer headers in the skb's
    linear part, the quoted datagram in pages. from_pod read the quoted headers in the linear part
    only, found none, and x/a's egress policy dropped the error; it is related now, as the same error
    all linear is."""
    artifact = compile_case(policy_paths(EGRESS_LOCKED, empty), case_inventory(EGRESS_LOCKED), tmp_path / "artifact")
    xa = model.by_name["x/a"]
    links = [["-n", model.node, "link", "set", xa.host_if], ["-n", xa.netns, "link", "set", "eth0"]]
    got = {}
    with loaded(model, artifact, f"{PREFIX}-paged"):
        try:
            for link in links:  # a frame past a page, so the packet socket puts the rest in pages
                run(["ip", *link, "mtu", "9000"])
            for sport, size, linear in ((47001, 200, 200), (47002, 5000, 42)):
                waiter = model.spawn(model.node, ["unreach_wait", str(xa.ips[0]), "81", str(sport), "3"])
                assert waiter.stdout.readline().strip() == "sent", waiter.stderr.read()
                sender = model.spawn(xa.netns, ["unreach_send", GATEWAY4, str(sport), "81", str(size), str(linear),
                                                xa.host_mac])
                assert sender.stdout.readline().strip() == "sent", sender.stderr.read()
                got[linear] = waiter.stdout.readline().strip()
                for proc in (sender, waiter):
                    proc.wait()
                    model.procs.remove(proc)
        finally:
            for link in links:
                run(["ip", *link, "mtu", "1500"])
    assert got == {200: "got", 42: "got"}, got


def test_a_spoofed_source_from_a_pod_is_dropped_and_observed(model, tmp_path, empty):
    """From inside x/c's netns, a raw socket sends a datagram to x/a as x/b (whom x/a would admit; here
    nothing is filtered at all): from_pod drops it, observe names x/c as the sender, and the same
    datagram from x/c's own address arrives."""
    case = own("L10-no-policy-allows-everything")
    artifact = compile_case(policy_paths(case, empty), case_inventory(case), tmp_path / "artifact")
    xa, xb, xc = (model.by_name[p] for p in ("x/a", "x/b", "x/c"))
    name = f"{PREFIX}-spoof"
    with loaded(model, artifact, name):
        events, err, drops = observed_sends(model, name, [
            (xc.netns, ["spoof", str(src), str(xa.ips[0]), "80", stream])
            for src, stream in ((xb.ips[0], "spoofed"), (xc.ips[0], "own"))])
    got = {(ip, stream) for ip, stream, _ in model.received(xa)}
    assert (str(xc.ips[0]), "own") in got and not any(stream == "spoofed" for _, stream in got), got
    assert [(e["source"], e["destination"], e["reason"], e["endpoint"]) for e in events] == [
        ("x/b", "x/a", "invalid-source", "x/c")], (events, err)
    assert drops["invalid-source"] == 1


ADMITS_B = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-admits-only-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
"""


def test_a_tunnelled_packet_with_a_local_pods_source_is_dropped_and_observed(model, tmp_path):
    """An outside host sends the node a VXLAN packet whose inner datagram claims x/b's address, to x/a,
    which admits x/b alone. The node's vxlan device decapsulates it and routes it to x/a's veth, where
    to_pod took it for x/b's. It is dropped now (`local-source-from-outside`, observed as x/a's), the
    same datagram from the outside host's own address is decided by policy (denied), and x/b's own
    datagram arrives: x/b's packets enter through x/b's veth."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "admits-b.yaml").write_text(ADMITS_B)
    artifact = compile_case([str(policies)], E2E_INVENTORY, tmp_path / "artifact")
    xa, xb = model.by_name["x/a"], model.by_name["x/b"]
    outside_ip, node_ip, vni, mac = "198.51.100.7", "203.0.113.10", 42, "02:00:00:00:fe:01"
    name = f"{PREFIX}-tunnel"
    outside = model.add_outside(outside_ip, node_ip, name="tun")
    device = model.add_vxlan(node_ip, vni, mac)
    tunnelled = ["vxlan", node_ip, str(vni), mac]
    try:
        with loaded(model, artifact, name):
            events, err, drops = observed_sends(model, name, [
                (netns, [*argv, str(src), str(xa.ips[0]), "80", stream]) for netns, argv, src, stream in (
                    (outside, tunnelled, xb.ips[0], "tunnelled"), (outside, tunnelled, outside_ip, "world"),
                    (xb.netns, ["spoof"], xb.ips[0], "b-own"))])
    finally:
        model.remove_link(device)
        remove_netns(outside)
    got = {(ip, stream) for ip, stream, _ in model.received(xa)}
    assert (str(xb.ips[0]), "b-own") in got and not {"tunnelled", "world"} & {stream for _, stream in got}, got
    assert [(e["source"].split(" ")[0], e["destination"], e["reason"], e["endpoint"]) for e in events] == [
        ("x/b", "x/a", "local-source-from-outside", "x/a"), (outside_ip, "x/a", "default-deny", "x/a")], (events, err)
    assert drops["local-source-from-outside"] == 1


C_SENDS_NOTHING = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-sends-nothing, namespace: x}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Egress]
"""
VID0_TAGS = {"1tag": "8100", "2tags": "88a8,8100"}  # tag protocol ids, outermost first


def test_a_vlan_tagged_datagram_from_a_pod_is_dropped_and_observed(model, tmp_path):
    """x/c may send nothing. From inside its netns a packet socket sends x/a a UDP datagram behind one
    VID-0 tag, and behind two (802.1ad, then 802.1Q): the node's kernel strips any run of such tags and
    delivers the datagram inside, as it does here before anything is loaded. The receive path moves
    the outer tag into the skb's metadata before TC ingress, so from_pod saw the single-tagged datagram
    as IP, but the double-tagged one as a frame of ethertype 0x8100, not IP, and passed it past x/c's
    egress policy. Every tagged frame is dropped now as `vlan-tagged`, observed as x/c's and counted;
    x/c's untagged datagram is denied by its policy."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "c-sends-nothing.yaml").write_text(C_SENDS_NOTHING)
    artifact = compile_case([str(policies)], E2E_INVENTORY, tmp_path / "artifact")
    xa, xc = model.by_name["x/a"], model.by_name["x/c"]

    def tagged(stream: str, tpids: str) -> tuple[str, list[str]]:
        return xc.netns, ["tagged", tpids, str(xa.ips[0]), "80", stream, xc.host_mac]

    sends(model, [tagged(f"vlan-open-{tags}", tpids) for tags, tpids in VID0_TAGS.items()])
    name = f"{PREFIX}-vlan"
    with loaded(model, artifact, name):
        events, err, drops = observed_sends(model, name, [
            *(tagged(f"vlan-hooked-{tags}", tpids) for tags, tpids in VID0_TAGS.items()),
            (xc.netns, ["spoof", str(xc.ips[0]), str(xa.ips[0]), "80", "vlan-untagged"])])
    got = {stream for ip, stream, _ in model.received(xa) if ip == str(xc.ips[0]) and stream.startswith("vlan-")}
    assert got == {"vlan-open-1tag", "vlan-open-2tags"}, got
    assert [(e["source"], e["destination"], e["reason"], e["endpoint"]) for e in events] == [
        ("x/c", "x/a", "vlan-tagged", "x/c")] * 2 + [("x/c", "x/a", "default-deny", "x/c")], (events, err)
    assert drops["vlan-tagged"] == 2


def test_a_new_pod_reusing_an_address_inherits_nothing(tmp_path, empty):
    """z/a streams UDP to x/d (namespace x admits everything); x/d leaves and y/d (namespace y admits
    nothing) takes its address while the stream goes on, on the very same 5-tuple: nothing reaches y/d,
    the entry x/d's hook made answers for x/d alone."""
    require_kernel()
    case = own("L11-knp-empty-podselector-isolates-namespace")
    inventory = case_inventory(case)
    artifact = compile_case(policy_paths(case, empty), inventory, tmp_path / "artifact")
    prefix, name, address = "pcu", "pcu-reuse", "10.244.1.9"
    with NetModel(load_inventory([inventory]), tmp_path / "work", prefix=prefix) as m:
        with loaded(m, artifact, name):
            def attach(pod) -> None:  # before the pod's veth is up: no datagram of the stream gets by unhooked
                add = m.policyc("endpoint", "add", name, pod.display, "--ip", address, "--label", "pod=d",
                                "--attach", pod.host_if)
                assert add.returncode == 0, add.stderr

            def plug(display: str) -> None:
                m.add_pod(display, (ipaddress.ip_address(address),), before_up=attach)

            plug("x/d")
            stream = m.spawn(m.by_name["z/a"].netns, ["stream", address, "80", "reuse", "0.01"])
            assert stream.stdout.readline().strip() == "started"
            deadline = time.monotonic() + 10
            while not m.received(m.by_name["x/d"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            before = len(m.received(m.by_name["x/d"]))
            remove = m.policyc("endpoint", "remove", name, "x/d")
            assert remove.returncode == 0, remove.stderr
            m.remove_pod("x/d")
            plug("y/d")
            time.sleep(1.5)
            stream.communicate(input="", timeout=30)
            m.procs.remove(stream)
            time.sleep(0.3)
            inherited = m.received(m.by_name["y/d"])
            fresh = m.probe([("z/b", "y/d", 80, "UDP")])
    assert before > 0, "the stream never reached x/d: the test proves nothing"
    assert inherited == [], f"y/d got {len(inherited)} datagrams of x/d's connection"
    assert fresh[("z/b", "y/d", 80, "UDP")][0] == "deny"


def test_a_syn_flood_leaves_established_connections_working(model, tmp_path, empty):
    """Three connections into x/a (whose answers pass only through conntrack) are established; then
    x/c floods y/b:80, which everyone may reach, with 6000 SYNs, twelve times what ct_new holds here.
    The three connections still carry data both ways; ct_new churned, the answered entries stayed."""
    paths = policy_paths(EGRESS_LOCKED, empty)
    artifact = tmp_path / "artifact"
    policyc("compile", *paths, "--inventory", str(case_inventory(EGRESS_LOCKED)), "--output-dir", str(artifact),
            "--map-size", "ct_new=512")
    xa = model.by_name["x/a"]
    name = f"{PREFIX}-flood"
    held = {}
    with loaded(model, artifact, name):
        try:
            for client in ("y/a", "z/b", "x/b"):
                proc = model.spawn(model.by_name[client].netns, ["hold", str(xa.ips[0]), "80"])
                assert proc.stdout.readline().strip() == "connected"
                held[client] = proc

            def exchange() -> dict:
                for proc in held.values():
                    proc.stdin.write("ping\n")
                    proc.stdin.flush()
                return {client: proc.stdout.readline().strip() for client, proc in held.items()}

            assert set(exchange().values()) == {"x/a"}
            flood = model.spawn(model.by_name["x/c"].netns, ["synflood", str(model.by_name["y/b"].ips[0]), "80",
                                                             "6000"])
            assert flood.stdout.readline().strip() == "sent 6000", flood.stderr.read()
            flood.wait()
            model.procs.remove(flood)
            after = exchange()
            status = json.loads(model.policyc("status", name, "--format", "json").stdout)
        finally:
            for proc in held.values():
                proc.stdin.close()
                proc.wait(timeout=10)
                model.procs.remove(proc)
    assert set(after.values()) == {"x/a"}, after
    levels = {m["name"]: m["entries"] for m in status["maps"]}
    assert levels["ct_tcp"] >= 6 and levels["ct_new"] <= 512, levels
