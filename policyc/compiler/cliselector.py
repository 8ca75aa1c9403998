"""Label selectors typed on the command line, parsed with grammar/selector.lark."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

from lark import Lark, Transformer
from lark.exceptions import LarkError, UnexpectedCharacters

from .diagnostics import Diagnostic, PolicycError
from .ir import ANY_SOURCE, NAMESPACE_KEY, Op, Requirement, Selector

NAMESPACE_ALIASES = ("namespace", "ns")


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("policyc.grammar").joinpath("selector.lark").read_text()
    return Lark(grammar, parser="lalr")


def _split(key: str) -> tuple[str, str]:
    if key in NAMESPACE_ALIASES:
        return "k8s", NAMESPACE_KEY
    if ":" in key:
        source, rest = key.split(":", 1)
        return source, rest
    return ANY_SOURCE, key


class _ToSelector(Transformer):
    def key(self, items):
        return _split(str(items[0]))

    def value(self, items):
        return str(items[0]) if items else ""

    def values(self, items):
        return tuple(sorted({str(v) for v in items}))

    def equals(self, items):
        (source, key), value = items
        return Requirement(source, key, Op.IN, (value,))

    def not_equals(self, items):
        (source, key), value = items
        return Requirement(source, key, Op.NOT_IN, (value,))

    def in_set(self, items):
        (source, key), _, values = items
        return Requirement(source, key, Op.IN, values)

    def not_in_set(self, items):
        (source, key), _, values = items
        return Requirement(source, key, Op.NOT_IN, values)

    def absent(self, items):
        return Requirement(*items[0], Op.DOES_NOT_EXIST)

    def present(self, items):
        return Requirement(*items[0], Op.EXISTS)

    def selector(self, items):
        return Selector(tuple(sorted(set(items))))


def parse_cli_selector(text: str, option: str = "selector") -> Selector:
    try:
        return _ToSelector().transform(_parser().parse(text))
    except LarkError as exc:
        what = _unexpected(exc)
        column = len(text) + 1 if what == "unexpected end" else getattr(exc, "column", 0)
        where = f" at column {column}" if column and column > 0 else ""
        raise PolicycError(Diagnostic.simple(
            f"{option}: invalid label selector {text!r}{where} ({what}): expected requirements "
            "such as 'app=web,tier in (a,b),!legacy' (namespace=NS names the namespace)")) from None


def _unexpected(exc: LarkError) -> str:
    """What the parser stumbled on, in the user's terms."""
    if isinstance(exc, UnexpectedCharacters):
        return f"unexpected {exc.char!r}"
    token = getattr(exc, "token", None)
    if token is None or token.type == "$END":
        return "unexpected end"
    return f"unexpected {str(token)!r}"


def looks_like_selector(text: str) -> bool:
    """An endpoint reference is a selector when it uses selector syntax rather than ns/pod or an address."""
    return any(tok in text for tok in ("=", "!", "(", ",")) or " in " in text or " notin " in text


# ---- the other way: selectors as the command line writes them

_SHOWN_BARE = ("k8s", ANY_SOURCE)  # pod labels: a bare key on the command line matches them


def format_key(source: str, key: str) -> str:
    if key == NAMESPACE_KEY and source in _SHOWN_BARE:
        return NAMESPACE_ALIASES[0]
    return key if source in _SHOWN_BARE else f"{source}:{key}"


def format_requirement(req: Requirement) -> str:
    key = format_key(req.source, req.key)
    if req.op is Op.EXISTS:
        return key
    if req.op is Op.DOES_NOT_EXIST:
        return f"!{key}"
    if len(req.values) == 1:
        return f"{key}{'=' if req.op is Op.IN else '!='}{req.values[0]}"
    return f"{key} {'in' if req.op is Op.IN else 'notin'} ({','.join(req.values)})"


def format_selector(sel: Selector) -> str:
    """``sel`` in the syntax `--from`/`--to` and verify specs accept (``*``: every identity), namespace first."""
    if sel.is_wildcard:
        return "*"
    reqs = sorted(sel.requirements, key=lambda r: (r.key != NAMESPACE_KEY, r.key, r.source))
    return ",".join(format_requirement(r) for r in reqs)


def format_peer(peer) -> str:
    """A rule's peer for people: selectors as on the command line, entities and CIDRs by name."""
    from .ir import CIDRPeer, SelectorPeer

    if not isinstance(peer, SelectorPeer):
        return str(peer) if not isinstance(peer, CIDRPeer) else str(peer).removeprefix("cidr:")
    if peer.kind == "entity":
        return f"entity:{peer.name}"
    if peer.kind == "nodes":  # R2.16's remote-node requirement is implied by the word
        shown = [Selector(tuple(r for r in s.requirements if r.key != "remote-node")) for s in peer.selectors]
        return " | ".join(f"nodes {format_selector(s)}" for s in shown)
    return " | ".join(format_selector(s) for s in peer.selectors)
