"""What `policyc load` is asked to do and what it reports: shared by load (loader.py) and replace."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .state import State


@dataclass(frozen=True)
class Request:
    """What ``policyc load`` was asked to do."""

    artifact: Path
    name: str
    attach: tuple[tuple[str, str], ...] = ()   # (ns/pod, iface)
    xdp: str | None = None
    xdp_mode: str = "auto"
    node_ips: tuple[str, ...] = ()
    tc_mode: str = "tcx"
    compiler: str = "libbpf"  # libbpf: the artifact's policyc.bpf.o; bcc: its C compiled here (bcc_loader.py)


@dataclass(frozen=True)
class LoadResult:
    state: State
    replaced: bool
    seconds: float
    conntrack_kept: int = 0
    conntrack_dropped: int = 0
