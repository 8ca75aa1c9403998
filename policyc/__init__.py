"""policyc: a compiler and verifier for Cilium and Kubernetes network policies."""

__version__ = "0.1.0"
