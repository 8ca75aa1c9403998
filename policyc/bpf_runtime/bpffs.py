"""The BPF filesystem: mounted when missing, and the pin directory of each loaded artifact.

Layout under ``/sys/fs/bpf/policyc/<name>/`` (docs/runtime.md): ``maps/<map>``,
``progs/<program>``, ``links/<hook>-<iface>`` (tcx and XDP links; clsact
filters leave a symlink marker there instead), ``artifact`` (a symlink to the
artifact directory) and, during an atomic replace, ``next/``.  bpffs holds
only pins, directories and symlinks, so the JSON state file lives in
``/run/policyc`` (state.py); everything needed to unload is in the pins.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import error

BPFFS = Path(os.environ.get("POLICYC_BPFFS", "/sys/fs/bpf"))
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")  # bpffs refuses dots in names
LOCK = Path("/run/policyc.lock")



def check_name(name: str) -> str:
    """Names become directory names: letters, digits, ``_ . -``, not starting with a dot."""
    if not NAME_RE.match(name):
        raise error(f"invalid name {name!r}: use letters, digits, '_', '-' (at most 63; bpffs refuses dots)")
    return name


def is_bpffs(path: Path) -> bool:
    """True when ``path`` is itself a mount of the BPF filesystem."""
    try:
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1] == str(path) and line.split()[2] == "bpf" for line in mounts)
    except OSError:
        return False


def ensure_bpffs(root: Path = BPFFS) -> None:
    """Mount bpffs at ``root`` when it is not mounted; a lock keeps two loaders from stacking mounts."""
    if is_bpffs(root):
        return
    if os.geteuid() != 0:
        raise error(f"{root} is not a BPF filesystem and mounting it needs root")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_bpffs(root):
            return
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise error(f"cannot create {root}: {exc.strerror}") from None
        done = subprocess.run(["mount", "-t", "bpf", "bpf", str(root)], capture_output=True, text=True)
        if done.returncode != 0 or not is_bpffs(root):
            raise error(f"no BPF filesystem: mounting bpffs at {root} failed ({done.stderr.strip() or 'unknown'}); "
                         "the kernel needs CONFIG_BPF_SYSCALL")


def pin_dir(name: str, root: Path = BPFFS) -> Path:
    return root / "policyc" / name


def loaded_names(root: Path = BPFFS) -> list[str]:
    base = root / "policyc"
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def remove_tree(path: Path) -> None:
    """Unlink every pin, symlink and directory under ``path`` (missing is fine)."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=False)
