"""The kinds policyc knows, one row each: a new kind is a parser module and a row here.

A row with a parser is a network policy; a row without one is an object policyc recognises and
skips on purpose (`--verbose` lists it), so that an unknown kind in the same API groups can be
reported instead of silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .cilium import parse_cilium
from .knp import parse_networkpolicy
from .meta import CCNP, CNP, KNP

POLICY_GROUPS = ("cilium.io", "networking.k8s.io")  # an unknown kind in these groups may be a typo


@dataclass(frozen=True)
class Kind:
    """How to read one kind: its apiVersions, its parser, whether it lives in a namespace."""

    name: str
    versions: tuple[str, ...] = ()  # accepted apiVersions (empty: any, for skipped kinds)
    parse: Callable | None = None   # (reader, object, path, Meta) -> (rules, default-deny entries)
    namespaced: bool = True
    spec_keys: tuple[str, ...] = ("spec",)


def _skipped(*names: str) -> list[Kind]:
    return [Kind(name) for name in names]


KINDS: dict[str, Kind] = {k.name: k for k in [
    Kind(CNP, ("cilium.io/v2",), parse_cilium, spec_keys=("spec", "specs")),
    Kind(CCNP, ("cilium.io/v2",), parse_cilium, namespaced=False, spec_keys=("spec", "specs")),
    Kind(KNP, ("networking.k8s.io/v1",), parse_networkpolicy),
    # Objects of the policy API groups that are not network policies: recognised, skipped on purpose.
    *_skipped("CiliumCIDRGroup", "CiliumEndpoint", "CiliumEndpointSlice", "CiliumNode", "CiliumIdentity",
              "CiliumExternalWorkload", "CiliumLoadBalancerIPPool", "CiliumPodIPPool", "CiliumEgressGatewayPolicy",
              "CiliumLocalRedirectPolicy", "CiliumEnvoyConfig", "CiliumClusterwideEnvoyConfig",
              "CiliumL2AnnouncementPolicy", "CiliumNodeConfig", "CiliumGatewayClassConfig",
              "CiliumBGPPeeringPolicy", "CiliumBGPClusterConfig", "CiliumBGPPeerConfig", "CiliumBGPAdvertisement",
              "CiliumBGPNodeConfig", "CiliumBGPNodeConfigOverride",
              "Ingress", "IngressClass", "IPAddress", "ServiceCIDR"),
]}


def policy_kinds() -> list[str]:
    return [k.name for k in KINDS.values() if k.parse]
