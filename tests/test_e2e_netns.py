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
