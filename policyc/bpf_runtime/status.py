"""What is loaded where: attachments, map fill levels, per-rule counters, drops and datapath counters."""
from __future__ import annotations

import struct
from pathlib import Path

from ..compiler.codegen import REASON_CODES, REASON_WORDS, STATS
from ..compiler.evaluate import Reason
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


def counter(m: Map, index: int) -> tuple[int, int]:
    """(packets, bytes) of one slot of a per-CPU counter array, summed over CPUs."""
    packets = nbytes = 0
    for raw in m.percpu_values(struct.pack("<I", index)):
        p, b = struct.unpack("<QQ", raw[:16])
        packets, nbytes = packets + p, nbytes + b
    return packets, nbytes


def named_counters(state: State, map_name: str, slots: dict[str, int], key: str) -> list[dict]:
    """``{key: name, packets, bytes}`` for every named slot of a counter array; none if the map is absent."""
    if not (Path(state.pin_dir) / "maps" / map_name).exists():
        return []  # loaded by a policyc that did not have it
    m = open_map(Path(state.pin_dir), map_name)
    try:
        return [{key: name, **dict(zip(("packets", "bytes"), counter(m, index)))} for name, index in slots.items()]
    finally:
        m.close()


def drop_counters(state: State) -> list[dict]:
    """Drops no rule decided, per reason (the evaluator's reasons are counted per rule instead)."""
    own = {REASON_WORDS[name]: code for name, code in REASON_CODES.items() if name not in Reason.__members__}
    return named_counters(state, "drops", own, "reason")


def stat_counters(state: State) -> list[dict]:
    """Datapath counters no rule sees (conntrack inserts that failed, per table, ...)."""
    return named_counters(state, "stats", {name.lower(): n for n, name in enumerate(STATS)}, "stat")


def rule_counters(state: State) -> list[dict]:
    """Packets and bytes per rule id (summed over CPUs) with the rule's origin; id 0 is "no rule"."""
    rules = {r["id"]: r for r in artifact_json(state, "rules.json")}
    m = open_map(Path(state.pin_dir), "counters")
    out = []
    try:
        for index in range(m.max_entries):
            packets, nbytes = counter(m, index)
            r = rules.get(index, {})
            out.append({"id": index, "rule": r.get("rule", "(no rule: default deny / not enforced)" if index == 0
                                                   else "?"),
                        "policy": r.get("policy", ""), "direction": r.get("direction", ""),
                        "action": r.get("action", ""), "file": r.get("file", ""), "line": r.get("line", 0),
                        "packets": packets, "bytes": nbytes})
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
            "maps": map_levels(state, manifest), "rules": rule_counters(state), "drops": drop_counters(state),
            "stats": stat_counters(state),
            "runtime_changes": len(state.runtime)}
