"""Label selectors and their namespace scoping (R2.2–R2.17, R12.3): every selector leaving here is
cluster-absolute, so no later pass needs to know which kind of object a rule came from."""
from __future__ import annotations

import difflib
import re

from ..entities import RESERVED
from ..ir import (ANY_SOURCE, CLUSTER_KEY, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_KEY, Label, Op,
                  Requirement, Selector)
from .reader import FieldReader, kind_of

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

_OPS = {op.value: op for op in Op}


def split_key(key: str, default_source: str) -> tuple[str, str]:
    """``k8s:app`` → (k8s, app); a bare key has the default source (R2.2, R12.3)."""
    if ":" in key:
        source, rest = key.split(":", 1)
        if source and rest:
            return source, rest
    return default_source, key

def check_dotted_source(r: FieldReader, key: str, where: tuple) -> None:
    """Warn about ``k8s.io.kubernetes.pod.namespace``: Cilium splits a source off only at ':'.

    Written with a dot, the key is read as a plain key of any source, which no identity carries,
    so the requirement silently selects nothing (In) or everything (NotIn, DoesNotExist).
    """
    source, dot, rest = key.partition(".")
    derived = (NAMESPACE_KEY, SERVICE_ACCOUNT_KEY, CLUSTER_KEY)
    if ":" not in key and dot and source in ("k8s", "any") and (
            rest in derived or rest.startswith(NAMESPACE_LABELS_PREFIX)):
        r.warn(where, f"no identity carries the label key {key!r}: a source prefix is separated by ':', "
                      f"not '.'; did you mean {source + ':' + rest!r}?")

def parse_selector(r: FieldReader, value, path: tuple, default_source: str = ANY_SOURCE,
                   key_map=lambda k: k) -> Selector:
    """A Kubernetes LabelSelector; ``key_map`` rewrites keys (KNP namespace selectors, R12.3)."""
    obj = r.mapping(value, path, ("matchLabels", "matchExpressions"))
    reqs: list[Requirement] = []
    labels = obj.get("matchLabels") or {}
    if not isinstance(labels, dict):
        r.fail(path + ("matchLabels",), f"must be a mapping of label keys to values, not {kind_of(labels)}")
    for key, val in labels.items():
        where = path + ("matchLabels", key)
        label_key(r, str(key), where)
        check_dotted_source(r, str(key), where)
        if val is None:
            val = ""
        if not isinstance(val, str):
            r.fail(where, f"label value must be a string, not {kind_of(val)} (quote it: \"{val}\")")
        label_value(r, val, where)
        source, k = split_key(key_map(key), default_source)
        reqs.append(Requirement(source, k, Op.IN, (val,)))
    for i, expr in enumerate(r.sequence(obj, "matchExpressions", path)):
        where = path + ("matchExpressions", i)
        expr = r.mapping(expr, where, ("key", "operator", "values"))
        key = r.text(expr.get("key"), where + ("key",), "key")
        label_key(r, key, where + ("key",))
        check_dotted_source(r, key, where + ("key",))
        op_text = expr.get("operator")
        op = _OPS.get(op_text) if isinstance(op_text, str) else None
        if op is None:
            close = difflib.get_close_matches(str(op_text), list(_OPS), n=1, cutoff=0.5)
            if isinstance(op_text, str) and op_text.lower() in {o.lower() for o in _OPS}:
                close = [next(o for o in _OPS if o.lower() == op_text.lower())]
            hint = f"; did you mean {close[0]!r}? (operators are case-sensitive)" if close else ""
            r.fail(where + ("operator",), f"invalid operator {op_text!r}: expected In, NotIn, Exists "
                                           f"or DoesNotExist{hint}")
        values = r.sequence(expr, "values", where)
        for j, v in enumerate(values):
            label_value(r, r.text(v, where + ("values", j)), where + ("values", j))
        if op in (Op.IN, Op.NOT_IN) and not values:
            r.fail(where + ("values",), f"operator {op.value} needs at least one value")
        if op in (Op.EXISTS, Op.DOES_NOT_EXIST) and values:
            r.fail(where + ("values",), f"operator {op.value} takes no values")
        source, k = split_key(key_map(key), default_source)
        reqs.append(Requirement(source, k, op, tuple(sorted(set(values)))))
    return Selector(tuple(sorted(set(reqs))))

def label_key(r: FieldReader, key: str, path: tuple) -> None:
    """A pod-label key (bare or ``k8s:``/``any:``) is a Kubernetes qualified name, as Cilium's selector
    validation and the API server require: ``[prefix/]name``, the name at most 63 characters of
    alphanumerics and -_. inside, the prefix a lower-case DNS subdomain."""
    source, rest = split_key(key, ANY_SOURCE)
    if source not in (ANY_SOURCE, "k8s"):
        return  # reserved:, cidr:, ... keys are Cilium's own
    prefix, slash, name = rest.rpartition("/")
    if not _LABEL_NAME.match(name) or (slash and not _LABEL_PREFIX.match(prefix)):
        r.error(path, f"{key!r} is not a valid label key: [prefix/]name, the name at most 63 letters, digits, "
                      "'-', '_' and '.' starting and ending with a letter or digit, the prefix a lower-case DNS "
                      "name; Cilium rejects the selector (R1.6b)", "invalid-label-key")


def label_value(r: FieldReader, value: str, path: tuple) -> None:
    """R1.6: selector values are Kubernetes label values (at most 63 characters, alphanumerics and -_. inside)."""
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        r.error(path, f"{value!r} is not a valid label value: at most 63 characters, letters, digits, '-', '_' "
                      "and '.', starting and ending with a letter or digit")


def namespace_requirement(namespace: str) -> Requirement:
    return Requirement("k8s", NAMESPACE_KEY, Op.IN, (namespace,))

def scope_peer(sel: Selector, namespace: str | None, subject: Selector) -> Selector:
    """Namespace scoping of a fromEndpoints/toEndpoints selector (R2.9–R2.13); None = clusterwide."""
    if sel.mentions_source(RESERVED) or sel.mentions(NAMESPACE_KEY):
        return sel
    if namespace is not None:
        if sel.mentions_prefix(NAMESPACE_LABELS_PREFIX):
            return sel
        return sel.with_requirements(namespace_requirement(namespace))
    if subject.mentions("init", (RESERVED,)):
        return sel
    return sel.with_requirements(Requirement("k8s", NAMESPACE_KEY, Op.EXISTS))

def scope_subject(r: FieldReader, sel: Selector, namespace: str, path: tuple) -> Selector:
    """R2.5: a CNP selects only its own namespace; a different namespace written in matchLabels is overwritten."""
    kept = []
    own = frozenset({Label("k8s", NAMESPACE_KEY, namespace)})
    for req in sel.requirements:
        if req.source == "k8s" and req.key == NAMESPACE_KEY and req.op is Op.IN and len(req.values) == 1:
            if req.values[0] != namespace:
                r.warn(path, f"namespace {req.values[0]!r} in the endpointSelector is overwritten with the "
                             f"policy's namespace {namespace!r} (R2.5)")
            continue
        if req.key == NAMESPACE_KEY and not req.matches(own):  # Cilium keeps it: nothing can match
            wanted = f"namespace {req.values[0]!r}" if req.op is Op.IN and len(req.values) == 1 else f"'{req}'"
            how = " without the k8s: prefix" if req.source != "k8s" else ""
            r.warn(path, f"the endpointSelector asks for {wanted}{how}, which Cilium keeps beside the policy's own "
                         f"namespace {namespace!r}: the rule selects no pod (R2.5). Only "
                         "k8s:io.kubernetes.pod.namespace in matchLabels is replaced; a CiliumNetworkPolicy applies "
                         "in its own namespace", "subject-never-matches")
        kept.append(req)
    return Selector(tuple(kept)).with_requirements(namespace_requirement(namespace))
