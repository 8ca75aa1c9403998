"""Kernel-test gate: skip where the machine lacks BPF, fail instead when CI demands the kernel.

CI sets POLICYC_REQUIRE_KERNEL=1; then a kernel test that would skip is an error,
so a green run proves the datapath really ran.
"""
from __future__ import annotations

import os
import shutil

import pytest


def kernel_missing() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "not root"
    if not os.path.isdir("/sys/fs/bpf"):
        return "no /sys/fs/bpf"
    for tool in ("clang", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


def require_kernel() -> None:
    """Call at the start of every kernel test."""
    reason = kernel_missing()
    if reason is None:
        return
    if os.environ.get("POLICYC_REQUIRE_KERNEL") == "1":
        pytest.fail(f"kernel test cannot run ({reason}) but POLICYC_REQUIRE_KERNEL=1")
    pytest.skip(f"kernel test skipped: {reason}")
