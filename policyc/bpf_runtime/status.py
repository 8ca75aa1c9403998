"""What is loaded where: attachments, map fill levels, per-rule counters, drops and datapath counters."""
from __future__ import annotations

import struct
from pathlib import Path

from ..compiler.codegen import REASON_WORDS
from ..compiler.mapdata import STATS
from .libbpf import Map
from .loaded import artifact_json, manifest_of, open_map
from .state import State

_NO_ITERATION = {"ringbuf"}
_ARRAYS = {"percpu_array", "array"}


def map_levels(state: State, manifest: dict) -> list[dict]:
    """Entries / max entries of every map (arrays are always full; the ring buffer has no entries)."""
    out = []
    for spec in manifest["maps"]:
        if spec["type"] in _NO_ITERATION:
            continue
        m = open_map(Path(state.pin_dir), spec["name"])
        try:
            entries = m.max_entries if spec["type"] in _ARRAYS else len(m.keys())
            out.append({"name": spec["name"], "type": spec["type"], "entries": entries,
                        "max_entries": m.max_entries})
        finally:
            m.close()
    return out


def percpu_counter(m: Map, index: int) -> tuple[int, int]:
    """(packets, bytes) of one slot of a per-CPU ``counter`` array, summed over CPUs."""
    packets = nbytes = 0
    for raw in m.percpu_values(struct.pack("<I", index)):
        p, b = struct.unpack("<QQ", raw[:16])
        packets, nbytes = packets + p, nbytes + b
    return packets, nbytes


def rule_counters(state: State) -> list[dict]:
    """Packets and bytes per rule id (summed over CPUs) with the rule's origin; id 0 is "no rule"."""
    rules = {r["id"]: r for r in artifact_json(state, "rules.json")}
    m = open_map(Path(state.pin_dir), "counters")
    out = []
    try:
        for index in range(m.max_entries):
            packets, nbytes = percpu_counter(m, index)
            r = rules.get(index, {})
            out.append({"id": index, "rule": r.get("rule", "(no rule: default deny / not enforced)" if index == 0
                                                   else "?"),
                        "policy": r.get("policy", ""), "direction": r.get("direction", ""),
                        "action": r.get("action", ""), "file": r.get("file", ""), "line": r.get("line", 0),
                        "packets": packets, "bytes": nbytes})
    finally:
        m.close()
    return out


def datapath_counters(state: State, manifest: dict) -> dict:
    """What no rule counter shows: event losses and suppressions, ND and related ICMP errors passed
    (``stats``), and packets dropped per datapath reason (``drops``, only reasons that occurred).
    Artifacts compiled before these maps existed show none."""
    names = {m["name"] for m in manifest["maps"]}
    out: dict = {"stats": {}, "drops": []}
    if "stats" in names:
        m = open_map(Path(state.pin_dir), "stats")
        try:
            out["stats"] = {name: percpu_counter(m, n)[0] for n, name in enumerate(STATS)}
        finally:
            m.close()
    if "drops" in names:
        m = open_map(Path(state.pin_dir), "drops")
        try:
            for code, word in sorted(REASON_WORDS.items()):
                packets, nbytes = percpu_counter(m, code)
                if packets:
                    out["drops"].append({"reason": word, "packets": packets, "bytes": nbytes})
        finally:
            m.close()
    return out


def collect(state: State) -> dict:
    """Everything `policyc status` shows for one loaded artifact."""
    manifest = manifest_of(state)
    attachments = [{**a.as_dict(), "present": Path(a.pin).exists() or Path(a.pin).is_symlink()}
                   for a in state.attachments]
    return {"name": state.name, "artifact": state.artifact, "manifest_sha256": state.manifest_sha256,
            "loaded_at": state.loaded_at, "tc_mode": state.tc_mode, "pin_dir": state.pin_dir,
            "node_ips": state.node_ips, "features": manifest.get("features", {}), "attachments": attachments,
            "l7": manifest.get("l7", "refuse"),
            "maps": map_levels(state, manifest), "rules": rule_counters(state),
            "datapath": datapath_counters(state, manifest),
            "runtime_changes": len(state.runtime)}
