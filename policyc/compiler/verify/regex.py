"""HTTP method/path/host patterns as Z3 regular expressions.

Cilium validates these with Go's RE2 and matches the whole value (R9.2).
The pattern is parsed with ``policyc/grammar/regex.lark``; a feature outside
that subset raises ``UnsupportedRegex`` so that callers treat the rule as
opaque instead of proving something wrong about it.
"""
from __future__ import annotations

import functools
import re as pyre
from importlib import resources

import z3
from lark import Lark, Token, Tree
from lark.exceptions import LarkError

_FLAGS = pyre.compile(r"\(\?[imsU-]+[:)]")
MAX_REPEAT = 1000  # RE2's limit on {n,m}
_STR = z3.ReSort(z3.StringSort())


class UnsupportedRegex(ValueError):
    """A pattern policyc cannot translate exactly; the message says which feature."""


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    text = resources.files("policyc.grammar").joinpath("regex.lark").read_text()
    return Lark(text, parser="earley", ambiguity="resolve")


def _any_char() -> z3.ReRef:
    return z3.AllChar(_STR)


def _not_newline() -> z3.ReRef:
    return z3.Intersect(_any_char(), z3.Complement(z3.Re("\n")))


def _ranges(pairs: list[tuple[str, str]]) -> z3.ReRef:
    parts = [z3.Re(a) if a == b else z3.Range(a, b) for a, b in pairs]
    return parts[0] if len(parts) == 1 else z3.Union(*parts)


_CLASSES = {
    "d": [("0", "9")],
    "w": [("0", "9"), ("A", "Z"), ("a", "z"), ("_", "_")],
    "s": [(" ", " "), ("\t", "\t"), ("\n", "\n"), ("\f", "\f"), ("\r", "\r"), ("\v", "\v")],
}
_CONTROL = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}


def _escape_pairs(text: str) -> tuple[list[tuple[str, str]], bool]:
    """``\\d`` → its ranges; ``\\D`` → the same, negated; punctuation escapes → the character."""
    ch = text[1]
    if ch.lower() in _CLASSES:
        return _CLASSES[ch.lower()], ch.isupper()
    if ch in _CONTROL:
        return [(_CONTROL[ch], _CONTROL[ch])], False
    if ch.isalnum():
        raise UnsupportedRegex(f"escape {text!r} (word boundaries, Unicode classes, backreferences and "
                               "similar are not supported)")
    return [(ch, ch)], False


def _negate(re: z3.ReRef) -> z3.ReRef:
    return z3.Intersect(_any_char(), z3.Complement(re))


def _class_char(tok: str) -> str:
    if tok.startswith("\\"):
        pairs, negated = _escape_pairs(tok)
        if negated or len(pairs) != 1 or pairs[0][0] != pairs[0][1]:
            raise UnsupportedRegex(f"class escape {tok!r} inside a range")
        return pairs[0][0]
    return tok


def _klass(node: Tree) -> z3.ReRef:
    children = list(node.children)
    negated = bool(children) and isinstance(children[0], Token) and children[0].type == "NEG"
    pairs: list[tuple[str, str]] = []
    for item in children[1:] if negated else children:
        if isinstance(item, Token):  # DASH
            pairs.append(("-", "-"))
        elif item.data == "crange":
            lo, hi = (_class_char(str(t)) for t in item.children)
            if lo > hi:
                raise UnsupportedRegex(f"invalid class range {lo}-{hi}")
            pairs.append((lo, hi))
        else:
            tok = str(item.children[0])
            if tok == "[":
                raise UnsupportedRegex("POSIX or nested character classes")
            if tok.startswith("\\"):
                sub, neg = _escape_pairs(tok)
                if neg:
                    raise UnsupportedRegex(f"negated class escape {tok!r} inside brackets")
                pairs.extend(sub)
            else:
                pairs.append((tok, tok))
    if not pairs:
        raise UnsupportedRegex("an empty character class")
    re = _ranges(pairs)
    return _negate(re) if negated else re


def _quantify(re: z3.ReRef, quant: str) -> z3.ReRef:
    if quant == "*":
        return z3.Star(re)
    if quant == "+":
        return z3.Plus(re)
    if quant == "?":
        return z3.Option(re)
    lo_text, comma, hi_text = quant[1:-1].partition(",")
    lo = int(lo_text)
    hi = int(hi_text) if hi_text else None
    if lo > MAX_REPEAT or (hi is not None and (hi > MAX_REPEAT or hi < lo)):
        raise UnsupportedRegex(f"repetition {quant} (RE2 allows at most {MAX_REPEAT} and min <= max)")
    if not comma:
        return z3.Loop(re, lo, lo)
    if hi is None:
        return z3.Concat(z3.Loop(re, lo, lo), z3.Star(re)) if lo else z3.Star(re)
    return z3.Loop(re, lo, hi)


class _Translator:
    """Walks the parse tree; anchors are accepted only where the whole-value match makes them no-ops."""

    def alt(self, node: Tree, top: bool) -> z3.ReRef:
        branches = [self.seq(s, top) for s in node.children]
        return branches[0] if len(branches) == 1 else z3.Union(*branches)

    def seq(self, node: Tree, top: bool) -> z3.ReRef:
        pieces = list(node.children)
        parts = []
        for i, piece in enumerate(pieces):
            atom = piece.children[0]
            kind = atom.data if isinstance(atom, Tree) else "literal"
            if kind in ("bol", "eol"):
                edge = (i == 0) if kind == "bol" else (i == len(pieces) - 1)
                if not (top and edge) or len(piece.children) > 1:
                    raise UnsupportedRegex("anchors (^, $) other than at the start or end of the pattern")
                continue
            re = self.atom(atom)
            if len(piece.children) > 1:
                re = _quantify(re, str(piece.children[1].children[0]))
            parts.append(re)
        if not parts:
            return z3.Re("")
        return parts[0] if len(parts) == 1 else z3.Concat(*parts)

    def atom(self, atom: Tree) -> z3.ReRef:
        if atom.data == "group":
            return self.alt(atom.children[0], False)
        if atom.data == "named_group":
            return self.alt(atom.children[1], False)
        if atom.data == "klass":
            return _klass(atom)
        if atom.data == "dot":
            return _not_newline()
        if atom.data == "escape":
            pairs, negated = _escape_pairs(str(atom.children[0]))
            re = _ranges(pairs)
            return _negate(re) if negated else re
        return z3.Re(str(atom.children[0]))


@functools.lru_cache(maxsize=4096)
def to_z3(pattern: str) -> z3.ReRef:
    """The language of ``pattern`` (matched against the whole value); raises UnsupportedRegex."""
    flags = _FLAGS.search(pattern)
    if flags:
        raise UnsupportedRegex(f"flags {flags.group(0)!r} (case-insensitive and other modes) are not supported")
    try:
        tree = _parser().parse(pattern)
    except LarkError as exc:  # lark's own message lists grammar tokens: say where instead
        column = getattr(exc, "column", -1)
        where = f"at character {column}" if isinstance(column, int) and column > 0 else "at its end"
        raise UnsupportedRegex(f"{pattern!r} uses syntax outside the analysed RE2 subset, {where}") from None
    return _Translator().alt(tree.children[0], True)


def check(pattern: str) -> str | None:
    """None when ``pattern`` translates exactly, else the reason it does not."""
    try:
        to_z3(pattern)
    except UnsupportedRegex as exc:
        return str(exc)
    return None
