"""Prometheus metrics of what `status` collects: verdict counters and map fill levels per loaded name.

prometheus_client does the exposition (format 0.0.4, escaping, HELP/TYPE): ``StatusCollector``
turns status dictionaries into metric families at scrape time, so `policyc status --metrics` and the
agent's ``/metrics`` print the same families from the same code.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..compiler.mapdata import CT_MAPS

RULE_LABELS = ["name", "rule_id", "rule", "policy", "direction", "verdict"]


class StatusCollector:
    """A prometheus_client collector over ``statuses()`` (bpf_runtime.status.collect of each loaded name)."""

    def __init__(self, statuses: Callable[[], list[dict]]):
        self.statuses = statuses

    def collect(self):
        statuses = self.statuses()
        packets = CounterMetricFamily("policyc_rule_packets", "Packets of new flows decided by a rule.",
                                      labels=RULE_LABELS)
        nbytes = CounterMetricFamily("policyc_rule_bytes", "Bytes of new-flow packets decided by a rule.",
                                     labels=RULE_LABELS)
        entries = GaugeMetricFamily("policyc_map_entries", "Entries in a BPF map.", labels=["name", "map"])
        capacity = GaugeMetricFamily("policyc_map_max_entries", "Capacity of a BPF map.", labels=["name", "map"])
        attached = GaugeMetricFamily("policyc_attachments", "Programs attached per loaded artifact.",
                                     labels=["name"])
        for s in statuses:
            for r in s["rules"]:  # rule 0 (no rule) carries verdict "default"
                labels = [s["name"], str(r["id"]), r["rule"], r["policy"], r["direction"], r["action"] or "default"]
                packets.add_metric(labels, r["packets"])
                nbytes.add_metric(labels, r["bytes"])
            for m in s["maps"]:
                entries.add_metric([s["name"], m["name"]], m["entries"])
                capacity.add_metric([s["name"], m["name"]], m["max_entries"])
            attached.add_metric([s["name"]], sum(a["present"] for a in s["attachments"]))
        return [packets, nbytes, entries, capacity, *_datapath_families(statuses), attached]


def _datapath_families(statuses: list[dict]) -> list:
    """Event losses and suppressions, control traffic passed, drops per datapath reason."""
    lost = CounterMetricFamily("policyc_events_lost", "Events lost because the ring buffer was full.",
                               labels=["name"])
    limited = CounterMetricFamily("policyc_events_ratelimited",
                                  "Events not sent because their verdict's budget was spent.", labels=["name", "verdict"])
    ct_full = CounterMetricFamily("policyc_conntrack_insert_failures", "Conntrack entries the kernel refused to "
                                  "insert, per table (the packet passed unrecorded).", labels=["name", "map"])
    passed = CounterMetricFamily("policyc_datapath_packets", "Packets passed without policy as control traffic, or "
                                 "fragments the fragment map could not record.", labels=["name", "counter"])
    drops = CounterMetricFamily("policyc_drop_packets", "Packets dropped for a datapath reason.",
                                labels=["name", "reason"])
    dropped_bytes = CounterMetricFamily("policyc_drop_bytes", "Bytes dropped for a datapath reason.",
                                        labels=["name", "reason"])
    for s in statuses:
        stats = s["datapath"]["stats"]
        lost.add_metric([s["name"]], stats.get("events_lost", 0))
        for verdict in ("allow", "drop"):
            limited.add_metric([s["name"], verdict], stats.get(f"events_ratelimited_{verdict}", 0))
        for table in CT_MAPS:
            ct_full.add_metric([s["name"], table], stats.get(f"{table}_full", 0))
        for what in ("nd_passed", "icmp_related", "frag_map_full"):
            passed.add_metric([s["name"], what], stats.get(what, 0))
        for d in s["datapath"]["drops"]:
            drops.add_metric([s["name"], d["reason"]], d["packets"])
            dropped_bytes.add_metric([s["name"], d["reason"]], d["bytes"])
    return [lost, limited, ct_full, passed, drops, dropped_bytes]


def render(statuses: list[dict]) -> str:
    """One text page for every loaded artifact (`policyc status --metrics`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: statuses))
    return generate_latest(registry).decode()
