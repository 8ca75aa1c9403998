"""Prometheus text exposition (format 0.0.4) of what `status` collects: verdict counters and map fill levels."""
from __future__ import annotations

from ..compiler.mapdata import CT_MAPS


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _datapath_lines(statuses: list[dict]) -> list[str]:
    """Event losses and suppressions, control traffic passed, drops per datapath reason."""
    lines = ["# HELP policyc_events_lost_total Events lost because the ring buffer was full.",
             "# TYPE policyc_events_lost_total counter"]
    lines += [f"policyc_events_lost_total{_labels(name=s['name'])} {s['datapath']['stats'].get('events_lost', 0)}"
              for s in statuses]
    lines += ["# HELP policyc_events_ratelimited_total Events not sent because their verdict's budget was spent.",
              "# TYPE policyc_events_ratelimited_total counter"]
    for s in statuses:
        for verdict in ("allow", "drop"):
            value = s["datapath"]["stats"].get(f"events_ratelimited_{verdict}", 0)
            lines.append("policyc_events_ratelimited_total" + _labels(name=s["name"], verdict=verdict) + f" {value}")
    lines += ["# HELP policyc_conntrack_insert_failures_total Conntrack entries the kernel refused to insert, "
              "per table (the packet passed unrecorded).", "# TYPE policyc_conntrack_insert_failures_total counter"]
    for s in statuses:
        for table in CT_MAPS:
            value = s["datapath"]["stats"].get(f"{table}_full", 0)
            lines.append("policyc_conntrack_insert_failures_total" + _labels(name=s["name"], map=table) + f" {value}")
    lines += ["# HELP policyc_datapath_packets_total Packets passed without policy as control traffic, or "
              "fragments the fragment map could not record.", "# TYPE policyc_datapath_packets_total counter"]
    for s in statuses:
        for what in ("nd_passed", "icmp_related", "frag_map_full"):
            value = s["datapath"]["stats"].get(what, 0)
            lines.append("policyc_datapath_packets_total" + _labels(name=s["name"], counter=what) + f" {value}")
    for metric, field, help_text in (
            ("policyc_drop_packets_total", "packets", "Packets dropped for a datapath reason."),
            ("policyc_drop_bytes_total", "bytes", "Bytes dropped for a datapath reason.")):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for s in statuses:
            lines += [metric + _labels(name=s["name"], reason=d["reason"]) + f" {d[field]}"
                      for d in s["datapath"]["drops"]]
    return lines


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
    for metric, field, help_text in (("policyc_map_entries", "entries", "Entries in a BPF map."),
                                     ("policyc_map_max_entries", "max_entries", "Capacity of a BPF map.")):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for s in statuses:
            for m in s["maps"]:
                lines.append(metric + _labels(name=s["name"], map=m["name"]) + f" {m[field]}")
    lines += _datapath_lines(statuses)
    lines += ["# HELP policyc_attachments Programs attached per loaded artifact.", "# TYPE policyc_attachments gauge"]
    for s in statuses:
        lines.append("policyc_attachments" + _labels(name=s["name"])
                     + f" {sum(a['present'] for a in s['attachments'])}")
    return "\n".join(lines) + "\n"
