"""Read `policyc matrix`'s text tables back: {"PORT/PROTO": {(from, to): code}}, for tests."""
from __future__ import annotations

import re

_ROW = re.compile(r"^\s*(\d+) (\S+)\s+(.*)$")


def parse(text: str) -> dict[str, dict[tuple[str, str], str]]:
    tables: dict[str, dict[tuple[str, str], str]] = {}
    names: dict[int, str] = {}
    pending: list[tuple[str, list[int], str, str]] = []  # (port, columns, row name, codes) until names are known
    port, columns = "", []
    for line in text.splitlines():
        head = re.match(r"^(\d+/\w+): ", line)
        if head:
            port, columns = head.group(1), []
            tables[port] = {}
        elif line.startswith("columns: "):
            for item in line[len("columns: "):].split(", "):
                number, name = item.split(" ", 1)
                names[int(number)] = name
        elif port and re.fullmatch(r"\s+[\d ]+", line):
            columns = [int(x) for x in line.split()]
        elif port and _ROW.match(line):
            number, name, codes = _ROW.match(line).groups()
            names[int(number)] = name
            pending.append((port, columns, name, codes))
    for port, cols, name, codes in pending:
        for col, code in zip(cols, codes.split()):
            tables[port][(name, names[col])] = code
    return tables
