"""The state file of one loaded artifact: what was loaded from where, and attached where.

bpffs cannot hold regular files, so the JSON lives at ``/run/policyc/<name>.json``
(``POLICYC_STATE_DIR`` moves it).  It is a convenience for ``status``,
``observe`` and ``endpoint``: the pins stay the source of truth, and
``unload`` works from the pins alone when the file is lost or stale.
"""
from __future__ import annotations

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

    def as_dict(self) -> dict:
        return {"format": STATE_FORMAT, "name": self.name, "artifact": self.artifact,
                "manifest_sha256": self.manifest_sha256, "pin_dir": self.pin_dir, "tc_mode": self.tc_mode,
                "loaded_at": self.loaded_at, "attachments": [a.as_dict() for a in self.attachments],
                "node_ips": self.node_ips, "runtime": self.runtime}

    @classmethod
    def from_dict(cls, d: dict) -> "State":
        return cls(d["name"], d["artifact"], d["manifest_sha256"], d["pin_dir"], d["tc_mode"], d["loaded_at"],
                   [Attachment(**a) for a in d["attachments"]], list(d.get("node_ips", [])),
                   list(d.get("runtime", [])))


def manifest_sha256(artifact: Path) -> str:
    return hashlib.sha256((Path(artifact) / MANIFEST).read_bytes()).hexdigest()


def state_path(name: str, root: Path = STATE_DIR) -> Path:
    return root / f"{name}.json"


def write_state(state: State, root: Path = STATE_DIR) -> None:
    """Write atomically (temp file + rename), so a crash leaves the old file or the new one."""
    root.mkdir(parents=True, exist_ok=True)
    path = state_path(state.name, root)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.as_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_state(name: str, root: Path = STATE_DIR) -> State | None:
    """The recorded state, or None when there is none or it cannot be read."""
    try:
        data = json.loads(state_path(name, root).read_text())
        return State.from_dict(data) if data.get("format") == STATE_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_state(name: str, root: Path = STATE_DIR) -> None:
    state_path(name, root).unlink(missing_ok=True)
    state_path(name, root).with_suffix(".tmp").unlink(missing_ok=True)
