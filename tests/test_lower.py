"""Lowering unit tests on hand-built IR: tables, merged verdicts, CIDR regions, named ports, capacity."""
from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpgen import (inventory, make_rule, policy_set, policy_sets, selector,
                   standard_inventory)
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.entities import FIRST_CIDR_ID
from policyc.compiler.evaluate import Evaluator, Flow
from policyc.compiler.inventory import external, pod_labels
from policyc.compiler.ir import (Action, CIDRPeer, Direction, L3_ONLY, L7Rules, NamedPort, PortMatch, Protocol,
                                 SERVICE_ACCOUNT_KEY, Selector, SelectorPeer, SubjectKind, pending_label)
from policyc.compiler.codegen import render
from policyc.compiler.layouts import layouts
from policyc.compiler.lower import (ANY_PEER, LEVEL_ANY, LEVEL_PORT, LEVEL_PROTO, Item, PeerIdentity, PeerIndex,
                                   exact_blocks,
                                   fallback_levels, lower, lpm_blocks, merge, peer_identities)
from policyc.compiler.prefixes import prefix_blocks
from policyc.compiler.mapdata import DEFAULT_SIZES, HEADROOM, build_maps, capacity, decode_maps_bin, encode_maps_bin

IN, EG = Direction.INGRESS, Direction.EGRESS
net = ipaddress.ip_network


def lookup(dp, subject, peer_id, direction, protocol, port):
    """A Python model of the datapath's policy look-up, for checking tables without a kernel."""
    ep = next(e for e in dp.endpoints if e.name == subject.display)

    def most_specific(peer):
        hits = [e for e in dp.policy if e.policy_id == ep.policy_id and e.peer == peer
                and e.direction is direction
                and (e.protocol is None or (e.protocol == protocol
                                            and port >> (16 - e.port_bits) == e.port >> (16 - e.port_bits)))]
        return max(hits, key=lambda e: (e.protocol is not None, e.port_bits), default=None)

    found = [e.verdict for e in (most_specific(peer_id), most_specific(ANY_PEER)) if e is not None]
    if any(v.action is Action.DENY for v in found):
        return Action.DENY
    if direction not in ep.default_deny:
        return Action.ALLOW
    return Action.ALLOW if found else Action.DENY


def identity_of(dp, endpoint):
    """The ipcache's longest-prefix match for the endpoint's first address."""
    ip = endpoint.ips[0]
    hits = [e for e in dp.ipcache if e.network.version == ip.version and ip in e.network]
    return max(hits, key=lambda e: e.network.prefixlen).identity


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_prefix_blocks_cover_exactly(a, b):
    first, last = min(a, b), max(a, b)
    covered = []
    for start, bits in prefix_blocks(first, last):
        size = 1 << (16 - bits)
        assert start % size == 0
        covered.append((start, start + size - 1))
    assert covered[0][0] == first and covered[-1][1] == last
    assert all(x[1] + 1 == y[0] for x, y in zip(covered, covered[1:]))
    assert len(covered) <= 30


def test_port_range_is_prefix_entries_not_one_per_port():
    inv = standard_inventory(node=True)
    pol = policy_set([make_rule(0, selector("x"), IN, Action.ALLOW, [SelectorPeer((selector("y"),))],
                                [PortMatch(Protocol.TCP, 1000, 2000)])])
    dp = lower(pol, inv)
    assert dp.features.port_ranges
    per_peer = [e for e in dp.policy if e.peer == inv.find("y/a").identity.id and e.policy_id == 1]
    assert 0 < len(per_peer) < 20


def test_deny_beats_allow_and_wildcard_peer_is_one_entry():
    inv = standard_inventory(node=True)
    pol = policy_set([
        make_rule(0, selector("x"), IN, Action.ALLOW, [SelectorPeer((Selector(),))],
                  [PortMatch(Protocol.TCP, 0, 65535)]),
        make_rule(1, selector("x"), IN, Action.DENY, [SelectorPeer((selector("y", "a"),))],
                  [PortMatch(Protocol.TCP, 80, 80)]),
    ])
    dp = lower(pol, inv)
    xa, ya, yb = inv.find("x/a"), inv.find("y/a"), inv.find("y/b")
    assert lookup(dp, xa, ya.identity.id, IN, 6, 80) is Action.DENY
    assert lookup(dp, xa, ya.identity.id, IN, 6, 81) is Action.ALLOW
    assert lookup(dp, xa, yb.identity.id, IN, 6, 80) is Action.ALLOW
    assert lookup(dp, xa, yb.identity.id, IN, 17, 80) is Action.DENY
    assert sum(e.peer == ANY_PEER for e in dp.policy) == 2  # one per subject class in x
    assert dp.features.deny and dp.features.any_peer


def test_cidr_except_regions_and_identity_numbering():
    inv = standard_inventory(node=True)
    peer = CIDRPeer(net("192.0.2.0/24"), (net("192.0.2.0/28"),))
    pol = policy_set([make_rule(0, selector("x"), EG, Action.ALLOW, [peer], L3_ONLY)])
    dp = lower(pol, inv)
    cidrs = {e.network: e.identity for e in dp.ipcache if e.source == "cidr"}
    assert cidrs == {net("192.0.2.0/24"): FIRST_CIDR_ID, net("192.0.2.0/28"): FIRST_CIDR_ID + 1}
    assert {e.network: e.identity for e in dp.ipcache if e.source == "world"} == {net("0.0.0.0/0"): 9}
    xa = inv.find("x/a")
    for addr, want in (("192.0.2.200", Action.ALLOW), ("192.0.2.5", Action.DENY), ("203.0.113.1", Action.DENY)):
        ident = identity_of(dp, external(ipaddress.ip_address(addr)))
        assert lookup(dp, xa, ident, EG, 6, 80) is want, addr


def test_cidr_never_matches_pods():
    inv = standard_inventory(node=True)
    pol = policy_set([make_rule(0, selector("x"), IN, Action.ALLOW, [CIDRPeer(net("10.244.0.0/16"))], L3_ONLY)])
    dp = lower(pol, inv)
    ya = inv.find("y/a")
    assert identity_of(dp, ya) == ya.identity.id
    assert lookup(dp, inv.find("x/a"), ya.identity.id, IN, 6, 80) is Action.DENY


def test_named_ports_resolve_at_each_destination():
    other = (NamedPort("web", 8080, Protocol.TCP),)
    inv = inventory([("x", "a", ("10.244.1.1",), (NamedPort("web", 80, Protocol.TCP),)),
                     ("y", "a", ("10.244.2.1",), other)])
    web = PortMatch(Protocol.TCP, name="web")
    pol = policy_set([make_rule(0, selector(), IN, Action.ALLOW, [SelectorPeer((Selector(),))], [web]),
                      make_rule(1, selector("x"), EG, Action.ALLOW, [SelectorPeer((selector("y"),))], [web])])
    dp = lower(pol, inv)
    xa, ya = inv.find("x/a"), inv.find("y/a")
    assert lookup(dp, xa, ya.identity.id, IN, 6, 80) is Action.ALLOW
    assert lookup(dp, ya, xa.identity.id, IN, 6, 80) is Action.DENY
    assert lookup(dp, ya, xa.identity.id, IN, 6, 8080) is Action.ALLOW
    assert lookup(dp, xa, ya.identity.id, EG, 6, 8080) is Action.ALLOW
    assert lookup(dp, xa, ya.identity.id, EG, 6, 80) is Action.DENY


def test_specialization_follows_the_policy():
    plain = lower(policy_set([]), standard_inventory())
    assert not any(plain.features.as_dict().values())
    v6 = lower(policy_set([]), standard_inventory(v6=True))
    assert v6.features.ipv6
    assert {e.identity for e in v6.ipcache if e.source == "world"} == {9, 10}


@settings(max_examples=60, deadline=None)
@given(policy_sets())
def test_datapath_tries_every_level_an_entry_sits_at(policy):
    """The exact-mode look-up skips levels no rule produces: no entry may sit at a skipped level."""
    dp = lower(policy, standard_inventory(node=True))
    levels = set(fallback_levels(policy.rules))
    for e in () if dp.features.port_ranges else dp.policy:  # LPM mode has no levels
        assert (LEVEL_ANY if e.protocol is None else LEVEL_PORT if e.port_bits == 16 else LEVEL_PROTO) in levels


@settings(max_examples=60, deadline=None)
@given(policy_sets())
def test_table_model_agrees_with_evaluator(policy):
    """The tables, read the way the datapath reads them, give the evaluator's direction verdicts."""
    inv = standard_inventory(node=True)
    dp = lower(policy, inv)
    ev = Evaluator(policy)
    outside = [external(ipaddress.ip_address(a)) for a in ("192.0.2.3", "192.0.2.99", "198.51.100.7", "10.1.2.3")]
    outside += list(inv.nodes)
    for proto, port in ((Protocol.TCP, 80), (Protocol.TCP, 81), (Protocol.UDP, 81), (Protocol.TCP, 1500)):
        for src in inv.pods:
            for dst in list(inv.pods) + outside:
                if src == dst:
                    continue
                v = ev.evaluate(Flow(src, dst, proto, port))
                assert lookup(dp, src, identity_of(dp, dst), EG, int(proto), port) is v.egress.action
                if dst in inv.pods:
                    assert lookup(dp, dst, identity_of(dp, src), IN, int(proto), port) is v.ingress.action
        for src in outside:
            for dst in inv.pods:
                v = ev.evaluate(Flow(src, dst, proto, port))
                assert lookup(dp, dst, identity_of(dp, src), IN, int(proto), port) is v.ingress.action


def test_maps_bin_round_trip_and_capacity_error():
    inv = standard_inventory(node=True)
    pol = policy_set([make_rule(0, selector("x"), IN, Action.ALLOW, [SelectorPeer((selector("y"),))],
                                [PortMatch(Protocol.TCP, 80, 80)])])
    specs, _ = build_maps(lower(pol, inv), {})
    decoded = decode_maps_bin(encode_maps_bin(specs))
    assert decoded["endpoints"] == list(next(s for s in specs if s.name == "endpoints").entries)
    assert len(decoded["ipcache_hosts"]) == len(inv.endpoints)  # pod and node addresses: the hash
    assert len(decoded["ipcache"]) == 1  # world: the trie
    with pytest.raises(PolicycError, match="--map-size policy="):
        build_maps(lower(pol, inv), {"policy": 1})


def test_layout_codec_round_trips():
    lay = layouts(16, True)["policy_key"]
    data = lay.pack(prefixlen=90, policy_id=3, peer=256, dir=1, proto=6, port=1024)
    assert len(data) == lay.size == 16
    assert lay.unpack(data)["port"] == 1024 and data[-2:] == b"\x04\x00"
    assert "__be16 port;" in lay.c_decl()


def test_host_policies_are_reported_not_silently_dropped():
    rule = make_rule(0, Selector(), IN, Action.ALLOW, [SelectorPeer((Selector(),))], L3_ONLY)
    dp = lower(policy_set([replace(rule, subject_kind=SubjectKind.NODE)]), standard_inventory())
    assert any("nodeSelector" in w for w in dp.warnings)
    assert not dp.policy


def test_cidr_times_ports_blow_up_is_named():
    inv = standard_inventory()
    cidrs = [CIDRPeer(net(f"203.0.{n}.0/24")) for n in range(40)]
    ports = [PortMatch(Protocol.TCP, 1000 + 2 * n, 1000 + 2 * n) for n in range(40)]
    pol = policy_set([make_rule(0, selector("x"), EG, Action.ALLOW, cidrs, ports)])
    specs, warnings = build_maps(lower(pol, inv), {"policy": 8192})
    assert len(warnings) == 1 and "gen.yaml:1:1: rule 1" in warnings[0]
    assert "40 peer identities × 40 port blocks" in warnings[0]
    assert not build_maps(lower(pol, inv), {"policy": 65536})[1]


def test_generated_c_leaves_out_unused_paths():
    """Specialization: the C text follows the features (no clang needed)."""
    inv = standard_inventory()
    plain = policy_set([make_rule(0, selector("x"), IN, Action.ALLOW, [SelectorPeer((selector("y"),))],
                                  [PortMatch(Protocol.TCP, 80, 80)])])
    rich = policy_set([make_rule(0, selector("x"), IN, Action.ALLOW, [SelectorPeer((Selector(),))],
                                 [PortMatch(Protocol.TCP, 80, 90, l7=L7Rules("http")), PortMatch(Protocol.ICMP, 8, 8)]),
                       make_rule(1, selector("x"), IN, Action.DENY, [CIDRPeer(net("2001:db8::/32"))], L3_ONLY)])
    sources = {}
    for name, pol in (("plain", plain), ("rich", rich)):
        dp = lower(pol, inv)
        sources[name] = render(dp, build_maps(dp, {})[0], "test", [])
    markers = ("struct ipv6hdr", "REASON_DENIED;", "ANY_PEER, dir", "f->port = h->type;",
               ".prefixlen = 96")
    for marker in markers:
        assert marker not in sources["plain"] and marker in sources["rich"], marker


def _pairwise(peer, identity) -> bool:
    """The definition PeerIndex must equal, one (peer, identity) pair at a time."""
    if isinstance(peer, SelectorPeer):
        return any(s.matches(identity.labels) for s in peer.selectors)
    if isinstance(peer, CIDRPeer) and identity.region is not None:
        def inside(n):
            return n.version == identity.region.version and identity.region.subnet_of(n)
        return inside(peer.network) and not any(inside(ex) for ex in peer.excepts)
    return False


@settings(max_examples=60, deadline=None)
@given(policy_sets())
def test_peer_index_equals_pairwise_matching(policy):
    inv = standard_inventory(v6=True, node=True)
    identities = peer_identities(policy, inv, True)
    index = PeerIndex(identities)
    for rule in policy.rules:
        for peer in rule.peers:
            assert index.peer(peer) == {n for n, i in enumerate(identities) if _pairwise(peer, i)}, peer


def test_peer_index_answers_a_pending_identity_by_the_rules_action():
    """Labels not known yet: a deny's peer counts if it may match them, an allow's only if it matches
    whatever they turn out to be; peers that cannot match (another namespace) count for neither."""
    known = frozenset(lab for lab in pod_labels({}, "x", {"kubernetes.io/metadata.name": "x"}, "default",
                                                "default") if lab.key != SERVICE_ACCOUNT_KEY)
    pending = PeerIdentity(300, known | {pending_label("pod")}, pending="pod")
    index = PeerIndex((pending,))

    # the rules live as long as the index, as a policy set's do: it caches its answers by id(rule)
    rules = [make_rule(n, selector("x", "a"), IN, action, [SelectorPeer((sel,))], [])
             for n, action, sel in ((1, Action.DENY, selector(pod="b")), (2, Action.ALLOW, selector(pod="b")),
                                    (3, Action.ALLOW, selector("x")), (4, Action.DENY, selector("y")))]
    assert [index.rule(r) for r in rules] == [{0}, set(), {0}, set()]
    assert index.peer(SelectorPeer((selector("x"),))) == set()  # ``peer`` answers for known labels only


ITEMS = st.builds(Item, st.just(6), st.integers(0, 40), st.integers(0, 40), st.sampled_from(list(Action)),
                  st.integers(1, 6), st.booleans()).map(lambda i: replace(i, last=max(i.first, i.last)))
FULL = st.builds(Item, st.just(6), st.just(0), st.just(65535), st.sampled_from(list(Action)),
                 st.integers(1, 6), st.booleans())
COMMON = st.builds(Item, st.none(), st.just(0), st.just(65535), st.sampled_from(list(Action)),
                   st.integers(1, 6), st.booleans())


def _most_specific(blocks, port):
    hits = [(bits, v) for start, bits, v in blocks if port >> (16 - bits) == start >> (16 - bits)]
    return max(hits, key=lambda h: h[0])[1] if hits else None


@settings(max_examples=200, deadline=None)
@given(st.lists(ITEMS | FULL, max_size=8), st.lists(COMMON, max_size=2))
def test_port_sweep_equals_merge_per_port(own, common):
    """The sweep's blocks, read as the datapath reads them, give ``merge`` of the items covering each port."""
    singles = [i for i in own if i.first == i.last or (i.first, i.last) == (0, 65535)]
    ports = sorted({p for i in own for p in (i.first - 1, i.first, i.last, i.last + 1) if 0 <= p <= 65535} | {41})
    for blocks_of, items in ((lpm_blocks, own), (exact_blocks, singles)):
        blocks = blocks_of(items, common)
        for port in ports:
            covering = [i for i in items if i.first <= port <= i.last]
            want = merge(covering + common) if covering else None
            assert _most_specific(blocks, port) == want, (blocks_of.__name__, port)


def test_map_capacity_follows_the_input():
    assert capacity("ipcache", 10, {}) == DEFAULT_SIZES["ipcache"]
    big = capacity("ipcache", 100_000, {})
    assert big >= 100_000 * HEADROOM and big & (big - 1) == 0
    assert capacity("ipcache", 100_000, {"ipcache": 7}) == 7  # asked for: check_capacity judges it
