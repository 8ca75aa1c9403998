"""What the runtime commands need from the process: CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import error

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39


def effective_caps() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return -1 if os.geteuid() == 0 else 0


def require_root() -> None:
    """BPF maps, programs and links need CAP_BPF (or CAP_SYS_ADMIN); hooks need CAP_NET_ADMIN."""
    caps = effective_caps()
    has = lambda cap: bool(caps >> cap & 1)  # noqa: E731
    if not (has(CAP_NET_ADMIN) and (has(CAP_BPF) or has(CAP_SYS_ADMIN))):
        raise error("the runtime commands need root (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN): run as root")
