"""Decoding ring-buffer events and naming them as `policyc observe` prints them (no kernel needed)."""
from __future__ import annotations

from policyc.bpf_runtime.events import decode_event
from policyc.bpf_runtime.observe import Namer
from policyc.bpf_runtime.state import State
from policyc.compiler.codegen import REASON_CODES
from policyc.compiler.entities import RESERVED_IDS
from policyc.compiler.ir import Action, Direction
from policyc.compiler.layouts import EVENT
from policyc.compiler.lower import ACTION_CODE, DIR_CODE


def test_a_drop_before_any_ip_header_shows_its_addresses_as_unparsed(tmp_path):
    """A frame with three VLAN tags, an unknown ethertype, or one shorter than an Ethernet header is dropped
    before parse finds an IP header: its flow has no address family and zeroed addresses. They were
    printed as `::`, named by whatever identity the all-zero address looked up (`:: (world-ipv4)`), an
    address the frame never carried; `unparsed` now."""
    raw = EVENT.pack(ts=1, src_identity=RESERVED_IDS["world-ipv4"], dst_identity=RESERVED_IDS["world-ipv4"],
                     verdict=ACTION_CODE[Action.DENY], dir=DIR_CODE[Direction.INGRESS],
                     reason=REASON_CODES["MALFORMED"], family=0)
    event = decode_event(raw)
    assert (event.reason, event.src, event.dst) == ("malformed-packet", "unparsed", "unparsed")
    state = State("t", str(tmp_path), "", str(tmp_path), "tcx", 0.0)
    flow = Namer(state).flow(event)
    assert (flow.source, flow.destination) == ("unparsed", "unparsed")
    assert flow.text().endswith(" unparsed (ID:9) -> unparsed (ID:9) ANY DENY (ingress, malformed-packet)")


def test_an_ipv4_drop_still_names_its_addresses(tmp_path):
    """The same event with an IPv4 flow: addresses and reserved identities as before."""
    src = bytes(10) + b"\xff\xff" + bytes([198, 51, 100, 7])
    raw = EVENT.pack(ts=1, src_identity=RESERVED_IDS["world-ipv4"], verdict=ACTION_CODE[Action.DENY],
                     dir=DIR_CODE[Direction.INGRESS], reason=REASON_CODES["MALFORMED"], family=4, saddr=src,
                     daddr=bytes(10) + b"\xff\xff" + bytes([10, 244, 1, 1]))
    flow = Namer(State("t", str(tmp_path), "", str(tmp_path), "tcx", 0.0)).flow(decode_event(raw))
    assert (flow.source, flow.destination) == ("198.51.100.7 (world-ipv4)", "10.244.1.1")


def test_reason_codes_keep_their_words_across_versions():
    """An artifact loaded by an earlier policyc writes these codes into its events and `drops` counters, and
    today's `observe` and `status` name them: a code must never change meaning. They were numbered by
    position in two enums, so one more evaluator reason would have shifted every datapath code by one."""
    from policyc.compiler.codegen import REASON_WORDS
    assert [REASON_WORDS[c] for c in range(1, 24)] == [
        "self", "not-an-endpoint", "allow-localhost", "not-enforced", "denied-by-rule", "allowed-by-rule",
        "default-deny", "hairpin", "authentication-required", "request-denied", "no-such-packet",
        "malformed-packet", "invalid-ipv6-extension-header", "fragment-without-first", "ipv6-not-compiled",
        "invalid-source", "not-for-endpoint", "unbound-interface", "local-source-from-outside",
        "service-not-translated", "icmp-error-off-path", "vlan-tagged", "unknown-l3-protocol"]
