"""What the CLI does only for a person at a terminal: colour and progress bars (docs/cli.md).

Both go away when the stream is not a terminal, with NO_COLOR (colour) or -q (progress), so pipes,
files and CI logs get plain, stable text.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

_STYLES = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}
# Words that carry the answer in text outputs, and how they are painted.
_WORDS = [(re.compile(r"\b(ALLOW|PASS|allowed|valid)\b"), "green"),
          (re.compile(r"\b(DENY|FAIL|MISMATCH|denied|invalid)\b"), "red"),
          (re.compile(r"(?<![\w-])(error):"), "red"), (re.compile(r"(?<![\w-])(warning):"), "yellow")]


def colour_on(stream=None) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (any value) or TERM=dumb."""
    stream = stream or sys.stdout
    return (hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ
            and os.environ.get("TERM") != "dumb")


def paint(text: str, style: str) -> str:
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"


def colourise(text: str, stream=None) -> str:
    """``text`` with its verdict words coloured when ``stream`` takes colour, else unchanged."""
    if not colour_on(stream):
        return text
    for pattern, style in _WORDS:
        text = pattern.sub(lambda m: m.group(0).replace(m.group(1), paint(m.group(1), style)), text)
    return text


def say(text: str, stream=None) -> None:
    """Print a text-format result, coloured where it helps."""
    stream = stream or sys.stdout
    print(colourise(text, stream), file=stream)


def progress(items: Iterable[T], total: int | None, what: str, quiet: bool = False) -> Iterable[T]:
    """``items`` with a progress bar on stderr (tqdm) for a person watching long work; the items
    unchanged when stderr is no terminal or with -q."""
    if quiet or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=what, file=sys.stderr, leave=False, unit="",
                dynamic_ncols=True, disable=None)


def step(text: str, quiet: bool = False) -> None:
    """A one-line note on stderr about the phase long work is in, for a person at a terminal."""
    if not quiet and sys.stderr.isatty():
        print(f"{text} ...", file=sys.stderr)
