"""Policy objects (CNP, CCNP, Kubernetes NetworkPolicy) → IR.

The package reads one object at a time with positions (reader), resolves selectors and their
namespace scoping (selectors), shared values such as ports and CIDRs (values), and hands each
kind to its module (cilium, knp) through the table in kinds. Every field of docs/semantics.md is
either modelled or reported; an object with an error is left out whole (R1.1).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..diagnostics import Diagnostic, PolicycError, Severity
from ..ir import DEFAULT_CLUSTER, DefaultDeny, Policy, PolicySet, Rule
from ..source import Document, kube_objects, load_documents
from .kinds import KINDS, POLICY_GROUPS, policy_kinds
from .meta import Meta
from .reader import FieldReader, Invalid, kind_of, origin_at
from .values import parse_cidr

__all__ = ["FieldReader", "FrontendResult", "IGNORE_ANNOTATION", "Invalid", "MAX_ERRORS", "build_policy_set",
           "kind_of", "load_policies", "parse_cidr"]

IGNORE_ANNOTATION = "policyc.io/ignore"
MAX_ERRORS = 200  # enough to fix a file; a megabyte of wrong items should not print a million lines
BASE_KEYS = ("apiVersion", "kind", "metadata", "status")


@dataclass
class FrontendResult:
    policy: PolicySet
    diagnostics: list[Diagnostic]
    skipped: list[str]  # "file:line: kind name" of objects that are not policies


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CHECK_ID = re.compile(r"^PC\d{3}$")


def _check_names(r: FieldReader, base: tuple, name: str, namespace: str | None) -> None:
    """The API server's rules for names: a policy name is a DNS subdomain, a namespace a DNS label."""
    if not _DNS_SUBDOMAIN.match(name):
        r.error(base + ("metadata", "name"), f"{name!r} is not a valid name: lower-case letters, digits, '-' and "
                                             "'.', at most 253, starting and ending with a letter or digit "
                                             "(the API server refuses it)", "invalid-name")
    if namespace is not None and not _DNS_LABEL.match(namespace):
        r.error(base + ("metadata", "namespace"), f"{namespace!r} is not a valid namespace: lower-case letters, "
                                                  "digits and '-', at most 63, starting and ending with a letter "
                                                  "or digit", "invalid-name")


def _ignored_checks(r: FieldReader, annotations: dict, path: tuple) -> tuple[str, ...]:
    """``policyc.io/ignore``: check ids (any case) or ``all``; anything else would silently ignore nothing."""
    if IGNORE_ANNOTATION not in annotations:
        return ()
    where = path + (IGNORE_ANNOTATION,)
    out = []
    for item in (x.strip() for x in str(annotations[IGNORE_ANNOTATION]).split(",") if x.strip()):
        norm = item.lower() if item.lower() == "all" else item.upper()
        if norm != "all" and not _CHECK_ID.match(norm):
            r.warn(where, f"{item!r} in {IGNORE_ANNOTATION} is not a check id (PC001, PC010, ...) or 'all': it "
                          "suppresses nothing", "unknown-check-id")
        out.append(norm)
    return tuple(out)


def parse_object(r: FieldReader, obj, base: tuple, cluster: str):
    """One top-level object → (rules, default-deny entries, Policy) or None when it is not a policy."""
    if not isinstance(obj, dict):
        r.fail(base, f"a document must be a mapping (a Kubernetes object), not {kind_of(obj)}")
    kind, api = obj.get("kind"), obj.get("apiVersion")
    if kind is None and api is None:
        return None  # a YAML document that is no Kubernetes object (a CI or tool config): skipped
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
    elif not namespace:
        r.warn(base + ("metadata",), f"{kind} {name} has no metadata.namespace: policyc assumes 'default' "
                                     "(kubectl apply would use -n or its context's namespace); write it down (R1.3b)",
               "default-namespace")
        namespace = "default"
    _check_names(r, base, name, namespace)
    annotations = r.mapping(meta.get("annotations"), base + ("metadata", "annotations"),
                            tuple(meta.get("annotations") or ()))
    ignore = _ignored_checks(r, annotations, base + ("metadata", "annotations"))
    where = origin_at(r, base, kind, namespace, name)
    rules, dd = row.parse(r, obj, base, Meta(kind, namespace, name, cluster))
    return rules, dd, Policy(kind, namespace or "", name, where, ignore)


def build_policy_set(docs: list[Document], cluster: str = DEFAULT_CLUSTER) -> FrontendResult:
    rules: list[Rule] = []
    dd: list[DefaultDeny] = []
    policies: list[Policy] = []
    diagnostics: list[Diagnostic] = []
    skipped: list[str] = []
    seen: dict[tuple, str] = {}  # (kind, namespace, name) -> file:line:column of its metadata.name
    error_count = 0
    for doc, base, obj in ((d, b, o) for d in docs for b, o in kube_objects(d)):
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
            skipped.append(_skipped_label(doc, base, obj))
            continue
        got_rules, got_dd, policy = got
        key = (policy.kind, policy.namespace, policy.name)
        name_at = doc.diag(base + ("metadata", "name"), "")
        if key in seen:
            diagnostics.append(doc.diag(
                base + ("metadata", "name"),
                f"{policy.kind} {_ref(policy)} is defined twice (first at {seen[key]}): the cluster keeps one "
                "object per kind, namespace and name, the one applied last, so its rules depend on apply "
                "order; rename one or remove it (R1.3b)", code="duplicate-name"))
            error_count += 1
            continue
        seen[key] = f"{name_at.file}:{name_at.line}:{name_at.column}"
        rules.extend(got_rules)
        dd.extend(got_dd)
        policies.append(policy)
    return FrontendResult(PolicySet(tuple(rules), tuple(dd), tuple(policies), cluster), diagnostics, skipped)


def _ref(policy: Policy) -> str:
    return f"{policy.namespace}/{policy.name}" if policy.namespace else policy.name


def _skipped_label(doc: Document, base: tuple, obj) -> str:
    """``file:line: Kind name`` of an object that is not a policy, for --verbose."""
    line, _ = doc.position(base)
    if not isinstance(obj, dict) or obj.get("kind") is None:
        return f"{doc.file}:{line}: a YAML document that is not a Kubernetes object"
    meta = obj.get("metadata")
    name = meta.get("name", "") if isinstance(meta, dict) else ""
    return f"{doc.file}:{line}: {obj.get('kind')}" + (f" {name}" if name else "")


def load_policies(paths, cluster: str = DEFAULT_CLUSTER) -> tuple[PolicySet, list[Diagnostic]]:
    """Parse and translate; raises PolicycError when any input has an error."""
    result = build_policy_set(load_documents(paths), cluster)
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    if errors:
        raise PolicycError(*result.diagnostics)
    return result.policy, result.diagnostics
