"""ns per packet of from_pod/to_pod (BPF_PROG_TEST_RUN, repeat N) for a few conformance cases.

Run as root: python3 bench/datapath_ns.py [REPEAT]
"""
from __future__ import annotations

import ipaddress
import sys
import tempfile
from pathlib import Path

from policyc.bpf_runtime.artifact import open_artifact, read_manifest
from policyc.bpf_runtime.testrun import Hooks, frame
from policyc.compiler.artifact import compile_artifact
from policyc.compiler.frontend import load_policies
from policyc.compiler.inventory import load_inventory
from policyc.compiler.ir import PolicySet, Protocol

CONFORMANCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "conformance"
CASES = ("L10-no-policy-allows-everything", "L20-knp-endport-range", "L25-cnp-deny-beats-allow", "L08-cidr-except")


def main(repeat: int) -> None:
    # x/b -> x/a 80/TCP: once allowed, repeats take the conntrack (established) path;
    # x/a -> 198.51.100.5 80/TCP: where denied, every repeat takes the full policy path (from_pod).
    flows = {"pod-pod": ("10.244.1.2", "10.244.1.1"), "pod-world": ("10.244.1.1", "198.51.100.5")}
    for name in CASES:
        case = CONFORMANCE / name
        policies = case / "policies"
        policy = load_policies([policies])[0] if policies.is_dir() else PolicySet()
        with tempfile.TemporaryDirectory() as out:
            compile_artifact(policy, load_inventory([CONFORMANCE / "inventory.yaml"]), Path(out), [])
            obj = open_artifact(Path(out))
            try:
                hooks = Hooks(obj, read_manifest(Path(out))["features"])
                for label, (src, dst) in flows.items():
                    data = frame(ipaddress.ip_address(src), ipaddress.ip_address(dst), Protocol.TCP, 33333, 80)
                    # the world address has no hook: from_pod's figure is the one that counts there
                    print(name, label, hooks.time_per_packet(data, (src,), (dst,) if label == "pod-pod" else (src,),
                                                             repeat))
            finally:
                obj.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100000)
