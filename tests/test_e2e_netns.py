"""End to end over real traffic: conformance cases loaded with `policyc load` on the 9-pod netns model.

The topology (tests/netmodel.py) is built once per module; each case is compiled, loaded onto the
host-side veths from inside the node namespace, probed pair by pair and port by port with real TCP
connections and UDP exchanges, compared with `policyc matrix` for the same inputs, and unloaded.
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from conftest import SHARED
from kernelreq import require_kernel
from netmodel import PIN_ROOT, NetModel, leftovers, policyc_argv, policyc_env, run
from policyc.compiler.inventory import load_inventory

pytestmark = pytest.mark.kernel

PREFIX = "pce"
CASES = sorted(p for p in (SHARED / "conformance").glob("*") if (p / "inventory.yaml").is_file())
INVENTORY = CASES[0] / "inventory.yaml"


# -- helpers --------------------------------------------------------------------------------------

def policy_paths(case: Path, empty: Path) -> list[str]:
    """A case's policies folder, or an empty folder for a case without one (no policy at all)."""
    policies = case / "policies"
    return [str(policies if policies.is_dir() else empty)]


def policyc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``policyc ARGS`` from this checkout in the root namespace (compile, matrix: no kernel)."""
    proc = subprocess.run(policyc_argv(*args), capture_output=True, text=True, env=policyc_env(), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"policyc {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def compile_case(paths: list[str], inventory: Path, out: Path) -> Path:
    policyc("compile", *paths, "--inventory", str(inventory), "-o", str(out))
    return out


def matrix(paths: list[str], inventory: Path) -> dict:
    """``{(from, to, port, protocol): verdict}`` from `policyc matrix --format json` (pods only)."""
    flows = json.loads(policyc("matrix", *paths, "--inventory", str(inventory), "--format", "json").stdout)["flows"]
    return {(f["from"], f["to"], f["port"], f["protocol"]): f["verdict"] for f in flows}


def pins(name: str) -> Path:
    return PIN_ROOT / name


@contextmanager
def loaded(model: NetModel, artifact: Path, name: str):
    """`policyc load` in the node namespace on every pod's host-side veth; always `policyc unload`."""
    try:
        load = model.policyc("load", str(artifact), "--name", name, *model.attach_args())
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


def verdicts(model: NetModel, flows) -> dict:
    return {flow: result for flow, result in model.probe(list(flows)).items()}


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


# -- conformance cases over real connections ------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance_case_over_real_traffic(model, case, tmp_path, empty):
    inventory = case / "inventory.yaml"
    pods = load_inventory([inventory]).pods
    assert [(p.display, p.ips) for p in pods] == [(p.display, p.ips) for p in model.pods], \
        f"{case.name}: inventory differs from the model built from {INVENTORY}"
    paths = policy_paths(case, empty)
    expected = matrix(paths, inventory)
    artifact = compile_case(paths, inventory, tmp_path / "artifact")
    with loaded(model, artifact, f"{PREFIX}-e2e"):
        observed = model.probe(list(expected))
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

SWAP_A = SHARED / "conformance" / "003-knp-allow-x-b-to-x-a-80tcp"  # x/a ingress: only x/b 80/TCP
SWAP_B = SHARED / "conformance" / "007-knp-deny-egress-x-a"         # x/a egress: nothing
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
    inventory = SWAP_A / "inventory.yaml"
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
    assert not lost and not unfiltered, report
