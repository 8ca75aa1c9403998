"""Map and event layouts: naturally aligned, so the programs load each field at once, and laid out by clang
exactly as Python packs them (read back from the object's BTF, which the kernel loads with it)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from cases import inventory, own
from policyc.cli import main
from policyc.compiler.layouts import EVENT, Field, Layout, layouts

CASE = own("L29-cnp-egress-to-cidr-only")
SHAPES = [(addr_len, port_lpm) for addr_len in (4, 16) for port_lpm in (False, True)]


@pytest.mark.parametrize("addr_len,port_lpm", SHAPES)
def test_every_field_sits_at_a_multiple_of_its_own_size(addr_len, port_lpm):
    for lay in [*layouts(addr_len, port_lpm).values(), EVENT]:
        offset, widest = 0, 1
        for f in lay.fields:
            natural = f.size // f.count
            assert offset % natural == 0, (lay.name, f.name, offset)
            offset, widest = offset + f.size, max(widest, natural)
        assert offset % widest == 0, (lay.name, "needs tail padding")


def test_a_layout_that_needs_implicit_padding_is_refused():
    with pytest.raises(ValueError, match="x: b at offset 1"):
        Layout("x", (Field("a", "u8"), Field("b", "u32")))
    with pytest.raises(ValueError, match="tail padding"):
        Layout("x", (Field("a", "u64"), Field("b", "u32")))


def test_records_written_before_their_tail_padding_still_decode():
    """A 20-byte ct_value (replace reads an older artifact's conntrack) and an 84-byte event."""
    ct = layouts(16, False)["ct_value"]
    fields = {"last_seen": 7, "rule": 3, "revision": 9, "port": 443, "flags": 1, "tcp": 5, "checked": 0}
    assert ct.unpack(ct.pack(**fields)[:20]) == ct.unpack(ct.pack(**fields)) == fields
    event = EVENT.pack(ts=1, rule=2, sport=3, saddr=bytes(range(16)))
    assert EVENT.unpack(event[:84]) == EVENT.unpack(event)


def _btf_structs(obj) -> dict[str, tuple[int, dict[str, int]]]:
    """struct name -> (size, member -> byte offset), from `bpftool btf dump file OBJ format raw`."""
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(obj), "format", "raw"],
                         capture_output=True, text=True, check=True).stdout
    structs, current = {}, None
    for line in out.splitlines():
        head = re.match(r"\[\d+\] STRUCT '(\w+)' size=(\d+)", line)
        member = re.match(r"\s+'(\w+)' type_id=\d+ bits_offset=(\d+)", line)
        if head:
            current = structs[head[1]] = (int(head[2]), {})
        elif member and current is not None:
            current[1][member[1]] = int(member[2]) // 8
        elif not line.startswith((" ", "\t")):
            current = None
    return structs


def test_the_object_lays_out_every_struct_as_python_packs_it(tmp_path, capsys):
    if shutil.which("clang") is None or shutil.which("bpftool") is None:
        pytest.skip("clang and bpftool needed")
    out = tmp_path / "artifact"
    assert main(["compile", str(CASE / "policies"), "--inventory", str(inventory(CASE)),
                 "--output-dir", str(out)]) == 0
    capsys.readouterr()
    features = json.loads((out / "manifest.json").read_text())["features"]
    btf = _btf_structs(out / "policyc.bpf.o")
    expected = {**layouts(16 if features["ipv6"] else 4, features["port_ranges"]), "event": EVENT}
    for name, lay in expected.items():
        if name not in btf:
            continue  # a layout no map of this artifact uses (an array's key is a plain __u32)
        size, members = btf[name]
        assert size == lay.size, name
        assert members == {f.name: off for f, off in zip(lay.fields, lay.offsets())}, name
    assert {"ct_key", "ct_value", "interface_value", "frag_key"} <= btf.keys()  # the event: _Static_assert only


def test_fit_drops_only_tail_padding():
    """replace writes conntrack values into the maps of the artifact it switches to; one compiled before
    aligned layouts takes 20-byte values, so the 24-byte record loses its tail (a hint) and nothing else."""
    from policyc.compiler.layouts import layouts
    ct = layouts(16, False)["ct_value"]
    data = ct.pack(last_seen=7, rule=3, revision=9, port=80, flags=1, tcp=2)
    assert ct.fit(data, 24) == data
    assert ct.fit(data, 20) == data[:20] and ct.unpack(ct.fit(data, 20)) == ct.unpack(data)
    for size in (19, 16, 28):
        with pytest.raises(ValueError):
            ct.fit(data, size)


def test_fit_drops_a_trailing_hint_that_an_older_datapath_does_not_keep():
    """ct_value's `checked` (the tick of its last full check) fills what was tail padding: an older
    artifact's 20-byte record goes without it, and a record read without it has it zero (the next
    packet then checks the entry in full)."""
    from policyc.compiler.layouts import layouts
    ct = layouts(16, False)["ct_value"]
    assert [f.name for f in ct.fields if f.optional] == ["checked"]
    data = ct.pack(last_seen=7, rule=3, revision=9, port=80, flags=1, tcp=2, checked=5)
    assert ct.unpack(data)["checked"] == 5
    assert ct.fit(data, 20) == data[:20] and ct.unpack(data[:20]) == {**ct.unpack(data), "checked": 0}
