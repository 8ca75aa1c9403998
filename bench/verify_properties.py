"""Nightly-style run of the verifier's property tests: many more generated policy-set pairs than CI.

    python bench/verify_properties.py [EXAMPLES]      # default 5000 per property

Runs tests/test_verify_properties.py with the ``nightly`` hypothesis profile (random, not
derandomized: each run explores new pairs) and prints what the properties saw: pairs generated,
pairs that open some flow, flows judged, flows the gate named, deletions judged, witnesses replayed,
with the wall time. A failure prints hypothesis's reproduction blob and exits 1. Record the figures
with the command in docs/benchmarks.md.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(examples: int) -> int:
    os.environ["POLICYC_PROPERTY_PROFILE"] = "nightly"
    os.environ["POLICYC_PROPERTY_EXAMPLES"] = str(examples)
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import test_verify_properties as props  # noqa: E402 (the profile is read at import)

    started = time.perf_counter()
    failed = False
    for test in (props.test_gate_fails_on_every_new_flow_and_names_it,
                 props.test_every_removable_rule_can_be_deleted_and_every_witness_replays):
        t0 = time.perf_counter()
        try:
            test()
        except Exception as exc:  # the property's counterexample: report it, keep the counts
            failed = True
            print(f"FAILED {test.__name__}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"{test.__name__}: {time.perf_counter() - t0:.0f} s")
    print(f"examples per property: {examples}; total {time.perf_counter() - started:.0f} s")
    for key, value in sorted(props.COUNTS.items()):
        print(f"  {key}: {value}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
