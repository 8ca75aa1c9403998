"""Who owns a hook: one policyc name per interface; pods hooked at run time (`endpoint add --attach`).

Names start with "pcq" (this suite's prefix) so parallel helpers never collide.
"""
from __future__ import annotations

import copy
import json
import socket

import pytest
import yaml

from kernelreq import require_kernel
from policyc.bpf_runtime.attach import TC_HANDLE, TC_PRIORITY
from policyc.bpf_runtime.libbpf import BPF_TC_INGRESS, link_alive, tc_query
from policyc.bpf_runtime.state import read_state
from policyc.cli import main
from runtimekit import CASE3, INVENTORY, XA, XB, XC, compile_to, loaded_name, passes, pinned_link_ids, pins, veths

pytestmark = pytest.mark.kernel

XD = "10.244.1.9"
OPEN = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {pod: c}}}]
"""


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    """Case 003 (pod=a admits only pod=b on 80/TCP) and OPEN (pod=a admits only pod=c), both without x/d."""
    require_kernel()
    base = tmp_path_factory.mktemp("pcq")
    return compile_to(base / "a3", CASE3 / "policies"), compile_to(base / "open", OPEN)


def tc_filter_prog(iface: str) -> int | None:
    """The program id of policyc's clsact filter on ``iface``'s TC ingress, None when there is none."""
    return tc_query(socket.if_nametoindex(iface), BPF_TC_INGRESS, TC_HANDLE, TC_PRIORITY)


def _err(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_second_name_on_the_same_interface_is_refused(arts, capsys):
    """policyc's programs end the tcx chain: a second name behind them would never run, so load refuses."""
    art, other = arts
    with veths("pcq0", "pcq1") as (if0, if1), loaded_name("pcqtest-own1") as first, \
            loaded_name("pcqtest-own2") as second:
        assert main(["load", str(art), "--name", first, "--attach", f"x/a={if0}", "--xdp", "pcq1b"]) == 0
        err = _err(capsys, ["load", str(other), "--name", second, "--attach", f"x/b={if1}",
                            "--attach", f"x/a={if0}"])
        assert f"interface '{if0}' already carries the TC hooks of policyc '{first}'" in err
        assert not pins(second).exists() and read_state(second) is None
        err = _err(capsys, ["load", str(other), "--name", second, "--xdp", "pcq1b"])
        assert f"'pcq1b' already carries the XDP hooks of policyc '{first}'" in err
        assert not pins(second).exists()
        # a runtime pod cannot be hooked on it by the second name either
        assert main(["load", str(other), "--name", second, "--attach", f"x/b={if1}"]) == 0
        err = _err(capsys, ["endpoint", "add", second, "x/d", "--ip", XD, "--label", "pod=a", "--attach", if0])
        assert f"already carries the TC hooks of policyc '{first}'" in err
        assert "x/d" not in {r["endpoint"] for r in read_state(second).runtime}
        # loading over the owner itself is an atomic replace, as before
        ids = pinned_link_ids(first)
        assert main(["load", str(other), "--name", first, "--attach", f"x/a={if0}", "--xdp", "pcq1b"]) == 0
        assert "replaced" in capsys.readouterr().out and pinned_link_ids(first) == ids
        assert passes(first, "to_pod", XC, XA) and not passes(first, "to_pod", XB, XA)
        assert main(["unload", first]) == 0
        assert main(["load", str(other), "--name", second, "--attach", f"x/b={if1}",
                     "--attach", f"x/a={if0}"]) == 0  # free again
        assert {a.iface for a in read_state(second).attachments} == {if0, if1}


@pytest.mark.parametrize("tc_mode", ["tcx", "clsact"])
def test_endpoint_add_attach_then_remove(arts, capsys, tc_mode):
    """--attach hooks the new pod's veth (pinned, in the state, in the load's TC mode); remove detaches it;
    failures change nothing."""
    art, _ = arts
    with veths("pcq2", "pcq3") as (if2, if3), loaded_name("pcqtest-add") as name:
        assert main(["load", str(art), "--name", name, "--attach", f"x/a={if3}", "--tc-mode", tc_mode]) == 0
        err = _err(capsys, ["endpoint", "add", name, "x/d", "--ip", XD, "--label", "pod=a", "--attach", "pcqnone"])
        assert "interface 'pcqnone' does not exist" in err
        err = _err(capsys, ["endpoint", "add", name, "x/d", "--ip", XD, "--label", "pod=a", "--attach", if3])
        assert f"{name} has its hooks there already (for x/a)" in err
        assert read_state(name).runtime == [] and not passes(name, "from_pod", XD, XB)  # nothing written
        capsys.readouterr()
        assert main(["endpoint", "add", name, "x/d", "--ip", XD, "--label", "pod=a", "--attach", if2,
                     "--format", "json"]) == 0
        added = json.loads(capsys.readouterr().out)
        assert added["identity"] == 256
        assert {(a["hook"], a["mode"]) for a in added["attachments"]} == {("ingress", tc_mode), ("egress", tc_mode)}
        assert {p.name for p in (pins(name) / "links").iterdir()} >= {f"ingress-{if2}", f"egress-{if2}"}
        assert {(a.iface, a.endpoint) for a in read_state(name).attachments} == {(if3, "x/a"), (if2, "x/d")}
        assert passes(name, "to_pod", XB, XD) and not passes(name, "to_pod", XC, XD)
        ids = pinned_link_ids(name) if tc_mode == "tcx" else []  # clsact filters have no link ids
        assert tc_mode == "tcx" or tc_filter_prog(if2) is not None
        assert main(["status", name, "--format", "json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert {(a["iface"], a["present"]) for a in status["attachments"]} == {(if2, True), (if3, True)}

        assert main(["endpoint", "remove", name, "x/d"]) == 0
        assert {p.name for p in (pins(name) / "links").iterdir()} == {f"ingress-{if3}", f"egress-{if3}"}
        assert [a.iface for a in read_state(name).attachments] == [if3, if3]
        assert sum(link_alive(i) for i in ids) == (2 if tc_mode == "tcx" else 0)  # x/a's two; x/d's are gone
        if tc_mode == "clsact":  # policyc's filter is off x/d's veth, x/a's is still on
            assert tc_filter_prog(if2) is None and tc_filter_prog(if3) is not None
        assert not passes(name, "from_pod", XD, XB, sport=40030)


def _inventory_with_d(path, labels: dict, pod_name: str = "d"):
    """The case-3 inventory plus x/<pod_name> at XD with ``labels``: an artifact that knows the pod (or the address)."""
    doc = yaml.safe_load(INVENTORY.read_text())
    pod = copy.deepcopy(next(i for i in doc["items"] if i["kind"] == "Pod"))
    pod["metadata"].update(name=pod_name, labels=labels)
    pod["status"].update(podIP=XD, podIPs=[{"ip": XD}])
    doc["items"].append(pod)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_runtime_pods_survive_a_replace_unless_the_artifact_knows_them(arts, tmp_path, capsys):
    art, other = arts
    knows_d = compile_to(tmp_path / "knows-d", CASE3 / "policies", _inventory_with_d(tmp_path / "inv.yaml",
                                                                                   {"pod": "c"}))
    takes_xd = compile_to(tmp_path / "takes-xd", OPEN, _inventory_with_d(tmp_path / "inv-f.yaml", {"pod": "f"}, "f"))
    with veths("pcq4", "pcq5") as (if4, if5), loaded_name("pcqtest-carry") as name:
        assert main(["load", str(art), "--name", name, "--attach", f"x/a={if5}"]) == 0
        assert main(["endpoint", "add", name, "x/d", "--ip", XD, "--label", "pod=a", "--attach", if4]) == 0
        assert main(["endpoint", "add", name, "x/e", "--ip", "10.244.1.10", "--label", "pod=b"]) == 0
        assert main(["endpoint", "remove", name, "x/e"]) == 0
        ids = pinned_link_ids(name)
        # OPEN does not know x/d: it comes back (pod=a, now admitting only pod=c); x/e stays removed;
        # --attach names only the artifact's pod, x/d's hooks stay all the same
        assert main(["load", str(other), "--name", name, "--attach", f"x/a={if5}"]) == 0
        state = read_state(name)
        assert [(r["op"], r["endpoint"], r["labels"]) for r in state.runtime] == [("add", "x/d", {"pod": "a"})]
        assert {(a.iface, a.endpoint) for a in state.attachments} == {(if5, "x/a"), (if4, "x/d")}
        assert pinned_link_ids(name) == ids and all(link_alive(i) for i in ids)
        assert passes(name, "to_pod", XC, XD) and not passes(name, "to_pod", XB, XD)
        assert not passes(name, "from_pod", "10.244.1.10", XB)  # x/e unknown again
        # a compiled pod x/f holds x/d's address: x/d cannot be carried over, the replace changes nothing
        err = _err(capsys, ["load", str(takes_xd), "--name", name])
        assert "x/d (added or changed at run time) cannot be carried over" in err and "belongs to x/f" in err
        assert read_state(name) == state and not (pins(name) / "next").exists()
        assert pinned_link_ids(name) == ids and passes(name, "to_pod", XC, XD, sport=40042)
        # an artifact that knows x/d (as pod=c) wins: the runtime record is dropped, its hooks stay
        assert main(["load", str(knows_d), "--name", name]) == 0
        state = read_state(name)
        assert state.runtime == [] and {(a.iface, a.endpoint) for a in state.attachments} == {(if5, "x/a"),
                                                                                            (if4, "x/d")}
        assert not passes(name, "to_pod", XD, XA, sport=40040)  # x/d is pod=c now: 003 admits only pod=b
        assert passes(name, "from_pod", XD, XB, sport=40041)
