"""Whether Go's regexp package (RE2 syntax) accepts a pattern: Cilium compiles every HTTP rule's
path and method with it and rejects the rule when that fails (PortRuleHTTP.Sanitize), so policyc
must too, instead of calling such a policy valid.

Python's ``re`` judges the syntax both share (brackets, quantifiers, escapes). What only one of them
has is settled first: Go-only spellings (``\\z``, ``\\pL``, ``\\Q...\\E``, ``(?<name>``, the ``U``
flag) are rewritten to a Python equivalent, and Perl features RE2 leaves out on purpose
(backreferences, lookaround, atomic groups, possessive quantifiers) are refused.
"""
from __future__ import annotations

import re
import warnings

_NOT_IN_GO = (("(?=", "lookahead"), ("(?!", "negative lookahead"), ("(?<=", "lookbehind"),
              ("(?<!", "negative lookbehind"), ("(?>", "atomic groups"), ("(?(", "conditional groups"),
              ("(?P=", "backreferences"), ("(?#", "comments"))
_FLAGS = re.compile(r"\(\?([A-Za-z-]*)([:)])")
_REPEAT = re.compile(r"\{\d+(,\d*)?\}")
_CLASS_ESCAPE = re.compile(r"\\[pP](\{\^?[A-Za-z_]+\}|[A-Za-z])")


def go_regex_error(pattern: str) -> str | None:
    """Why Go's regexp refuses ``pattern``, or None when it compiles."""
    try:
        python = _to_python(pattern)
    except ValueError as exc:
        return str(exc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "possible nested set" for POSIX classes such as [[:alpha:]]
        try:
            re.compile(python)
        except re.error as exc:
            return exc.msg
    return None


def _to_python(pattern: str) -> str:
    """``pattern`` in Python's spelling; ValueError for syntax Go's regexp does not have."""
    out: list[str] = []
    i, in_class, after_repeat = 0, False, False
    while i < len(pattern):
        c, rest = pattern[i], pattern[i:]
        repeat = False
        if c == "\\":
            piece, i = _escape(pattern, i, in_class)
            out.append(piece)
        elif in_class:
            in_class = not (c == "]" and out[-1] not in ("[", "[^"))
            out.append(c)
            i += 1
        elif c == "[":
            in_class = True
            out.append("[^" if rest.startswith("[^") else "[")
            i += 2 if rest.startswith("[^") else 1
        elif c == "(":
            for opener, what in _NOT_IN_GO:
                if rest.startswith(opener):
                    raise ValueError(f"{what} ({opener}...) is not supported by Go's regexp (RE2)")
            piece, i = _group(pattern, i)
            out.append(piece)
        elif c in "*+?" or (c == "{" and _REPEAT.match(rest)):
            if after_repeat and c == "+":
                raise ValueError(f"possessive repetition {pattern[i - 1:i + 1]!r} is not supported by Go's "
                                 "regexp (invalid nested repetition operator)")
            span = _REPEAT.match(rest).end() if c == "{" else 1
            out.append(pattern[i:i + span])
            i += span
            repeat = c != "?" or not after_repeat  # a ? after a repeat makes it lazy: not a repeat itself
        else:
            out.append(c)
            i += 1
        after_repeat = repeat
    return "".join(out)


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """One backslash escape at ``i``: its Python spelling and where the pattern goes on."""
    letter = pattern[i + 1:i + 2]
    if letter == "Q":  # literal text up to \E
        end = pattern.find("\\E", i + 2)
        end = len(pattern) if end < 0 else end
        return re.escape(pattern[i + 2:end]), end + 2
    if letter in ("p", "P"):
        match = _CLASS_ESCAPE.match(pattern, i)
        if match is None:
            raise ValueError(f"invalid character class escape {pattern[i:i + 3]!r}")
        return "\\w", match.end()
    if letter.isdigit() and letter != "0" and not in_class:
        raise ValueError(f"backreferences such as \\{letter} are not supported by Go's regexp (RE2)")
    if letter == "Z":
        raise ValueError("invalid escape \\Z: Go's regexp writes the end of text \\z")
    return {"z": "\\Z", "C": "."}.get(letter, pattern[i:i + 2]), i + 2


def _group(pattern: str, i: int) -> tuple[str, int]:
    """An opening parenthesis at ``i``: named groups and Go's flags (i, m, s, U) in Python's spelling."""
    if pattern.startswith("(?<", i):
        return "(?P<", i + 3
    match = _FLAGS.match(pattern, i)
    if match is None:
        return "(", i + 1
    flags, end = match.groups()
    if set(flags) - set("imsU-"):
        raise ValueError(f"invalid flags (?{flags}: Go's regexp knows i, m, s and U")
    python = flags.replace("U", "")  # ungreedy swaps what *? means: the syntax is the same
    if python.strip("-") == "":
        return ("(?:" if end == ":" else ""), match.end()
    return f"(?{python}{end}", match.end()
