"""Conformance cases: the project's own (tests/data/conformance) and, when present, ../shared's.

The own cases cover every semantic area by themselves, so a clone with nothing beside it tests
everything; the kernel and runtime tests name own cases only. ../shared's cases are an extra,
independent set: they run when the directory is there, are skipped when it is not, and CI
(POLICYC_REQUIRE_SHARED=1) fails instead of skipping. Any test marked ``needs_shared`` gets that
gate from conftest.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OWN = ROOT / "tests" / "data" / "conformance"
# The Kubernetes e2e model (x, y, z × a, b, c) every own case uses unless it brings an inventory.
E2E_INVENTORY = OWN / "inventory.yaml"


def shared_missing() -> str | None:
    """Why ../shared cannot be read, or None when it can."""
    return None if SHARED.is_dir() else f"{SHARED} is not there"


def require_shared() -> None:
    """Skip without ../shared; fail instead under POLICYC_REQUIRE_SHARED=1 (CI has it)."""
    reason = shared_missing()
    if reason is None:
        return
    if os.environ.get("POLICYC_REQUIRE_SHARED") == "1":
        pytest.fail(f"test needs ../shared ({reason}) but POLICYC_REQUIRE_SHARED=1")
    pytest.skip(f"needs ../shared: {reason}")


def own(name: str) -> Path:
    """One own case by its full folder name (a typo fails at collection, not as a skip)."""
    case = OWN / name
    if not (case / "expected.yaml").is_file():
        raise LookupError(f"no own conformance case {name!r} in {OWN}")
    return case


def inventory(case: Path) -> Path:
    """The case's own inventory, else the e2e model's."""
    mine = case / "inventory.yaml"
    return mine if mine.is_file() else E2E_INVENTORY


def policy_paths(case: Path, empty: Path) -> list[str]:
    """A case's policies folder, or ``empty`` (an empty folder) for a case without one: no policy at all."""
    policies = case / "policies"
    return [str(policies if policies.is_dir() else empty)]


def own_cases() -> list[Path]:
    return sorted(p for p in OWN.iterdir() if (p / "expected.yaml").is_file())


def shared_cases() -> list[Path]:
    if shared_missing():
        return []
    return sorted(p for p in (SHARED / "conformance").iterdir() if (p / "expected.yaml").is_file())


def params(own_list: list[Path], with_shared: bool = True) -> list:
    """pytest params: own cases, then ../shared's marked ``needs_shared`` (one placeholder that skips
    or fails when the directory is absent, so its absence is never silent)."""
    out = [pytest.param(c, id=c.name) for c in own_list]
    if with_shared:
        shared = shared_cases()
        out += [pytest.param(c, id=f"shared-{c.name}", marks=pytest.mark.needs_shared) for c in shared] or \
            [pytest.param(SHARED / "conformance", id="shared-missing", marks=pytest.mark.needs_shared)]
    return out
