#!/bin/sh
# FALLBACK ONLY. The way to run policyc on a node is `policyc agent` with the policyc-cni plugin
# (daemonset.yaml, docs/deploy.md): every pod is enforced from its first packet. This script is for
# nodes where no CNI plugin can be added: it finds the host-side veth of every local pod, loads the
# artifact onto them, and loads again (an atomic replace) whenever the local pods or the artifact
# change, every POLICYC_INTERVAL seconds; a pod created in between runs without its hooks until then.
#
#   policyc-node.sh attachments   stdin "ns/pod ip" lines -> stdout "ns/pod=iface" lines
#   policyc-node.sh run           the reconcile loop (needs NODE_NAME, kubectl, policyc)
set -eu

ARTIFACT=${POLICYC_ARTIFACT:-/etc/policyc/artifact}
NAME=${POLICYC_NAME:-cluster}
STATE=${POLICYC_STATE:-/run/policyc/node}   # beside the loader's <name>.json state files
INTERVAL=${POLICYC_INTERVAL:-10}
NETNS_DIRS=${POLICYC_NETNS_DIRS:-/run/netns /var/run/netns}
DISCOVERY=${POLICYC_DISCOVERY:-route netns}   # which ways to find a pod's veth, in order

# The host side of a pod's veth, by the route to its address: routed CNIs (Cilium, Calico,
# kindnet/ptp) install one /32 (/128) per pod through its veth.
by_route() {
    dev=$(ip -o route get "$1" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
    [ -n "$dev" ] && ip -d -o link show dev "$dev" 2>/dev/null | grep -q ' veth ' && echo "$dev"
}

# Bridged CNIs (bridge, flannel) route the pod subnet to a bridge: find the pod's network
# namespace among those the runtime mounts, read the peer index of its eth0 (eth0@ifN) and name
# the host interface with that index.
by_netns() {
    for dir in $NETNS_DIRS; do
        for ns in "$dir"/*; do
            [ -e "$ns" ] || continue
            nsenter --net="$ns" ip -o addr show dev eth0 2>/dev/null | grep -q " $1/" || continue
            peer=$(nsenter --net="$ns" ip -o link show dev eth0 | sed -n 's/^[0-9]*: eth0@if\([0-9]*\):.*/\1/p')
            [ -n "$peer" ] && ip -o link show | sed -n "s/^$peer: \([^:@]*\)[:@].*/\1/p" && return 0
        done
    done
    return 1
}

attachments() {
    while read -r pod ip; do
        [ -n "$pod" ] && [ -n "$ip" ] || continue
        dev=""
        for way in $DISCOVERY; do
            dev=$(by_$way "$ip" || true)
            [ -n "$dev" ] && break
        done
        if [ -n "$dev" ]; then
            echo "$pod=$dev"
        else
            echo "policyc-node: no veth found for $pod ($ip), not attached" >&2
        fi
    done
}

# Running pods of this node that have their own network namespace: "ns/pod ip".
local_pods() {
    kubectl get pods -A --field-selector "spec.nodeName=$NODE_NAME,status.phase=Running" \
        -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.status.podIP} {.spec.hostNetwork}{"\n"}{end}' |
        awk '$3 != "true" && $2 != "" { print $1, $2 }'
}

# Only pods the artifact was compiled for: a pod it does not know has no identity in it yet
# (CI recompiles when the inventory changes; see docs/deploy.md).
known_to_artifact() {
    python3 -c '
import json, sys
known = {e["name"] for e in json.load(open(sys.argv[1]))}
for line in sys.stdin:
    if line.split("=", 1)[0] in known:
        sys.stdout.write(line)
' "$ARTIFACT/endpoints.json"
}

run() {
    : "${NODE_NAME:?NODE_NAME must be set (downward API spec.nodeName)}"
    mkdir -p "$STATE"
    loaded=""
    while :; do
        local_pods | attachments | known_to_artifact | sort > "$STATE/attach.new"
        want="$(sha256sum "$ARTIFACT/manifest.json" "$STATE/attach.new" | sha256sum)"
        if [ "$want" != "$loaded" ]; then
            mv "$STATE/attach.new" "$STATE/attach.txt"
            # Loading over a loaded NAME swaps programs and maps atomically.
            if policyc load "$ARTIFACT" --name "$NAME" --attach-file "$STATE/attach.txt" \
                    --tc-mode "${POLICYC_TC_MODE:-tcx}" ${POLICYC_NODE_IP:+--node-ip "$POLICYC_NODE_IP"} \
                    ${POLICYC_XDP:+--xdp "$POLICYC_XDP"}; then
                loaded="$want"
                policyc status "$NAME"
            fi
        fi
        sleep "$INTERVAL"
    done
}

case "${1:-run}" in
    attachments) attachments ;;
    run) run ;;
    *) echo "usage: $0 attachments|run" >&2; exit 2 ;;
esac
