"""Gate and environment for bcc-loader tests: bcc's Python module and a kernel header tree.

Nodes have headers of their own kernel (/lib/modules/$(uname -r)/build). Test machines often
run a kernel without a header package (a VM vendor's); scripts/install-deps.sh then installs
Debian's generic header packages, split into an arch tree and a common tree, and this module
joins them into one symlink tree for BCC_KERNEL_SOURCE. TC and XDP programs use only stable
UAPI types from them, so a different kernel version's headers compile the same program.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from policyc.bpf_runtime.bcc_loader import import_bcc, headers_dir
from policyc.compiler.diagnostics import PolicycError


def debian_header_tree(workdir: Path) -> str | None:
    """linux-headers-V-FLAVOUR over linux-headers-V-common, as one symlink tree; None if not installed."""
    for common in sorted(Path("/usr/src").glob("linux-headers-*-common"), reverse=True):
        version = common.name.removeprefix("linux-headers-").removesuffix("-common")
        for arch in sorted(Path("/usr/src").glob(f"linux-headers-{version}-*")):
            if arch == common or not (arch / "include" / "generated").is_dir():
                continue
            tree = workdir / f"headers-{arch.name}"
            if not (tree / "include" / "linux" / "kconfig.h").exists():
                tree.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-rs", f"{common}/.", str(tree)], check=True)
                subprocess.run(["cp", "-rsf", f"{arch}/.", str(tree)], check=True)
            return str(tree)
    return None


def require_bcc(workdir: Path, monkeypatch) -> None:
    """Skip (fail under POLICYC_REQUIRE_KERNEL=1) without bcc or headers; set BCC_KERNEL_SOURCE if needed."""
    reason = None
    try:
        import_bcc()
    except PolicycError as exc:
        reason = str(exc)
    if reason is None and headers_dir() is None:
        tree = debian_header_tree(workdir)
        if tree is None:
            reason = "no kernel headers (scripts/install-deps.sh installs them)"
        else:
            monkeypatch.setenv("BCC_KERNEL_SOURCE", tree)
    if reason is None:
        return
    if os.environ.get("POLICYC_REQUIRE_KERNEL") == "1":
        pytest.fail(f"bcc test cannot run ({reason}) but POLICYC_REQUIRE_KERNEL=1")
    pytest.skip(f"bcc test skipped: {reason}")
