"""Prometheus text exposition (format 0.0.4) of what `status` collects: verdict counters and map fill levels."""
from __future__ import annotations


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def render(statuses: list[dict]) -> str:
    """One text page for every loaded artifact; rule 0 (no rule) carries verdict "default"."""
    families = {
        "policyc_rule_packets_total": ("counter", "Packets of new flows decided by a rule.", "packets"),
        "policyc_rule_bytes_total": ("counter", "Bytes of new-flow packets decided by a rule.", "bytes"),
    }
    lines = []
    for metric, (kind, help_text, field) in families.items():
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for s in statuses:
            for r in s["rules"]:
                lines.append(metric + _labels(name=s["name"], rule_id=r["id"], rule=r["rule"], policy=r["policy"],
                                              direction=r["direction"], verdict=r["action"] or "default")
                             + f" {r[field]}")
    for metric, section, key, help_text in (
            ("policyc_drops_total", "drops", "reason", "Packets dropped without a rule deciding (spoofed source, ...)."),
            ("policyc_datapath_stat_total", "stats", "stat",
             "Datapath counters no rule sees (conntrack inserts that failed, per table).")):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for s in statuses:
            for c in s[section]:
                lines.append(metric + _labels(name=s["name"], **{key: c[key]}) + f" {c['packets']}")
    for metric, field, help_text in (("policyc_map_entries", "entries", "Entries in a BPF map."),
                                     ("policyc_map_max_entries", "max_entries", "Capacity of a BPF map.")):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for s in statuses:
            for m in s["maps"]:
                lines.append(metric + _labels(name=s["name"], map=m["name"]) + f" {m[field]}")
    lines += ["# HELP policyc_attachments Programs attached per loaded artifact.", "# TYPE policyc_attachments gauge"]
    for s in statuses:
        lines.append("policyc_attachments" + _labels(name=s["name"])
                     + f" {sum(a['present'] for a in s['attachments'])}")
    return "\n".join(lines) + "\n"
