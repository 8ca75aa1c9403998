"""A loaded name as the commands find it: its state, its artifact's files, its pinned maps and programs."""
from __future__ import annotations

import json
from pathlib import Path

from ..compiler.artifact import MANIFEST
from . import bpffs
from .errors import error
from .libbpf import Map, Program
from .state import State, read_state


def loaded_state(name: str) -> State:
    """The state of a loaded artifact; an error naming what is loaded when ``name`` is not."""
    pins = bpffs.pin_dir(bpffs.check_name(name))
    state = read_state(name)
    if not pins.is_dir() or state is None:
        names = bpffs.loaded_names() if bpffs.is_bpffs(bpffs.BPFFS) else []
        hint = f" (loaded: {', '.join(names)})" if names else " (nothing is loaded)"
        if pins.is_dir():
            hint = f": pins exist but the state file is missing; run `policyc unload {name}`"
        raise error(f"no artifact loaded as {name!r}{hint}")
    return state


def default_name() -> str:
    """The only loaded name, for commands where NAME is optional."""
    names = bpffs.loaded_names() if bpffs.is_bpffs(bpffs.BPFFS) else []
    if len(names) != 1:
        raise error("give NAME: " + (f"loaded are {', '.join(names)}" if names else "nothing is loaded"))
    return names[0]


def manifest_of(state: State) -> dict:
    """The loaded artifact's manifest; a clear error when its directory went away (unload still works)."""
    path = Path(state.artifact) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{state.name}: cannot read {path} ({exc.strerror if isinstance(exc, OSError) else exc}); "
                    "the artifact directory it was loaded from must stay in place "
                    f"(`policyc unload {state.name}` works without it)") from None


def artifact_json(state: State, name: str) -> list[dict]:
    try:
        return json.loads((Path(state.artifact) / name).read_text())
    except (OSError, ValueError):
        return []  # the artifact directory moved away: counters stay, origins are unknown


def open_map(pins: Path, name: str) -> Map:
    """A pinned map of the pin directory ``pins``; the caller closes it."""
    return Map.open_pinned(str(Path(pins) / "maps" / name))


def open_program(pins: Path, name: str) -> Program:
    return Program.open_pinned(str(Path(pins) / "progs" / name))
