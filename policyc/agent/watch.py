"""Directories the agent watches (the artifact, the inventory), as a ConfigMap volume or a plain directory.

The kubelet's atomic writer keeps a volume's files in a timestamped directory, points ``..data`` at
it and swaps that symlink in one rename; each visible name is a symlink through ``..data``.  A
fingerprint of the resolved directory (the ``..data`` target and each file's size and times) costs a
few ``stat`` calls, so polling it every second is cheaper than anything that would have to tell a
half-written file from a complete one anyway (docs/agent.md: why no inotify).
"""
from __future__ import annotations

import os
from pathlib import Path

DATA = "..data"


def resolved(directory: Path) -> Path:
    """The directory the files really are in: the ``..data`` target of a ConfigMap volume, else itself."""
    data = directory / DATA
    return directory / os.readlink(data) if data.is_symlink() else directory


def files(directory: Path, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """The files of the resolved directory (no dot files, not recursive), by name."""
    try:
        entries = sorted(os.scandir(resolved(directory)), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_file()
            and (not suffixes or e.name.lower().endswith(suffixes))]


def fingerprint(directory: Path) -> tuple:
    """Changes whenever a file of ``directory`` may have changed."""
    data = directory / DATA
    out = []
    for path in files(directory):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((path.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return (os.readlink(data) if data.is_symlink() else None, tuple(out))
