"""Every conformance case through `policyc matrix --format json`, probe by probe.

The project's own cases (tests/data/conformance, tests/cases.py) cover every semantic area; ../shared's
run beside them when that directory is there. Cases are globbed at test time so that new ones are
picked up without code changes. External peers are the probe endpoints that are not `namespace/pod`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import matrixtext
from cases import inventory, own, own_cases, params, policy_paths
from kernelreq import require_kernel
from policyc.cli import main

OWN_CASES = own_cases()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _externals(probes: list[dict]) -> list[str]:
    """Probe peers that are addresses, not pods: the matrix needs them as --external."""
    peers = {p[end] for p in probes for end in ("from", "to")}
    return sorted(p for p in peers if "/" not in p)


def _matrix_args(case: Path, probes: list[dict], empty: Path) -> list[str]:
    ports = sorted({f"{p['port']}/{p['protocol']}" for p in probes})
    args = ["matrix", *policy_paths(case, empty),
            "--inventory", str(inventory(case)), "--ports", ",".join(ports), "--format", "json"]
    externals = _externals(probes)
    if externals:
        args += ["--external", ",".join(externals)]
    return args


def test_cases_found():
    assert len(OWN_CASES) >= 33


@pytest.mark.needs_shared
def test_shared_cases_found():
    from cases import shared_cases
    assert len(shared_cases()) >= 25, "the shared conformance folder should hold at least the 25 known cases"


@pytest.mark.parametrize("case", params(OWN_CASES))
def test_conformance_case(case: Path, capsys, tmp_path):
    expected = yaml.safe_load((case / "expected.yaml").read_text())
    probes = expected["probes"]
    assert probes, f"{case.name}: no probes"
    code, out, err = run_cli(capsys, *_matrix_args(case, probes, tmp_path))
    assert code == 0, err
    got = {(f["from"], f["to"], f["port"], f["protocol"]): f["verdict"] for f in json.loads(out)["flows"]}
    wrong = []
    for p in probes:
        key = (p["from"], p["to"], int(p["port"]), p["protocol"].upper())
        assert key in got, f"{case.name}: matrix has no flow {key}"
        if got[key] != p["verdict"]:
            wrong.append(f"{key}: expected {p['verdict']}, matrix says {got[key]}")
    assert not wrong, f"{case.name} ({expected.get('notes', '')}):\n" + "\n".join(wrong)


CASE_003 = own("L12-knp-pod-peer-is-own-namespace")


def test_matrix_json_contract(capsys):
    """The JSON shape other tools rely on: flows of {from, to, port, protocol, verdict}, nothing else."""
    code, out, _ = run_cli(capsys, "matrix", str(CASE_003 / "policies"), "--inventory",
                           str(inventory(CASE_003)), "--ports", "80/TCP,81/UDP",
                           "--external", "192.0.2.9", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["flows"]
    flows = doc["flows"]
    pods = {f"{ns}/{p}" for ns in "xyz" for p in "abc"}
    peers = pods | {"192.0.2.9"}
    assert len(flows) == 2 * len(peers) * (len(peers) - 1)
    for flow in flows:
        assert set(flow) == {"from", "to", "port", "protocol", "verdict"}
        assert flow["from"] in peers and flow["to"] in peers and flow["from"] != flow["to"]
        assert isinstance(flow["port"], int) and flow["protocol"] in ("TCP", "UDP")
        assert flow["verdict"] in ("allow", "deny")
    by_key = {(f["from"], f["to"], f["port"], f["protocol"]): f["verdict"] for f in flows}
    assert by_key[("x/b", "x/a", 80, "TCP")] == "allow"
    assert by_key[("x/c", "x/a", 80, "TCP")] == "deny"
    assert by_key[("192.0.2.9", "x/a", 80, "TCP")] == "deny"
    assert by_key[("x/a", "192.0.2.9", 80, "TCP")] == "allow"


def test_matrix_text_is_e2e_truth_table(capsys):
    """One table per port; rows are sources, columns destinations; '.' allowed, 'X' denied, '-' self."""
    code, out, _ = run_cli(capsys, "matrix", str(CASE_003 / "policies"), "--inventory",
                           str(inventory(CASE_003)), "--ports", "80/TCP,81/TCP")
    assert code == 0
    tables = matrixtext.parse(out)
    assert list(tables) == ["80/TCP", "81/TCP"]
    pods = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]
    for port, xa_from_xb in zip(tables, (".", "X")):
        table = tables[port]
        assert {pair for pair in table} == {(s, d) for s in pods for d in pods}
        assert table[("x/b", "x/a")] == xa_from_xb
        assert table[("x/c", "x/a")] == "X"
        assert table[("x/a", "x/a")] == "-"
        assert table[("y/a", "y/b")] == "."
        assert set(table.values()) <= {".", "X", "-"}


@pytest.mark.kernel
@pytest.mark.parametrize("case", params(OWN_CASES, with_shared=False))
def test_local_case_in_kernel(case: Path, tmp_path, capsys):
    """Our trap cases also hold in the compiled datapath: `compile --validate` replays them in the kernel."""
    require_kernel()
    empty = tmp_path / "none"
    empty.mkdir()
    code, out, err = run_cli(capsys, "compile", *policy_paths(case, empty), "--inventory",
                             str(inventory(case)), "--output-dir", str(tmp_path / "art"), "--validate")
    assert code == 0, err
    assert " 0 mismatch(es)" in out
