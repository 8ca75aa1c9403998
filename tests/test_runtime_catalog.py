"""The endpoint catalog a resident agent keeps: its identities as policy peers, named ports included, stay what
a scan of every pod gives while pods come, change labels and go (no kernel needed)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.bpf_runtime.endpoints import Catalog, Extra, load_sources, own_labels
from policyc.bpf_runtime.state import State, manifest_sha256
from policyc.cli import main
from policyc.compiler.ir import pending_scope
from policyc.compiler.lower import PeerIdentity

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> State:
    out = tmp_path_factory.mktemp("catalog") / "shop"
    assert main(["compile", str(SHOP / "policies"), "--inventory", str(SHOP / "inventory.yaml"),
                 "--l7", "l4-only", "--output-dir", str(out)]) == 0
    return State("shop", str(out), manifest_sha256(out), "/nonexistent", "tcx", 0.0)


def _scanned(cat: Catalog, extra=None, without=None) -> tuple[PeerIdentity, ...]:
    """Every identity as a peer from a scan of every pod: what Catalog.peers keeps counted."""
    labels, ports = {}, {}
    for ep in [p.endpoint for n, p in cat.pods.items() if n != without] + ([extra] if extra else []):
        labels[ep.identity.id] = ep.identity.labels
        ports.setdefault(ep.identity.id, set()).update(ep.ports)
    out = dict(cat.fixed_peers)
    for ident, lbls in labels.items():
        out[ident] = PeerIdentity(ident, lbls, None, tuple(sorted(ports[ident], key=lambda n: (n.name, n.protocol, n.port))),
                                  pending_scope(lbls))
    return tuple(out[k] for k in sorted(out))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_peers_stay_what_a_scan_of_the_pods_gives(shop, data):
    src = load_sources(shop)
    cat = Catalog(shop, src, {})
    names = sorted(cat.pods)
    for _ in range(data.draw(st.integers(0, 8), "changes")):
        pod = data.draw(st.sampled_from(sorted(cat.pods) or names), "pod")
        if pod not in cat.pods:
            continue
        if data.draw(st.booleans(), "remove"):
            cat.apply({"op": "remove", "endpoint": pod})
            continue
        donor = cat.pods[data.draw(st.sampled_from(sorted(cat.pods)), "takes the labels of")].endpoint
        have = cat.pods[pod]
        labels = own_labels(donor.identity.labels)
        full = cat.identity_labels(pod, labels, donor.service_account, Extra())
        cat.apply({"op": "relabel", "endpoint": pod, "ips": [str(i) for i in have.endpoint.ips],
                   "labels": labels, "service_account": donor.service_account,
                   "identity": cat.identity_of(full, pod)[0] if have.endpoint.identity.labels != full
                   else have.endpoint.identity.id,
                   "policy_id": have.policy_id, "endpoint_id": have.endpoint_id})
        assert cat.peers() == _scanned(cat)
    for without in sorted(cat.pods)[:5]:
        assert cat.peers(without=without) == _scanned(cat, without=without)
        ep = cat.pods[without].endpoint
        assert cat.peers(extra=ep, without=without) == _scanned(cat, extra=ep, without=without)
