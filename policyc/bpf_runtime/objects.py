"""The BPF object of a load or replace: opened, its maps filled, host addresses set, pinned; undo steps.

Operations (loader.py, replace.py, endpoints.py) build on these; nothing here attaches a hook.
"""
from __future__ import annotations

from pathlib import Path

from ..compiler.diagnostics import PolicycError
from . import bpffs
from .artifact import open_artifact, read_manifest
from .errors import error
from .hostaddrs import set_host_identity
from .libbpf import BPFError, BPFObject

class Undo:
    """Undo steps run in reverse on failure; errors while undoing never hide the original one."""

    def __init__(self):
        self.steps = []

    def add(self, fn, *args) -> None:
        self.steps.append((fn, args))

    def run(self) -> None:
        for fn, args in reversed(self.steps):
            try:
                fn(*args)
            except (OSError, BPFError, PolicycError):
                pass


def open_object(artifact: Path, compiler: str) -> BPFObject:
    """The artifact's programs loaded and maps filled: from its object file, or compiled here by bcc."""
    if compiler == "bcc":
        from .bcc_loader import compile_and_load
        return compile_and_load(artifact)
    return open_artifact(artifact)


def build(artifact: Path, pins: Path, node_ips: list[str], undo: Undo, compiler: str = "libbpf") -> BPFObject:
    """Load the object, fill its maps, set host addresses and pin maps and programs under ``pins``."""
    manifest = read_manifest(artifact)
    try:
        obj = open_object(artifact, compiler)
    except BPFError as exc:
        raise error(f"{artifact}: {exc}") from None
    undo.add(obj.close)
    set_host_identity(obj.map("ipcache_hosts"), manifest["features"], node_ips)
    for sub in ("maps", "progs"):
        (pins / sub).mkdir(parents=True)
    undo.add(bpffs.remove_tree, pins)
    for m in manifest["maps"]:
        obj.map(m["name"]).pin(str(pins / "maps" / m["name"]))
    for name in dict.fromkeys(prog["name"] for prog in manifest["programs"]):  # nf_node: one entry per hook
        obj.program(name).pin(str(pins / "progs" / name))
    return obj
