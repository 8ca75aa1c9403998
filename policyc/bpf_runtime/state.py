"""The state file of one loaded artifact: what was loaded from where, and attached where.

bpffs cannot hold regular files, so the JSON lives at ``/run/policyc/<name>.json``
(``POLICYC_STATE_DIR`` moves it).  It is a convenience for ``status``,
``observe`` and ``endpoint``: the pins stay the source of truth, and
``unload`` works from the pins alone when the file is lost or stale.

Endpoint changes are appended to a journal beside it (``<name>.journal``, one
JSON line each) instead of rewriting the whole file: a node with thousands of
pods would otherwise spend tens of milliseconds per change serialising them
all.  ``read_state`` replays the journal over the snapshot; ``write_state``
writes a new snapshot and drops the journal.  ``name_lock`` serialises the
processes (CLI, agent) that change one name.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..compiler.artifact import MANIFEST
from .attach import Attachment

STATE_FORMAT = "policyc-state/1"
STATE_DIR = Path(os.environ.get("POLICYC_STATE_DIR", "/run/policyc"))


@dataclass
class State:
    name: str
    artifact: str                 # absolute path of the artifact directory
    manifest_sha256: str
    pin_dir: str
    tc_mode: str
    loaded_at: float
    attachments: list[Attachment] = field(default_factory=list)
    node_ips: list[str] = field(default_factory=list)
    runtime: list[dict] = field(default_factory=list)  # endpoint add/remove/relabel since the load, in order
    seq: int = 0                  # changes journalled so far (the snapshot holds those up to its own seq)

    def as_dict(self) -> dict:
        return {"format": STATE_FORMAT, "name": self.name, "artifact": self.artifact,
                "manifest_sha256": self.manifest_sha256, "pin_dir": self.pin_dir, "tc_mode": self.tc_mode,
                "loaded_at": self.loaded_at, "attachments": [a.as_dict() for a in self.attachments],
                "node_ips": self.node_ips, "runtime": self.runtime, "seq": self.seq}

    @classmethod
    def from_dict(cls, d: dict) -> "State":
        return cls(d["name"], d["artifact"], d["manifest_sha256"], d["pin_dir"], d["tc_mode"], d["loaded_at"],
                   [Attachment(**a) for a in d["attachments"]], list(d.get("node_ips", [])),
                   list(d.get("runtime", [])), int(d.get("seq", 0)))


def manifest_sha256(artifact: Path) -> str:
    return hashlib.sha256((Path(artifact) / MANIFEST).read_bytes()).hexdigest()


def state_path(name: str, root: Path = STATE_DIR) -> Path:
    return root / f"{name}.json"


def journal_path(name: str, root: Path = STATE_DIR) -> Path:
    return root / f"{name}.journal"


def write_state(state: State, root: Path = STATE_DIR) -> None:
    """Write a snapshot atomically (temp file + rename), then drop the journal it includes.

    A crash between the two leaves journal lines the snapshot already holds; their ``seq`` is not
    above the snapshot's, so ``read_state`` skips them.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = state_path(state.name, root)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.as_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    journal_path(state.name, root).unlink(missing_ok=True)


def journal_change(state: State, record: dict | None, before: list[Attachment], root: Path = STATE_DIR,
                   node_ips_before: list[str] | None = None) -> None:
    """Append one change (its runtime record, the hooks it added or removed) to the journal.

    ``state`` already holds the change in memory; ``before`` is its attachment list before it.
    """
    state.seq += 1
    pins_before = {a.pin for a in before}
    pins_after = {a.pin for a in state.attachments}
    line = {"seq": state.seq, "runtime": record,
            "attach": [a.as_dict() for a in state.attachments if a.pin not in pins_before],
            "detach": sorted(pins_before - pins_after)}
    if node_ips_before is not None and node_ips_before != state.node_ips:
        line["node_ips"] = state.node_ips
    root.mkdir(parents=True, exist_ok=True)
    with open(journal_path(state.name, root), "a") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")


def _replay(state: State, path: Path) -> None:
    """Apply the journal lines newer than the snapshot; a torn last line (a crash mid-write) ends it."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return
    for text in lines:
        try:
            line = json.loads(text)
            if line["seq"] <= state.seq:
                continue
            gone = set(line.get("detach", ()))
            state.attachments = [a for a in state.attachments if a.pin not in gone]
            state.attachments += [Attachment(**a) for a in line.get("attach", ())]
        except (ValueError, KeyError, TypeError):
            return
        if line.get("runtime") is not None:
            state.runtime.append(line["runtime"])
        if "node_ips" in line:
            state.node_ips = list(line["node_ips"])
        state.seq = line["seq"]


def read_state(name: str, root: Path = STATE_DIR) -> State | None:
    """The recorded state with its journal replayed, or None when there is none or it cannot be read."""
    try:
        data = json.loads(state_path(name, root).read_text())
        state = State.from_dict(data) if data.get("format") == STATE_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if state is not None:
        _replay(state, journal_path(name, root))
    return state


def state_version(name: str, root: Path = STATE_DIR) -> tuple:
    """Changes whenever the snapshot or the journal is written: a resident process re-reads on a change."""
    out = []
    for path in (state_path(name, root), journal_path(name, root)):
        try:
            st = path.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def remove_state(name: str, root: Path = STATE_DIR) -> None:
    state_path(name, root).unlink(missing_ok=True)
    state_path(name, root).with_suffix(".tmp").unlink(missing_ok=True)
    journal_path(name, root).unlink(missing_ok=True)


@contextlib.contextmanager
def name_lock(name: str, root: Path = STATE_DIR):
    """Hold the lock of one loaded name: one process at a time loads, replaces, unloads or changes it.

    The lock file stays (removing it while another process waits on it would let two in).
    """
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
