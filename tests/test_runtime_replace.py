"""Atomic replace: same links, new programs and maps, conntrack carried over only where the new policy allows."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from kernelreq import require_kernel
from policyc.bpf_runtime.libbpf import Map, get_pinned, link_ids, prog_id
from policyc.cli import main
from policyc.compiler import artifact as artifact_module
from policyc.compiler import codegen, mapdata
from policyc.compiler.layouts import Layout, layouts
from runtimekit import XA, XB, XC, compile_to, loaded_name, passes, pins, veths

pytestmark = pytest.mark.kernel

BOTH = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]
    ports: [{port: 80, protocol: TCP}]
"""

# only x/b may connect, and x/a's egress is default deny: replies pass only through conntrack
ONLY_B = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80, protocol: TCP}]
"""


def _ids(name: str) -> dict[str, tuple[int, int]]:
    out = {}
    for pin in (pins(name) / "links").iterdir():
        fd = get_pinned(str(pin))
        try:
            out[pin.name] = link_ids(fd)
        finally:
            os.close(fd)
    return out


def _prog(name: str, program: str) -> int:
    fd = get_pinned(str(pins(name) / "progs" / program))
    try:
        return prog_id(fd)
    finally:
        os.close(fd)


def test_replace_swaps_programs_in_place_and_keeps_allowed_connections(tmp_path, capsys):
    require_kernel()
    old = compile_to(tmp_path / "both", BOTH)
    new = compile_to(tmp_path / "onlyb", ONLY_B)
    with veths("pcr5") as (if0,), loaded_name("pcrtest-rep") as name:
        assert main(["load", str(old), "--name", name, "--attach", f"x/a={if0}"]) == 0
        assert passes(name, "to_pod", XB, XA, sport=40000) and passes(name, "to_pod", XC, XA, sport=40001)
        before = _ids(name)
        capsys.readouterr()

        assert main(["load", str(new), "--name", name, "--format", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["replaced"] and report["conntrack_kept"] == 1 and report["conntrack_dropped"] == 1
        after = _ids(name)
        # the same link objects, now running the new programs
        assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
        assert after[f"ingress-{if0}"][1] == _prog(name, "from_pod") != before[f"ingress-{if0}"][1]
        assert after[f"egress-{if0}"][1] == _prog(name, "to_pod")
        assert not (pins(name) / "next").exists() and os.readlink(pins(name) / "artifact") == str(new.resolve())

        # counters and events of the replay were reset
        assert main(["status", name, "--format", "json"]) == 0
        assert all(r["packets"] == 0 for r in json.loads(capsys.readouterr().out)["rules"])
        assert main(["observe", name]) == 0 and capsys.readouterr().out == ""

        # x/b's connection survives: x/a's reply passes its now default-deny egress through conntrack
        assert passes(name, "from_pod", XA, XB, sport=80, dport=40000)
        # x/c's connection was not carried over: the new policy no longer allows it
        assert not passes(name, "from_pod", XA, XC, sport=80, dport=40001)
        assert not passes(name, "to_pod", XC, XA, sport=40001)
        # and a new connection of x/a's own is refused by the new egress policy
        assert not passes(name, "from_pod", XA, XB, sport=50000, dport=80)


def test_replace_with_a_broken_artifact_leaves_the_old_one_running(tmp_path, capsys):
    require_kernel()
    good = compile_to(tmp_path / "good", BOTH)
    bad = compile_to(tmp_path / "bad", ONLY_B)
    (bad / "policyc.bpf.o").write_bytes(b"not an ELF object")
    with veths("pcr6") as (if0,), loaded_name("pcrtest-rep2") as name:
        assert main(["load", str(good), "--name", name, "--attach", f"x/a={if0}"]) == 0
        before = _ids(name)
        assert main(["load", str(bad), "--name", name]) == 2
        assert "Traceback" not in capsys.readouterr().err
        assert _ids(name) == before and not (pins(name) / "next").exists()
        assert passes(name, "to_pod", XC, XA)  # still the old policy


PACKED_CT_VALUE = 20  # ct_value before aligned layouts: no tail pad


def _repin_packed(path) -> None:
    """Swap a pinned conntrack map for one holding the same entries as a policyc before aligned layouts
    wrote them (20-byte values), as an older artifact's pins would hold them."""
    old = Map.open_pinned(str(path))
    try:
        entries = [(k, old.lookup(k)) for k in old.keys()]
        key_size = old.key_size
    finally:
        old.close()
    os.unlink(path)
    subprocess.run(["bpftool", "map", "create", str(path), "type", "lru_hash", "key", str(key_size),
                    "value", str(PACKED_CT_VALUE), "entries", "64", "name", path.name], check=True)
    packed = Map.open_pinned(str(path))
    try:
        for key, value in entries:
            packed.update(key, value[:PACKED_CT_VALUE])
    finally:
        packed.close()


def test_replace_carries_conntrack_written_in_the_older_packed_layout(tmp_path, capsys):
    require_kernel()
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool needed to pin an old-layout map")
    old = compile_to(tmp_path / "both", BOTH)
    new = compile_to(tmp_path / "onlyb", ONLY_B)
    with veths("pcr7") as (if0,), loaded_name("pcrtest-rep3") as name:
        assert main(["load", str(old), "--name", name, "--attach", f"x/a={if0}"]) == 0
        assert passes(name, "to_pod", XB, XA, sport=40000) and passes(name, "to_pod", XC, XA, sport=40001)
        _repin_packed(pins(name) / "maps" / "ct_new")
        capsys.readouterr()
        assert main(["load", str(new), "--name", name, "--format", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["replaced"] and report["conntrack_kept"] == 1 and report["conntrack_dropped"] == 1
        assert passes(name, "from_pod", XA, XB, sport=80, dport=40000)
        assert not passes(name, "from_pod", XA, XC, sport=80, dport=40001)


class _PackedLayout(Layout):
    """A struct as policyc declared them before aligned layouts: packed, so ct_value ended without a pad."""

    def __post_init__(self):
        pass

    def c_decl(self) -> str:
        return super().c_decl().replace("\n};", "\n} __attribute__((packed));", 1)


# What the datapath before the tick stamp read and wrote instead: every conntrack hit read the clock.
_BEFORE_TICKS = (("v->checked && ct_fresh(clock, v->checked)", "0"),
                 ("v->checked = ct_stamp(clock);", ""), (", .checked = ct_stamp(clock) };", " };"))


def _render_before_ticks(*args) -> str:
    source = codegen.render(*args)
    for now, then in _BEFORE_TICKS:
        assert now in source, f"the generated C no longer holds {now!r}: update _BEFORE_TICKS"
        source = source.replace(now, then)
    return '#pragma clang diagnostic ignored "-Wunused-function"  /* ct_stamp, ct_fresh */\n' + source


def _compile_before_aligned_layouts(out, policies: str, monkeypatch):
    """An artifact as the policyc before aligned layouts compiled it: the same format, a 20-byte ct_value
    (packed, without the tick stamp that now fills its tail). Artifacts are compiled elsewhere (CI, a
    ConfigMap the agent watches) by whatever policyc is there."""
    def older(addr_len: int, port_lpm: bool):
        lay = layouts(addr_len, port_lpm)
        unpadded = tuple(f for f in lay["ct_value"].fields if not f.optional)
        return {**lay, "ct_value": _PackedLayout("ct_value", unpadded)}
    with monkeypatch.context() as m:
        m.setattr(mapdata, "layouts", older)
        m.setattr(artifact_module, "render", _render_before_ticks)
        compile_to(out, policies)
    sizes = {m["name"]: m["value_size"] for m in json.loads((out / "manifest.json").read_text())["maps"]}
    assert sizes["ct_tcp"] == PACKED_CT_VALUE
    return out


@pytest.mark.parametrize("running", ["older", "current"])
def test_replace_into_an_artifact_compiled_before_aligned_layouts(tmp_path, capsys, monkeypatch, running):
    """A policyc upgraded on the node replaces into an artifact the previous policyc compiled (a new policy
    from a CI that has not upgraded yet, or a rollback to the copy before): an answered connection the new
    policy allows is carried in that artifact's 20-byte values, not refused as "24 bytes, expected 20"
    (which keeps the old policy, and every access the new one revokes, in force)."""
    require_kernel()
    if running == "older":
        old = _compile_before_aligned_layouts(tmp_path / "both", BOTH, monkeypatch)
    else:
        old = compile_to(tmp_path / "both", BOTH)
    new = _compile_before_aligned_layouts(tmp_path / "onlyb", ONLY_B, monkeypatch)
    with veths("pcr8") as (if0,), loaded_name("pcrtest-rep4") as name:
        assert main(["load", str(old), "--name", name, "--attach", f"x/a={if0}"]) == 0
        for program, src, dst, sport, dport, flags in (("to_pod", XB, XA, 40000, 80, 0x02),
                                                       ("from_pod", XA, XB, 80, 40000, 0x12),
                                                       ("from_pod", XA, XB, 80, 40000, 0x10),  # answered
                                                       ("to_pod", XB, XA, 40000, 80, 0x10)):
            assert passes(name, program, src, dst, dport=dport, sport=sport, tcp_flags=flags)
        capsys.readouterr()
        assert main(["load", str(new), "--name", name, "--format", "json"]) == 0, capsys.readouterr()
        report = json.loads(capsys.readouterr().out)
        assert report["replaced"] and report["conntrack_kept"] == 1
        # x/a's egress is default deny under ONLY_B: its reply passes only as the carried connection
        assert passes(name, "from_pod", XA, XB, dport=40000, sport=80, tcp_flags=0x10)
