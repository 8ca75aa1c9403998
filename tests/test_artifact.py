"""The artifact directory: reproducible byte for byte, self-describing, and `policyc compile` behaviour."""
from __future__ import annotations

import json
import shutil

import pytest

from cases import inventory, own
from policyc.cli import main
from policyc.compiler.artifact import FORMAT

CASE = own("L29-cnp-egress-to-cidr-only")
INVENTORY = inventory(CASE)


@pytest.fixture(autouse=True)
def _needs_clang():
    if shutil.which("clang") is None:
        pytest.skip("clang not installed")


def _compile(out, *extra) -> int:
    return main(["compile", str(CASE / "policies"), "--inventory", str(INVENTORY),
                 "--output-dir", str(out), *extra])


def _tree(path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_same_inputs_give_byte_identical_artifacts(tmp_path, capsys):
    assert _compile(tmp_path / "one") == 0
    assert _compile(tmp_path / "elsewhere" / "two") == 0
    one, two = _tree(tmp_path / "one"), _tree(tmp_path / "elsewhere" / "two")
    assert set(one) == {"manifest.json", "policyc.bpf.c", "policyc.bpf.o", "maps.json", "maps.bin",
                        "endpoints.json", "rules.json", "sources.json"}
    assert one == two


def test_manifest_describes_the_artifact(tmp_path, capsys):
    assert _compile(tmp_path, "--format", "json") == 0
    report = json.loads(capsys.readouterr().out)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == FORMAT
    assert manifest["features"]["cidr"] and not manifest["features"]["ipv6"]
    assert {p["hook"] for p in manifest["programs"]} == {"tc-from-pod", "tc-to-pod", "xdp-node"}
    maps = {m["name"]: m for m in manifest["maps"]}
    assert maps["ipcache"]["entries"] == 2 and maps["policy"]["entries"] == 1  # the CIDR and world
    assert maps["ipcache_hosts"]["entries"] == 9  # the pods
    assert report["maps"] == manifest["maps"]
    import hashlib
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    source = (tmp_path / "policyc.bpf.c").read_text()
    assert "ipv6hdr" not in source and "DIR_INGRESS" in source
    readable = json.loads((tmp_path / "maps.json").read_text())["maps"]
    assert {"prefix": "192.0.2.0/24", "identity": 1 << 24, "source": "cidr"} in readable["ipcache"]


def test_overflow_is_a_clear_error(tmp_path, capsys):
    assert _compile(tmp_path, "--map-size", "ipcache_hosts=4") == 2
    err = capsys.readouterr().err
    assert "map 'ipcache_hosts' needs 9 entries but holds 4" in err and "Traceback" not in err
    assert not (tmp_path / "manifest.json").exists()


L7_POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: b}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: GET}]}
"""


def test_l7_rules_are_refused_unless_enforced_as_l4_only(tmp_path, capsys):
    """No proxy sees any packet: by default compile refuses, naming the rule where it was written;
    --l7 l4-only compiles them as L4 allows and says so, and nothing claims a proxy."""
    (tmp_path / "p.yaml").write_text(L7_POLICY)
    args = ["compile", str(tmp_path / "p.yaml"), "--inventory", str(INVENTORY), "--output-dir", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'p.yaml'}:7:5: error: spec.ingress[0]: CiliumNetworkPolicy x/web: its http L7 rules need a "
            "proxy, and policyc has none: compile with `--l7 l4-only`") in err and "Traceback" not in err
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert main(args + ["--l7", "l4-only"]) == 0
    out = capsys.readouterr().out
    assert "l7=yes" in out and "L7 rules enforced as L4 only: x/a ingress from x/b 80/TCP (rule 1)" in out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["l7"] == "l4-only" and manifest["features"]["l7"]
    assert "mark" not in (tmp_path / "out" / "policyc.bpf.c").read_text()


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert _compile(tmp_path / "file") == 2
    assert "cannot write the artifact" in capsys.readouterr().err
