"""policyc endpoint add/remove/relabel: map updates only, new identities in force at once, for established
flows too (conntrack entries are decided again under the new revision)."""
from __future__ import annotations

import json

import pytest

from kernelreq import require_kernel
from policyc.bpf_runtime.endpoints import catalog_of, change
from policyc.bpf_runtime.loaded import loaded_state, manifest_of
from policyc.cli import main
from policyc.compiler.diagnostics import PolicycError
from runtimekit import XA, XB, XC, compile_to, loaded_name, passes

pytestmark = pytest.mark.kernel

POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: x}
spec:
  endpointSelector: {matchLabels: {role: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: b}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""

DENY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: locked, namespace: x}
spec:
  endpointSelector: {matchLabels: {role: locked}}
  ingressDeny:
  - fromEndpoints: [{}]
"""


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    require_kernel()
    return compile_to(tmp_path_factory.mktemp("pcr") / "ep", POLICIES)


def _endpoint(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["endpoint", *args, "--format", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_relabel_moves_a_peer_into_and_out_of_policy(art, capsys):
    with loaded_name("pcrtest-ep1") as name:
        assert main(["load", str(art), "--name", name]) == 0
        assert passes(name, "to_pod", XB, XA) and not passes(name, "to_pod", XC, XA)
        # x/b leaves pod=b: a new identity no rule allows; its open connection is decided again, and ends
        moved = _endpoint(capsys, "relabel", name, "x/b", "--label", "pod=zzz")
        assert moved["new_identity"] and moved["identity"] > 264
        assert not passes(name, "to_pod", XB, XA, sport=40000)      # established before the relabel
        assert not passes(name, "to_pod", XB, XA, sport=40001)      # a new connection: denied at once
        # x/c takes pod=b: the identity x/b had (257) and its policy
        took = _endpoint(capsys, "relabel", name, "x/c", "--label", "pod=b")
        assert took["identity"] == 257 and not took["new_identity"]
        assert passes(name, "to_pod", XC, XA, sport=40002)
        capsys.readouterr()
        assert main(["observe", name, "--format", "json"]) == 0
        flows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert ("x/b", "deny", moved["identity"]) in {(f["source"], f["verdict"], f["src_identity"]) for f in flows}


def test_relabel_into_a_label_set_no_pod_had(art, capsys):
    """role=web is selected by a policy but carried by no pod at compile time: its entries are lowered now."""
    with loaded_name("pcrtest-ep2") as name:
        assert main(["load", str(art), "--name", name]) == 0
        assert passes(name, "to_pod", XA, XC)  # x/c has no policy yet
        result = _endpoint(capsys, "relabel", name, "x/c", "--label", "pod=c", "--label", "role=web")
        assert result["new_identity"] and result["policy_entries"] >= 1
        assert result["seconds_maps"] < 0.010
        assert passes(name, "to_pod", XB, XC) and not passes(name, "to_pod", XA, XC, sport=40010)
        assert not passes(name, "to_pod", XB, XC, dport=81)


def test_add_and_remove_an_endpoint(art, capsys):
    xd = "10.244.1.9"
    with loaded_name("pcrtest-ep3") as name:
        assert main(["load", str(art), "--name", name]) == 0
        assert not passes(name, "from_pod", xd, XA)  # unknown source address: dropped
        added = _endpoint(capsys, "add", name, "x/d", "--ip", xd, "--label", "pod=a")
        assert added["identity"] == 256  # the label set of x/a
        assert passes(name, "to_pod", XB, xd) and not passes(name, "to_pod", XC, xd)
        assert passes(name, "from_pod", xd, XB)
        assert main(["endpoint", "add", name, "x/e", "--ip", XC, "--label", "pod=e"]) == 2
        assert "belongs to x/c" in capsys.readouterr().err
        _endpoint(capsys, "remove", name, "x/d")
        assert not passes(name, "from_pod", xd, XB, sport=40020)
        assert main(["endpoint", "remove", name, "x/d"]) == 2
        assert "unknown endpoint 'x/d'" in capsys.readouterr().err


def test_feature_compiled_out_is_refused(tmp_path, capsys):
    """A deny rule that selected no pod compiled the deny checks out: relabelling into it needs a recompile."""
    require_kernel()
    art = compile_to(tmp_path / "deny", POLICIES + "---\n" + DENY)
    with loaded_name("pcrtest-ep4") as name:
        assert main(["load", str(art), "--name", name]) == 0
        assert main(["endpoint", "relabel", name, "x/c", "--label", "role=locked"]) == 2
        err = capsys.readouterr().err
        assert "compiled without (deny)" in err and "Traceback" not in err
        assert passes(name, "to_pod", XA, XC)  # nothing changed


def test_a_refused_change_leaves_nothing_in_a_kept_catalog(tmp_path):
    """The agent keeps one catalog across changes.  A refused relabel (role=locked needs the deny checks the
    artifact compiled out) tried the next free number for its label set, which pod=b rules do not match;
    the next new label set gets that number and must be lowered for its own labels: pod=b, admitted by
    x/a on 80 as x/b is."""
    require_kernel()
    art = compile_to(tmp_path / "deny", POLICIES + "---\n" + DENY)
    with loaded_name("pcrtest-ep7") as name:
        assert main(["load", str(art), "--name", name]) == 0
        state = loaded_state(name)
        features = manifest_of(state)["features"]
        cat = catalog_of(state, features)
        with pytest.raises(PolicycError, match="compiled without"):
            change(state, features, "relabel", "x/c", labels={"role": "locked"}, catalog=cat)
        moved = change(state, features, "relabel", "x/c", labels={"pod": "b", "team": "t"}, catalog=cat)
        assert moved.new_identity
        assert passes(name, "to_pod", XC, XA) and not passes(name, "to_pod", XC, XA, dport=81)


def test_artifact_without_sources_is_a_clear_error(art, tmp_path, capsys):
    import shutil
    bare = tmp_path / "bare"
    shutil.copytree(art, bare)
    (bare / "sources.json").unlink()
    with loaded_name("pcrtest-ep5") as name:
        assert main(["load", str(bare), "--name", name]) == 0
        assert main(["endpoint", "relabel", name, "x/c", "--label", "pod=b"]) == 2
        err = capsys.readouterr().err
        assert "sources.json" in err and "Traceback" not in err
        assert main(["endpoint", "remove", name, "x/c"]) == 2  # every change needs the sources


NAMED = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api, namespace: x}
spec:
  endpointSelector: {matchLabels: {role: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: b}}]
    toPorts: [{ports: [{port: http, protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: c}}
  egress:
  - toEndpoints: [{matchLabels: {role: api}}]
    toPorts: [{ports: [{port: http, protocol: TCP}]}]
"""


def test_added_endpoint_brings_its_named_ports(tmp_path, capsys):
    """No compiled pod has a port named http: `endpoint add --port http=8080/TCP` resolves the rules
    naming it, for the pod as a subject (ingress) and as a peer (egress, also a second pod of the same
    identity with another number); a pod added without the port is reached on none."""
    require_kernel()
    art = compile_to(tmp_path / "named", NAMED)
    xd, xe, xf = "10.244.1.9", "10.244.1.10", "10.244.1.11"
    with loaded_name("pcrtest-ep6") as name:
        assert main(["load", str(art), "--name", name]) == 0
        _endpoint(capsys, "add", name, "x/d", "--ip", xd, "--label", "role=api", "--port", "http=8080/TCP")
        assert passes(name, "to_pod", XB, xd, dport=8080) and not passes(name, "to_pod", XB, xd, dport=80)
        assert passes(name, "from_pod", XC, xd, dport=8080) and not passes(name, "from_pod", XC, xd, dport=80)
        _endpoint(capsys, "add", name, "x/e", "--ip", xe, "--label", "role=api", "--port", "http=9090")
        assert passes(name, "from_pod", XC, xe, dport=9090) and passes(name, "to_pod", XB, xe, dport=9090)
        _endpoint(capsys, "add", name, "x/f", "--ip", xf, "--label", "role=api")
        assert not passes(name, "to_pod", XB, xf, dport=8080) and not passes(name, "to_pod", XB, xf, dport=9090)
        for bad in ("http", "http=0/TCP", "HTTP=80", "http=80/ICMP", "a-very-long-port-name=80"):
            assert main(["endpoint", "add", name, "x/g", "--ip", "10.244.1.12", "--label", "a=b", "--port", bad]) == 2
            err = capsys.readouterr().err
            assert "expected NAME=PORT[/PROTO]" in err and "Traceback" not in err
