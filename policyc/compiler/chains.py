"""Chains of hops and blast radii as text and JSON: what `paths`, `blast-radius` and `verify` print.

Every hop says which ports it may use, which of them only an L7 filter lets through, and the
rules of both sides that allow it, in the words of `policyc query` (``explain``).
"""
from __future__ import annotations

from collections import Counter, defaultdict

from .connectivity import Chain, Connectivity, Hop, Kind, Place
from .explain import reason_text, rule_json, rule_ref
from .evaluate import Reason
from .portset import label
from .reachability import Side


def _side_text(side: Side) -> str:
    text = reason_text(side.reason)
    if side.reason is Reason.ALLOWED:
        text += " " + "; ".join(rule_ref(r) for r in side.rules)
    if side.denies:
        text += "; less what " + "; ".join(rule_ref(r) for r in side.denies) + " denies"
    return text


def ports_text(hop: Hop) -> str:
    text = str(hop.ports)
    return text + (f" (L7-filtered: {hop.l7}, proxied)" if hop.l7 else "")


def place_name(place: Place, among: frozenset[str] = frozenset()) -> str:
    """The place's name, or the pods of it that a question named (``among``: endpoint names)."""
    named = [ep.display for ep in place.members if ep.display in among]
    if not named or len(named) == len(place.members):
        return place.name
    return named[0] if len(named) == 1 else f"{named[0]} (+{len(named) - 1})"


def _names(conn: Connectivity, chain: Chain, src: frozenset[str], dst: frozenset[str]) -> list[str]:
    names = [place_name(conn.places[chain[0].src], src)] + [conn.places[h.dst].name for h in chain]
    names[-1] = place_name(conn.places[chain[-1].dst], dst)
    return names


def hop_text(src: str, dst: str, hop: Hop) -> list[str]:
    return [f"{src} -> {dst}  {ports_text(hop)}",
            f"    egress  {src}: {_side_text(hop.egress)}",
            f"    ingress {dst}: {_side_text(hop.ingress)}"]


def chain_text(conn: Connectivity, chain: Chain, src: frozenset[str] = frozenset(),
               dst: frozenset[str] = frozenset()) -> list[str]:
    """The chain on one line, then each hop with its ports and both sides' rules; ``src`` and ``dst``
    name the pods the question named, shown instead of their classes."""
    names = _names(conn, chain, src, dst)
    lines = [" -> ".join(names) + f"  ({plural(len(chain), 'hop')})"]
    for n, hop in enumerate(chain, 1):
        first, *rest = hop_text(names[n - 1], names[n], hop)
        lines += [f"  {n}. {first}"] + ["  " + line for line in rest]
    return lines


def place_json(place: Place) -> dict:
    return {"name": place.name, "kind": place.kind.value, "namespace": place.namespace or None,
            "members": [ep.display for ep in place.members] if place.kind is Kind.PODS else []}


def _side_json(side: Side) -> dict:
    return {"reason": side.reason.value, "rules": [rule_json(r) for r in side.rules],
            "less_denied_by": [rule_json(r) for r in side.denies]}


def hop_json(conn: Connectivity, hop: Hop, names: tuple[str, str] | None = None) -> dict:
    src, dst = names or (conn.places[hop.src].name, conn.places[hop.dst].name)
    return {"from": src, "to": dst, "ports": hop.ports.texts(), "l7_filtered": hop.l7.texts(),
            "egress": _side_json(hop.egress), "ingress": _side_json(hop.ingress)}


def chain_json(conn: Connectivity, chain: Chain, src: frozenset[str] = frozenset(),
               dst: frozenset[str] = frozenset()) -> dict:
    names = _names(conn, chain, src, dst)
    return {"length": len(chain), "places": [place_json(conn.places[chain[0].src])]
            + [place_json(conn.places[h.dst]) for h in chain],
            "hops": [hop_json(conn, h, (names[n], names[n + 1])) for n, h in enumerate(chain)]}


# ---------------------------------------------------------------- blast radius

def reached_pods(place: Place, sources: frozenset) -> list[str]:
    """The pods of a reached class, less the compromised ones themselves."""
    return [ep.display for ep in place.members if ep.display not in sources] if place.kind is Kind.PODS else []


def blast_json(conn: Connectivity, found: dict[int, tuple[int, Hop]], sources: frozenset,
               origins: frozenset[int] = frozenset()) -> dict:
    """Everything reached, by place, with counts by hop and by namespace; ``origins`` are the places of
    the compromised endpoints (a node or an outside address reached again is itself, not reached)."""
    rows = []
    for pid, (hops, hop) in sorted(found.items(), key=lambda kv: (kv[1][0], conn.places[kv[0]].name)):
        place = conn.places[pid]
        pods = reached_pods(place, sources)
        if place.kind is Kind.PODS and not pods or place.kind is not Kind.PODS and pid in origins:
            continue  # only the compromised endpoints themselves
        name = place_name(place, frozenset(pods))
        first = (place_name(conn.places[hop.src], sources), name)
        rows.append({**place_json(place), "name": name, "members": pods, "hops": hops,
                     "first_hop": hop_json(conn, hop, first)})
    by_hop: dict[int, Counter] = defaultdict(Counter)
    by_ns: dict[str, dict] = {}
    for row in rows:
        by_hop[row["hops"]][row["kind"]] += len(row["members"]) if row["kind"] == "pods" else 1
        if row["kind"] == "pods":
            ns = by_ns.setdefault(row["namespace"], {"pods": 0, "nearest": row["hops"]})
            ns["pods"] += len(row["members"])
    totals = Counter()
    for counts in by_hop.values():
        totals.update(counts)
    return {"pods": totals["pods"], "nodes": totals["node"], "outside": totals["world"] + totals["reserved"],
            "by_hops": [{"hops": h, "pods": c["pods"], "nodes": c["node"], "outside": c["world"] + c["reserved"]}
                        for h, c in sorted(by_hop.items())],
            "by_namespace": [{"namespace": ns, **v} for ns, v in sorted(by_ns.items())],
            "reached": rows}


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def blast_text(conn: Connectivity, data: dict) -> list[str]:
    lines = [f"{plural(data['pods'], 'pod')} in {plural(len(data['by_namespace']), 'namespace')}, "
             f"{plural(data['nodes'], 'node')} reached"
             + (f", and outside the cluster {plural(data['outside'], 'range')} the policies tell apart"
                if data["outside"] else "")]
    if data["by_hops"]:
        lines.append("by hops:")
        lines += [f"  {h['hops']}: {plural(h['pods'], 'pod')}, {plural(h['nodes'], 'node')}, {h['outside']} outside"
                  for h in data["by_hops"]]
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in data["reached"]:
        groups[row["namespace"] or f"({row['kind']})"].append(row)
    for group, rows in sorted(groups.items()):
        pods = sum(len(r["members"]) for r in rows)
        lines.append(f"{group}:" + (f" {plural(pods, 'pod')}" if pods else ""))
        for row in rows:
            first = row["first_hop"]
            lines.append(f"  {row['name']}  {plural(row['hops'], 'hop')}, first by "
                         f"{first['from']} -> {first['to']} {label(first['ports'])}"
                         + (" (L7-filtered)" if first["l7_filtered"] else ""))
    return lines
