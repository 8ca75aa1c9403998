#!/usr/bin/env bash
# Installs what policyc needs on a fresh Debian machine: the BPF toolchain from apt
# (only what is missing, so repeated runs are fast) and the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="clang llvm libbpf-dev libelf-dev bpftool iproute2 iptables linux-libc-dev"
# The reference CNI plugins (ptp, bridge, host-local, loopback in /usr/lib/cni): tests/test_cni.py chains
# policyc-cni after them as a container runtime does.
APT_PACKAGES="$APT_PACKAGES containernetworking-plugins"
# kube-proxy's nftables mode in the Services tests (tests/test_services_netns.py): the nft command.
APT_PACKAGES="$APT_PACKAGES nftables"
# `policyc graph -o svg|png` draws with Graphviz's dot.
APT_PACKAGES="$APT_PACKAGES graphviz"
# The bcc loader (policyc load --compiler bcc) and its tests: bcc and kernel headers. Where the
# running kernel has no header package (a VM vendor's kernel), Debian's generic headers stand in
# for the tests (tests/bccreq.py); a node needs its own kernel's headers.
HEADERS="linux-headers-$(uname -r)"
apt-cache show "$HEADERS" >/dev/null 2>&1 || HEADERS="linux-headers-cloud-$(dpkg --print-architecture)"
APT_PACKAGES="$APT_PACKAGES python3-bpfcc $HEADERS"
missing=""
for pkg in $APT_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing Debian packages:$missing (run as root to install them)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
fi

${PYTHON:-python3} -m pip install -q --disable-pip-version-check -e '.[test]'
