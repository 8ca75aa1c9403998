"""Policy objects (CNP, CCNP, Kubernetes NetworkPolicy) → IR.

The package reads one object at a time with positions (reader), resolves selectors and their
namespace scoping (selectors), shared values such as ports and CIDRs (values), and hands each
kind to its module (cilium, knp) through the table in kinds. Every field of docs/semantics.md is
either modelled or reported; an object with an error is left out whole (R1.1).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..diagnostics import Diagnostic, PolicycError, Severity
from ..ir import DEFAULT_CLUSTER, DefaultDeny, Origin, Policy, PolicySet, Rule
from ..source import Document, load_documents
from .kinds import KINDS, POLICY_GROUPS, policy_kinds
from .meta import Meta
from .reader import FieldReader, Invalid, kind_of, origin_at
from .values import parse_cidr

__all__ = ["FieldReader", "FrontendResult", "Invalid", "MAX_ERRORS", "build_policy_set", "kind_of",
           "load_policies", "parse_cidr"]

IGNORE_ANNOTATION = "policyc.io/ignore"
MAX_ERRORS = 200  # enough to fix a file; a megabyte of wrong items should not print a million lines
BASE_KEYS = ("apiVersion", "kind", "metadata", "status")


@dataclass
class FrontendResult:
    policy: PolicySet
    diagnostics: list[Diagnostic]
    skipped: list[str]  # "file:line: kind name" of objects that are not policies


def _objects(doc: Document):
    value = doc.value
    if isinstance(value, dict) and value.get("kind") == "List" and isinstance(value.get("items"), list):
        for i, item in enumerate(value["items"]):
            yield ("items", i), item
    else:
        yield (), value


def parse_object(r: FieldReader, obj, base: tuple, cluster: str):
    """One top-level object → (rules, default-deny entries, Policy) or None when it is not a policy."""
    if not isinstance(obj, dict):
        r.fail(base, f"a document must be a mapping (a Kubernetes object), not {kind_of(obj)}")
    kind, api = obj.get("kind"), obj.get("apiVersion")
    if kind is None or api is None:
        r.fail(base, f"not a Kubernetes object: missing {'kind' if kind is None else 'apiVersion'}")
    for key, value in (("apiVersion", api), ("kind", kind)):
        r.text(value, base + (key,), key)
    row = KINDS.get(kind)
    if row is None:
        if api.split("/")[0] in POLICY_GROUPS:
            close = difflib.get_close_matches(str(kind), policy_kinds(), n=1)
            r.fail(base + ("kind",), f"unknown policy kind {kind!r} for {api}"
                   + (f"; did you mean {close[0]!r}?" if close else ""), "unknown-kind")
        return None
    if row.parse is None:
        return None
    if api not in row.versions:
        r.fail(base + ("apiVersion",), f"unknown apiVersion {api!r} for {kind}: expected {row.versions[0]}")
    top = BASE_KEYS + row.spec_keys
    for key in obj:
        if key not in top:  # the API server prunes these; the meaning of the policy is unchanged
            close = difflib.get_close_matches(key, top, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else (
                "; description belongs in the rule (spec.description)" if key == "description" else "")
            r.warn(base + (key,), f"unknown top-level field {key!r} is dropped by the API server{hint}",
                   "unknown-field")
    meta = obj.get("metadata") or {}
    meta = r.mapping(meta, base + ("metadata",), tuple(meta) if isinstance(meta, dict) else ())
    name = meta.get("name")
    if not name:
        r.fail(base + ("metadata",), "missing metadata.name")
    r.text(name, base + ("metadata", "name"), "metadata.name")
    namespace = meta.get("namespace")
    if namespace is not None:
        r.text(namespace, base + ("metadata", "namespace"), "metadata.namespace")
    if not row.namespaced:
        if namespace:
            r.warn(base + ("metadata", "namespace"), "a clusterwide policy has no namespace: ignored (R1.2)")
        namespace = None
    else:
        namespace = str(namespace or "default")
    annotations = r.mapping(meta.get("annotations"), base + ("metadata", "annotations"),
                            tuple(meta.get("annotations") or ()))
    ignore = tuple(x.strip() for x in str(annotations.get(IGNORE_ANNOTATION, "")).split(",") if x.strip())
    where = origin_at(r, base, kind, namespace, name)
    rules, dd = row.parse(r, obj, base, Meta(kind, namespace, name, cluster))
    return rules, dd, Policy(kind, namespace or "", name, where, ignore)


def build_policy_set(docs: list[Document], cluster: str = DEFAULT_CLUSTER) -> FrontendResult:
    rules: list[Rule] = []
    dd: list[DefaultDeny] = []
    policies: list[Policy] = []
    diagnostics: list[Diagnostic] = []
    skipped: list[str] = []
    seen: dict[tuple, Origin] = {}
    error_count = 0
    for doc, base, obj in ((d, b, o) for d in docs for b, o in _objects(d)):
        if error_count >= MAX_ERRORS:
            diagnostics.append(doc.diag(base, f"stopping after {MAX_ERRORS} errors; fix these and run again",
                                        code="too-many-errors"))
            break
        r = FieldReader(doc)
        try:
            got = parse_object(r, obj, base, cluster)
        except Invalid:
            got = None
        diagnostics.extend(r.diagnostics)
        error_count += r.errors
        if r.errors:
            continue
        if got is None:
            line, _ = doc.position(base)
            meta = obj.get("metadata")
            name = meta.get("name", "") if isinstance(meta, dict) else ""
            skipped.append(f"{doc.file}:{line}: {obj.get('kind')} {name}")
            continue
        got_rules, got_dd, policy = got
        key = (policy.kind, policy.namespace, policy.name)
        if key in seen:
            diagnostics.append(doc.diag(base + ("metadata", "name"),
                                        f"{policy.kind} {policy.namespace + '/' if policy.namespace else ''}"
                                        f"{policy.name} is defined twice (first at {seen[key]}); both are "
                                        "kept, as separate files would be", Severity.WARNING, "duplicate-name"))
        seen.setdefault(key, policy.origin)
        rules.extend(got_rules)
        dd.extend(got_dd)
        policies.append(policy)
    return FrontendResult(PolicySet(tuple(rules), tuple(dd), tuple(policies), cluster), diagnostics, skipped)


def load_policies(paths, cluster: str = DEFAULT_CLUSTER) -> tuple[PolicySet, list[Diagnostic]]:
    """Parse and translate; raises PolicycError when any input has an error."""
    result = build_policy_set(load_documents(paths), cluster)
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    if errors:
        raise PolicycError(*result.diagnostics)
    return result.policy, result.diagnostics
