"""Findings: the one catalogue of check ids, and how findings are shown (text, JSON, SARIF 2.1.0).

Check ids are stable: tools and baselines refer to them, so an id is never
reused for another meaning.  docs/checks.md documents each one.
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass

from .. import explain
from ..diagnostics import sarif_location
from ..evaluate import Flow
from ..ir import (CLUSTER_KEY, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_KEY, Direction, Endpoint,
                  EndpointKind, Origin)

DOCS_URL = "https://github.com/policyc/policyc/blob/main/docs/checks.md"


class Level(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"

    @property
    def rank(self) -> int:
        return {"error": 3, "warning": 2, "note": 1}[self.value]


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    level: Level
    summary: str
    help: str


CATALOGUE: dict[str, Check] = {c.id: c for c in (
    Check("PC001", "shadowed-allow", Level.WARNING, "Allow rule is shadowed by other rules",
          "Everything this rule allows is already allowed by the listed rules of the same subject and "
          "direction (or denied by listed deny rules), or is always allowed (a pod reaching itself, the local "
          "node reaching its pods). Deleting it changes no verdict: remove it, or narrow the covering rules if the overlap is "
          "unintended."),
    Check("PC002", "dead-allow", Level.WARNING, "Allow rule is overridden by deny rules",
          "Every flow this rule allows is dropped by the listed deny rules (deny always wins, R4.2). "
          "Deleting the rule changes no verdict. Remove the rule or the deny."),
    Check("PC003", "duplicate-rule", Level.WARNING, "Duplicate rule",
          "The rule is identical to an earlier rule of the same subject and direction; deleting it changes "
          "no verdict."),
    Check("PC004", "duplicate-policy", Level.WARNING, "Duplicate policy",
          "The policy has exactly the rules of an earlier policy: one of them can go."),
    Check("PC005", "ineffective-deny", Level.NOTE, "Deny rule has no effect",
          "Nothing this deny rule matches would be allowed without it (no allow rule matches, or the only "
          "traffic it matches is always allowed, e.g. host to local pod)."),
    Check("PC006", "contradictory-selector", Level.ERROR, "Selector can never match",
          "The selector's requirements contradict each other (In and NotIn the same value, Exists and "
          "DoesNotExist): the rule applies to nothing."),
    Check("PC007", "selector-matches-no-endpoint", Level.WARNING, "Selector matches no endpoint of the inventory",
          "No endpoint of the given inventory matches this selector: a typo in a label, or a stale rule."),
    Check("PC008", "missing-default-deny-ingress", Level.WARNING, "Endpoints without ingress default-deny",
          "These endpoints accept every connection not explicitly denied. Add a namespace-wide policy with "
          "an ingress section (e.g. `endpointSelector: {}` and `ingress: [{}]`)."),
    Check("PC009", "missing-default-deny-egress", Level.NOTE, "Endpoints without egress default-deny",
          "These endpoints may open any connection not explicitly denied. Add a namespace-wide policy with "
          "an egress section if egress should be restricted."),
    Check("PC010", "world-exposure", Level.WARNING, "Ingress allowed from outside the cluster",
          "The rule admits every public address: entities world/all, a peer-less toPorts rule, a selector "
          "that also matches world (R2.10), or CIDRs that together cover every public address of IPv4 or "
          "IPv6 (0.0.0.0/0, 0.0.0.0/1 + 128.0.0.0/1, 0.0.0.0/0 except private ranges). Make sure this is "
          "intended."),
    Check("PC011", "world-all-ports", Level.ERROR, "Every port open to the world",
          "The rule admits every public address (from any mix of entities and CIDRs) on every port of "
          "TCP, UDP or SCTP, or on every protocol. Restrict it with toPorts."),
    Check("PC012", "clusterwide-any-pod", Level.WARNING, "Cluster-wide policy admits every pod",
          "`fromEndpoints: [{}]` in a CiliumClusterwideNetworkPolicy selects all pods of all namespaces "
          "(R2.13), not the pods of one namespace."),
    Check("PC013", "ineffective-l7", Level.WARNING, "L7 rule made ineffective by an L4-only allow",
          "Another rule allows the same peer and port without L7 rules, so every request is allowed "
          "(Cilium turns the L7 filter into a wildcard, R9.3). Not reported for a DNS rule a toFQDNs rule "
          "of the same subject may depend on: it still sends the lookups through the proxy (R10.1)."),
    Check("PC014", "fqdn-without-dns", Level.ERROR, "toFQDNs without a DNS rule",
          "toFQDNs only matches addresses seen in DNS answers through Cilium's DNS proxy; without an egress "
          "rule with `rules: {dns: [...]}` for the subject, the rule never matches (R10.1)."),
    Check("PC015", "entities-with-l7", Level.WARNING, "toEntities/fromEntities combined with L7 rules",
          "L7 rules on entity peers (world, host, cluster…) are fragile: host traffic is widened to allow-all "
          "(R9.3c) and world traffic bypasses the proxy in some setups. Use endpoint or CIDR peers."),
    Check("PC016", "cidr-covers-pods", Level.WARNING, "CIDR rule covers pod addresses",
          "CIDR peers never select pods or nodes (R7.1): the pod addresses inside this CIDR are not matched "
          "by it. Use toEndpoints/fromEndpoints for pods."),
    Check("PC017", "l7-pattern-not-analysed", Level.NOTE, "L7 pattern outside the analysed regex subset",
          "The HTTP pattern uses a feature outside the RE2 subset policyc translates; checks treat the rule "
          "as opaque (they never prove anything about its requests)."),
    Check("PC018", "shadowed-deny", Level.WARNING, "Deny rule is shadowed by other deny rules",
          "Every flow this deny rule drops is also dropped by the listed deny rules. Deleting it changes no "
          "verdict: remove it, or narrow the covering rules if the overlap is unintended."),
    Check("PC019", "shadowed-l7-entry", Level.WARNING, "L7 entry covered by other entries of its list",
          "Every request this HTTP entry (or DNS name pattern) admits is admitted by the listed entries of "
          "the same rules list. Deleting it changes no verdict."),
    Check("PC020", "access-widened", Level.NOTE, "Traffic newly allowed (policyc diff)",
          "Flows of this group are dropped by the old policies and allowed by the new ones."),
    Check("PC021", "access-narrowed", Level.NOTE, "Traffic newly denied (policyc diff)",
          "Flows of this group are allowed by the old policies and dropped by the new ones."),
)}


@dataclass(frozen=True)
class Location:
    file: str
    line: int
    column: int
    field: str = ""
    message: str = ""

    @classmethod
    def of(cls, origin: Origin, message: str = "") -> "Location":
        return cls(origin.file, origin.line, origin.column, origin.path, message)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Witness:
    """A concrete example: a flow (and the direction and verdict claimed for it), or just an endpoint.

    ``matching`` lists the ids of rules claimed to match the flow; tests
    replay every witness in the concrete evaluator.
    """

    flow: Flow | None = None
    direction: Direction | None = None
    allowed: bool | None = None
    matching: tuple[str, ...] = ()
    endpoint: Endpoint | None = None


@dataclass(frozen=True)
class Finding:
    check: str
    message: str
    location: Location | None
    policy: str = ""            # "Kind ns/name": the suppression annotation is read from it
    related: tuple[Location, ...] = ()
    witness: Witness | None = None
    key: str = ""               # stable part of the fingerprint (field path, covering rules…)

    @property
    def info(self) -> Check:
        return CATALOGUE[self.check]

    @property
    def level(self) -> Level:
        return self.info.level

    @property
    def fingerprint(self) -> str:
        """Line-independent identity, so a baseline survives edits elsewhere in the file."""
        where = self.location.field if self.location else ""
        text = "\x1f".join((self.check, self.policy, where, self.key))
        return hashlib.sha256(text.encode()).hexdigest()[:24]


_IMPLICIT = (CLUSTER_KEY, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX + "kubernetes.io/metadata.name")


def endpoint_text(ep: Endpoint) -> str:
    """A pod with the labels that matter; invented endpoints have no address."""
    shown = sorted(f"{lab.key}={lab.value}" if lab.value else lab.key
                   for lab in ep.identity.labels if lab.key not in _IMPLICIT
                   and (lab.key, lab.value) != (SERVICE_ACCOUNT_KEY, "default"))
    labels = f" {{{', '.join(shown)}}}" if shown else ""
    ips = f" [{', '.join(map(str, ep.ips))}]" if ep.ips else ""
    return f"{ep.kind.value} {ep.name if ep.kind is not EndpointKind.POD else ep.display}{labels}{ips}" + (
        f" named {', '.join(ep.dns_names)}" if ep.dns_names else "")


UNREAD_PARTS = ("header:", "tls:", "l7:")


def request_text(r) -> str:
    """The L7 part of a witness: an HTTP request, a DNS query, or nothing."""
    text = ""
    if r.method or r.path or r.host:
        text += f" HTTP {r.method} {r.path}" + (f" host {r.host}" if r.host else "")
    if r.dns:
        text += f" DNS query {r.dns}"
    unread = [f"{k} {'met' if v else 'not met'}" for k, v in r.assumed if k.startswith(UNREAD_PARTS)]
    if unread:  # conditions policyc cannot read (query cannot replay them): the witness names its assumption
        text += f" (assuming {'; '.join(unread)})"
    return text


def witness_text(w: Witness) -> str:
    if w.flow is None:
        return f"e.g. {endpoint_text(w.endpoint)}" if w.endpoint else ""
    f = w.flow
    text = f"e.g. {endpoint_text(f.src)} -> {endpoint_text(f.dst)} {f.port}/{f.protocol.label}"
    if f.request is not None:
        text += request_text(f.request)
    if not f.authenticated:
        text += " without mutual authentication"
    if w.allowed is not None:
        where = f"{w.direction.value} " if w.direction is not None else ""
        text += f" ({where}{'allowed' if w.allowed else 'denied'})"
    return text


def _endpoint_json(ep: Endpoint) -> dict:
    return {"kind": ep.kind.value, "name": ep.name if ep.kind is not EndpointKind.POD else ep.display,
            "namespace": ep.namespace, **({"dns_names": list(ep.dns_names)} if ep.dns_names else {}),
            "labels": sorted(str(lab) for lab in ep.identity.labels), "ips": [str(i) for i in ep.ips],
            "named_ports": [{"name": p.name, "port": p.port, "protocol": p.protocol.label} for p in ep.ports]}


def witness_json(w: Witness) -> dict:
    out: dict = {}
    if w.flow is not None:
        out.update({"from": _endpoint_json(w.flow.src), "to": _endpoint_json(w.flow.dst),
                    "protocol": w.flow.protocol.label, "port": w.flow.port})
    if w.endpoint is not None:
        out["endpoint"] = _endpoint_json(w.endpoint)
    if w.direction is not None:
        out["direction"] = w.direction.value
    if w.allowed is not None:
        out["verdict"] = "allow" if w.allowed else "deny"
    if w.matching:
        out["matching_rules"] = list(w.matching)
    if w.flow is not None and w.flow.request is not None:
        r = w.flow.request
        if r.method or r.path or r.host:
            out["http"] = {"method": r.method, "path": r.path, "host": r.host}
        if r.dns:
            out["dns"] = r.dns
        if r.assumed:
            out["assumed"] = {k: v for k, v in r.assumed}
    if w.flow is not None and not w.flow.authenticated:
        out["authenticated"] = False
    return out


def _location_json(loc: Location) -> dict:
    return {"file": loc.file, "line": loc.line, "column": loc.column, "field": loc.field, "message": loc.message}


def finding_json(f: Finding) -> dict:
    return {"id": f.check, "name": f.info.name, "severity": f.level.value, "message": f.message,
            "policy": f.policy, "location": _location_json(f.location) if f.location else None,
            "related": [_location_json(r) for r in f.related],
            "witness": witness_json(f.witness) if f.witness else None, "fingerprint": f.fingerprint}


def render_text(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        where = f"{f.location}: " if f.location else ""
        lines.append(f"{where}{f.level.value}: {f.check} {f.info.name}: {f.message}")
        for rel in f.related:
            lines.append(f"  {rel}: {rel.message}")
        if f.witness:
            lines.append(f"  {witness_text(f.witness)}")
    counts = {lv: sum(1 for f in findings if f.level is lv) for lv in Level}
    lines.append(f"{len(findings)} finding(s): " + ", ".join(f"{n} {lv.value}" for lv, n in counts.items()))
    return "\n".join(lines)


def _physical(loc: Location) -> dict:
    return sarif_location(loc.file, loc.line, loc.column)


def render_sarif(findings: list[Finding], version: str, fallback: str = "",
                 notifications: tuple[tuple[Level, str], ...] = ()) -> str:
    """SARIF 2.1.0; a finding about no rule in particular (a namespace without any policy, say) is placed
    at line 1 of ``fallback`` (the inventory or first policy file): GitHub code scanning refuses results
    without a location.  ``notifications`` (a gate's verdict, a search cut short) go to the run's
    invocation, where SARIF keeps what the tool says about its own run."""
    ids = sorted(CATALOGUE)
    rules = [{"id": c.id, "name": c.name, "shortDescription": {"text": c.summary},
              "fullDescription": {"text": c.help}, "help": {"text": c.help, "markdown": c.help},
              "helpUri": f"{DOCS_URL}#{c.id.lower()}", "defaultConfiguration": {"level": c.level.value}}
             for c in (CATALOGUE[i] for i in ids)]
    results = []
    for f in findings:
        message = f.message + (f"; {witness_text(f.witness)}" if f.witness else "")
        res = {"ruleId": f.check, "ruleIndex": ids.index(f.check), "level": f.level.value,
               "message": {"text": message}, "partialFingerprints": {"policyc/v1": f.fingerprint}}
        where = f.location or (Location(fallback, 1, 1) if fallback else None)
        if where:
            res["locations"] = [{"physicalLocation": _physical(where)}]
        if f.related:
            res["relatedLocations"] = [{"id": i, "physicalLocation": _physical(r), "message": {"text": r.message}}
                                       for i, r in enumerate(f.related)]
        if f.witness:
            res["properties"] = {"witness": witness_json(f.witness)}
        results.append(res)
    run = {"tool": {"driver": {"name": "policyc", "version": version, "informationUri": DOCS_URL, "rules": rules}},
           "results": results}
    if notifications:
        run["invocations"] = [{"executionSuccessful": True, "toolExecutionNotifications": [
            {"level": level.value, "message": {"text": text}} for level, text in notifications]}]
    log = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0", "runs": [run]}
    return json.dumps(log, indent=2)


def rule_location(rule, message: str = "") -> Location:
    return Location.of(rule.origin, message or explain.rule_ref(rule))

