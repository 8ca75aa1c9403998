"""What every kind's parser is told about the object it reads: its kind, namespace, name, cluster."""
from __future__ import annotations

from dataclasses import dataclass

CNP, CCNP, KNP = "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy"


@dataclass(frozen=True)
class Meta:
    """An object's identity as its rules need it; ``namespace`` is None for a clusterwide kind."""

    kind: str
    namespace: str | None
    name: str
    cluster: str
