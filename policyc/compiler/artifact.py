"""The artifact directory (format "policyc-artifact/1", docs/artifact.md): the hand-off to `policyc load`.

Everything is written in a fixed order with sorted keys, and clang runs with
relative debug paths, so the same inputs give a byte-identical directory.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from .codegen import build_object, clang_version, programs, render
from .diagnostics import Diagnostic, PolicycError, Severity
from .inventory import Inventory
from .ir import PolicySet
from .lower import Datapath, lower
from .mapdata import MapSpec, build_maps, encode_maps_bin
from .source import STDIN, STDIN_NAME, expand_paths, read_capped, read_text

FORMAT = "policyc-artifact/1"
SOURCE, OBJECT = "policyc.bpf.c", "policyc.bpf.o"
MANIFEST = "manifest.json"
SOURCES = "sources.json"
L7_MODES = ("refuse", "l4-only")  # policyc has no L7 proxy: refuse L7 rules, or enforce them as L4 only


@dataclass(frozen=True)
class CompileResult:
    datapath: Datapath
    maps: tuple[MapSpec, ...]
    warnings: tuple[str, ...]


def _json(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def _maps_json(specs: list[MapSpec]) -> bytes:
    """maps.json with one entry per line: as readable as indented JSON, and written by the C encoder
    (indented ``json.dumps`` runs in pure Python, seconds for maps of 100,000 entries)."""
    def rows(spec: MapSpec) -> str:
        lines = [json.dumps(r, sort_keys=True) for r in spec.readable()]
        return "[\n    " + ",\n    ".join(lines) + "\n  ]" if lines else "[]"
    body = ",\n".join(f"  {json.dumps(s.name)}: {rows(s)}" for s in sorted(specs, key=lambda s: s.name))
    return f'{{\n"format": {json.dumps(FORMAT)},\n"maps": {{\n{body}\n}}\n}}\n'.encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rules_json(dp: Datapath) -> list[dict]:
    """Rule ids (1-based, 0 = no rule) → where the rule was written: events and counters name rules by id."""
    return [{"id": n + 1, "rule": r.id, "policy": r.origin.policy, "kind": r.origin.policy_kind,
             "file": r.origin.file, "line": r.origin.line, "column": r.origin.column, "path": r.origin.path,
             "direction": r.direction.value, "action": r.action.value}
            for n, r in enumerate(dp.rules)]


def services_json(inventory: Inventory) -> list[dict]:
    """Each Service's addresses and ports, so that events name the Service behind an address or a NodePort."""
    return [{"service": s.display, "addresses": [str(ip) for ip in s.frontends],
             "ports": [{"port": p.port, "protocol": p.protocol.label, "node_port": p.node_port, "target": str(p.target)}
                       for p in s.ports]}
            for s in inventory.services]


def endpoints_json(dp: Datapath, inventory: Inventory) -> list[dict]:
    by_name = {e.name: e for e in dp.endpoints}
    return [{"name": ep.display, "ips": [str(ip) for ip in ep.ips], "endpoint_id": by_name[ep.display].endpoint_id,
             "identity": ep.identity.id, "policy_id": by_name[ep.display].policy_id,
             "labels": sorted(str(lab) for lab in ep.identity.labels)}
            for ep in inventory.pods if ep.display in by_name]


def sources_json(policy_paths: list[str], inventory_paths: list[str], cluster: str) -> dict:
    """The texts the artifact was compiled from: `policyc endpoint` lowers new identities from them on the node."""
    def texts(paths):
        return [{"path": str(f), "text": read_text(f)} for f in expand_paths(paths)]
    return {"format": FORMAT, "cluster": cluster, "policies": texts(policy_paths),
            "inventory": texts(inventory_paths)}


def l7_rules(dp: Datapath) -> list:
    """The rules whose L7 part decides some flow of this datapath (they put FLAG_L7 on an entry)."""
    ids = sorted({e.verdict.rule for e in dp.policy if e.verdict.l7})
    return [dp.rules[i - 1] for i in ids]


def check_l7(dp: Datapath, mode: str) -> Datapath:
    """``refuse``: an error naming every rule whose L7 part would not be enforced. ``l4-only``: such
    rules act as L4 allows, flagged in events; feature ``l7`` is on, so pods added at run time may
    fall under L7 rules too."""
    if mode == "l4-only":
        return dataclasses.replace(dp, features=dataclasses.replace(dp.features, l7=True))
    rules = l7_rules(dp)
    if rules:
        raise PolicycError(*[Diagnostic(Severity.ERROR, f"{r.origin.policy_kind} {r.origin.policy}: its "
                                        f"{', '.join(sorted({pm.l7.kind for pm in r.ports if pm.l7}))} L7 rules need "
                                        "a proxy, and policyc has none: compile with `--l7 l4-only` to enforce "
                                        "them as L4 allows (events then say so)", r.origin.file, r.origin.line,
                                        r.origin.column, r.origin.path) for r in rules])
    return dp


def compile_artifact(policy: PolicySet, inventory: Inventory, out: Path, inputs: list[str],
                     sizes: dict[str, int] | None = None,
                     sources: tuple[list[str], list[str]] | None = None, l7: str = "refuse") -> CompileResult:
    """Lower, generate, build and write the artifact directory ``out``.

    ``sources`` (policy paths, inventory paths) adds sources.json, which runtime relabels need;
    ``l7`` is one of L7_MODES (check_l7).
    """
    dp = check_l7(lower(policy, inventory), l7)
    specs, blowups = build_maps(dp, sizes or {})
    files = [Path(p) for p in inputs]
    source = render(dp, specs, __version__, [str(p) for p in files])
    payload = {
        SOURCE: source.encode(),
        "maps.json": _maps_json(specs),
        "maps.bin": encode_maps_bin(specs),
        "endpoints.json": _json(endpoints_json(dp, inventory)),
        "rules.json": _json(rules_json(dp)),
        "services.json": _json(services_json(inventory)),
    }
    if sources is not None:
        payload[SOURCES] = _json(sources_json(*sources, policy.cluster))
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in payload.items():
            (out / name).write_bytes(data)
    except OSError as exc:
        raise PolicycError(Diagnostic.simple(f"cannot write the artifact to {out}: {exc.strerror or exc}")) from None
    build_object(out.resolve(), SOURCE, OBJECT)
    payload[OBJECT] = (out / OBJECT).read_bytes()
    warnings = tuple(dp.warnings) + tuple(blowups)
    manifest = {
        "format": FORMAT,
        "policyc_version": __version__,
        "inputs": [{"path": STDIN_NAME if str(f) == STDIN else str(f), "sha256": _sha256(read_capped(f))}
                   for f in expand_paths(inputs)],
        "clang": clang_version(),
        "features": dp.features.as_dict(),
        "l7": l7,
        "programs": [{"name": name, "section": section, "hook": hook, "object": OBJECT}
                     for name, section, hook in programs(dp.features.as_dict())],
        "maps": [s.manifest() for s in specs],
        "files": {name: _sha256(data) for name, data in sorted(payload.items())},
        "warnings": list(warnings),
    }
    (out / MANIFEST).write_bytes(_json(manifest))
    return CompileResult(dp, tuple(specs), warnings)
