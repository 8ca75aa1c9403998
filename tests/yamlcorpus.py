"""YAML inputs for the source-reader tests: every YAML file the project ships (examples/, tests/data)
and ../shared/corpus when it is there, plus seeded mutations of them.

The mutations are what an editor or a bad merge does to a real file (a line lost, doubled or
shifted) and what YAML allows beside it (tags, anchors and aliases, scalars that resolve to
something other than text), so that two readers compared on them meet the error paths and the
odd values as often as the plain ones.
"""
from __future__ import annotations

import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPUS = ROOT.parent / "shared" / "corpus"

TAGS = ("!!bool", "!!int", "!!float", "!!null", "!!str", "!!foo", "!local", "!", "!!binary", "!!timestamp",
        "!!map", "!!seq", "!!set", "!!merge")
ODD_SCALARS = ("0x_", "0x1F", "0o17", "017", "0b101", "0b", "1_000", "+12", "-0", "1:30", "190:20:30", "1e3",
               "1.5e+3", ".inf", "-.Inf", ".NaN", ".", "~", "null", "Null", "NULL", "yes", "No", "On", "off",
               "TRUE", "y", "2020-01-01", "2001-12-14t21:59:43.10-05:00", '""', "''", '"quoted"', "'it''s'",
               "<<", "'<<'", "|\n  block", ">-\n  folded", "[a, b]", "{a: 1}", "[]", "{}", "? k", "- x",
               "&", "*", "@at", "`tick", "%pct", "a: b", "a #c", "#c", "'unterminated", "\"\\x41\\u00e9\"",
               "caf\u00e9", "\u00e9t\u00e9: \u00e0", "\t", "\u0085", "8080", "-1", "65536", "TCP", "\"53\"")


def corpus_files() -> list[Path]:
    """The project's YAML files, then ../shared/corpus's when present (none of it otherwise)."""
    roots = [ROOT / "examples", ROOT / "tests" / "data"] + ([SHARED_CORPUS] if SHARED_CORPUS.is_dir() else [])
    return [p for root in roots for p in sorted(root.rglob("*")) if p.suffix in (".yaml", ".yml", ".json")
            and p.is_file()]


def _value_spans(lines: list[str]) -> list[tuple[int, int]]:
    """(line index, column) where a block value starts: after ``key: `` or ``- ``."""
    out = []
    for i, line in enumerate(lines):
        for sep in (": ", "- "):
            at = line.find(sep)
            if at >= 0 and at + 2 < len(line):
                out.append((i, at + 2))
                break
    return out


def _insert(line: str, col: int, text: str) -> str:
    return line[:col] + text + line[col:]


def mutate(text: str, rng: random.Random) -> str:
    """One to three seeded edits of ``text`` (see the module docstring)."""
    lines = text.split("\n")
    for _ in range(rng.randint(1, 3)):
        spans = _value_spans(lines)
        op = rng.randrange(10)
        i = rng.randrange(len(lines))
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            shift, indent = rng.choice((-2, -1, 1, 2)), len(lines[i]) - len(lines[i].lstrip(" "))
            lines[i] = " " * shift + lines[i] if shift > 0 else lines[i][min(-shift, indent):]
        elif op == 3 and spans:
            j, col = rng.choice(spans)
            lines[j] = _insert(lines[j], col, rng.choice(TAGS) + " ")
        elif op == 4 and len(spans) > 1:
            (a, ca), (b, cb) = rng.sample(spans, 2)
            name = f"a{rng.randrange(3)}"
            lines[a] = _insert(lines[a], ca, f"&{name} ")
            lines[b] = lines[b][:cb] + f"*{name}"
        elif op == 5 and spans:
            j, col = rng.choice(spans)
            lines[j] = lines[j][:col] + rng.choice(ODD_SCALARS)
        elif op == 6:
            indent = len(lines[i]) - len(lines[i].lstrip(" "))
            lines.insert(i, " " * indent + rng.choice(("<<: *a0", "---", "...", "? [x]\n" + " " * indent + ": 1",
                                                        "dup: 1", "&a0 k: v", "*a0 : v", "!!int 7: seven")))
        elif op == 7 and len(lines) > 1:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 8 and spans:
            j, col = rng.choice(spans)
            lines[j] = _insert(lines[j], col, rng.choice(("&a0 ", "&a1 !!str ", "!!int &a2 ", "*a0 ", "*a1")))
        elif op == 9:
            at = rng.randrange(len(lines[i]) + 1)
            lines[i] = _insert(lines[i], at, rng.choice(("\t", ":", " #", "'", '"', "{", "]", ",", "\u00e9", "\x07")))
    return "\n".join(lines)


def _text(path: Path) -> str | None:
    """The file as the reader sees it (read_text's decoding), None for the files that test decoding itself."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def inputs(mutations: int, seed: int = 15) -> list[tuple[str, str]]:
    """(name, text) of every corpus file, then ``mutations`` seeded mutants of them, round-robin."""
    texts = ((str(p.relative_to(ROOT.parent)), _text(p)) for p in corpus_files())
    files = [(name, text) for name, text in texts if text is not None]
    rng = random.Random(seed)
    mutants = [(f"{files[k % len(files)][0]}~{k}", mutate(files[k % len(files)][1], rng)) for k in range(mutations)]
    return files + mutants
