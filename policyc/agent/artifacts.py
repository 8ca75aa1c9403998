"""The watched artifact directory: take a verified copy of the artifact it holds.

On a change of the directory's fingerprint (watch.py) the agent reads the artifact through one
resolved directory, checks every file against the manifest's sha256 and copies it to
``<store>/<manifest sha256>``.  The copy is what gets loaded: the state then names a directory that
nothing rewrites, so status, relabels and a restart read the artifact in force, not a newer one
half-written beside it (a ConfigMap volume swaps its files under the same path).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..compiler.artifact import FORMAT, MANIFEST
from .watch import resolved


class Refused(Exception):
    """The directory does not hold a complete, intact artifact (yet): the one in force stays."""


@dataclass(frozen=True)
class Staged:
    path: Path            # the verified copy
    sha256: str           # of its manifest.json: the artifact's identity


def manifest_sha256(directory: Path) -> str | None:
    try:
        return hashlib.sha256((resolved(directory) / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


def stage(directory: Path, store: Path) -> Staged:
    """Verify the artifact in ``directory`` file by file and copy it to ``store``; Refused says why not."""
    real = resolved(directory)
    try:
        raw = (real / MANIFEST).read_bytes()
    except OSError as exc:
        raise Refused(f"{directory}: no readable {MANIFEST} ({exc.strerror})") from None
    try:
        manifest = json.loads(raw)
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError):
        raise Refused(f"{directory}: {MANIFEST} is not a complete manifest (half-written?)") from None
    if manifest.get("format") != FORMAT:
        raise Refused(f"{directory}: {MANIFEST} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    sha = hashlib.sha256(raw).hexdigest()
    dest = store / sha
    if (dest / MANIFEST).is_file():
        return Staged(dest, sha)  # staged before (by this agent or one before it): the copy is verified
    store.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=store))
    try:
        for name, want in sorted(files.items()):
            if "/" in name or name.startswith("."):
                raise Refused(f"{directory}: {MANIFEST} lists {name!r}, not a file of an artifact")
            try:
                data = (real / name).read_bytes()
            except OSError as exc:
                raise Refused(f"{directory}/{name}: missing or unreadable ({exc.strerror}; half-written?)") from None
            if hashlib.sha256(data).hexdigest() != want:
                raise Refused(f"{directory}/{name}: sha256 differs from {MANIFEST} (half-written or corrupted)")
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_bytes(raw)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Staged(dest, sha)


def prune(store: Path, keep: set[str]) -> None:
    """Delete staged copies other than ``keep`` (the one in force, the one before it)."""
    for entry in store.iterdir() if store.is_dir() else ():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
