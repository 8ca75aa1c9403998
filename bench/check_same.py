"""Does a change keep `policyc check`'s findings?  Two source trees on the same inputs, findings compared.

    python3 bench/gen_cluster.py --pods 300 --policies 300 --flavour cilium /tmp/cc300
    python3 bench/check_same.py --base /path/to/main /tmp/cc300 examples/shop [...]

Each input is a directory with ``policies/`` or a policy file, and the ``inventory.yaml`` beside them
(checked with and without it).  Everything of a finding but its witness (id, severity, message, policy, location, related
locations, fingerprint) must be equal, in the same order.  A witness is one model Z3 chose: a change in
how queries are asked may pick another, so a witness that differs is not an error but is replayed in
this tree's evaluator (tests/test_verify_checks.replay: the claimed verdict, the claimed rules match).
Exit 1 on any difference in the findings or any witness that does not replay.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def cases(target: Path) -> list[tuple[str, list[str], Path, Path | None]]:
    """(name, check arguments, policies, inventory) for one input: with and without its inventory (beside a
    policy file, as in tests/data/checks/*/; in a directory holding ``policies/``)."""
    policies = target / "policies" if (target / "policies").is_dir() else target
    folder = target if target.is_dir() else target.parent
    inventory = folder / "inventory.yaml" if (folder / "inventory.yaml").exists() else None
    out = [(f"{target}", [str(policies)], policies, None)]
    if inventory:
        out.append((f"{target} --inventory", [str(policies), "--inventory", str(inventory)], policies, inventory))
    return out


def findings(tree: Path, args: list[str]) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, "-m", "policyc.cli", "check", *args, "--format", "json",
                           "--fail-on", "never", "-q"], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: policyc check {' '.join(args)} failed: {proc.stderr}")
    return json.loads(proc.stdout)["findings"]


def replayed(policies: Path, inventory: Path | None, fingerprints: set[str]) -> list[str]:
    """Findings among ``fingerprints`` whose witness does not replay in this tree's evaluator."""
    sys.path.insert(0, str(HERE / "tests"))
    from test_verify_checks import replay  # noqa: E402  (the tests' own definition of a genuine witness)

    from policyc.compiler.frontend import build_policy_set
    from policyc.compiler.inventory import load_inventory
    from policyc.compiler.services import bind
    from policyc.compiler.source import load_documents
    from policyc.compiler.verify.checks import run_checks
    inv = load_inventory([inventory]) if inventory else None
    policy = bind(build_policy_set(load_documents([policies])).policy, inv.services if inv else ())
    bad = []
    for finding in run_checks(policy, inv):
        if finding.fingerprint in fingerprints:
            try:
                replay(policy, finding)
            except AssertionError as exc:
                bad.append(f"{finding.fingerprint} {finding.check}: {exc}")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--base", required=True, type=Path, help="the tree to compare against (e.g. main)")
    args = parser.parse_args()
    failed = False
    for target in args.inputs:
        for name, argv, policies, inventory in cases(target):
            old, new = findings(args.base, argv), findings(HERE, argv)
            strip = [[{k: v for k, v in f.items() if k != "witness"} for f in fs] for fs in (old, new)]
            if strip[0] != strip[1]:
                failed = True
                print(f"{name}: FINDINGS DIFFER ({len(old)} before, {len(new)} after)")
                continue
            moved = {n["fingerprint"] for o, n in zip(old, new) if o["witness"] != n["witness"]}
            bad = replayed(policies, inventory, moved) if moved else []
            failed |= bool(bad)
            print(f"{name}: {len(new)} findings equal; {len(moved)} witness(es) differ, "
                  f"{len(moved) - len(bad)} of them replay" + "".join(f"\n  NOT A WITNESS {b}" for b in bad))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
