"""`policyc status`: what is loaded where, map fill levels, per-rule counters; Prometheus text with --metrics."""
from __future__ import annotations

import time

from ..compiler.mapdata import CT_MAPS
from .common import add_format_arg, structured, subcommand
from .runtime_common import bpf_errors

EXAMPLES = """
policyc status
policyc status shop -o json
policyc status shop --metrics          # Prometheus text format
"""


def register(sub) -> None:
    parser = subcommand(sub, "status", "loaded artifacts, attachments, map fill levels, per-rule counters",
                        EXAMPLES)
    parser.add_argument("name", nargs="?", metavar="NAME", help="one loaded artifact (default: all)")
    add_format_arg(parser)
    parser.add_argument("--metrics", action="store_true", help="print Prometheus text format instead")
    parser.set_defaults(run=run)


def _text(s: dict) -> list[str]:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s["loaded_at"]))
    out = [f"{s['name']}: {s['artifact']} (manifest sha256 {s['manifest_sha256'][:12]}, loaded {when}, "
           f"tc mode {s['tc_mode']}, {s['runtime_changes']} runtime endpoint change(s))"]
    for a in s["attachments"]:
        who = f" ({a['endpoint']})" if a["endpoint"] else ""
        out.append(f"  {a['program']:<9} on {a['iface']} {a['hook']:<7} [{a['mode']}]{who}"
                   + ("" if a["present"] else "  MISSING PIN"))
    if s["l7"] == "l4-only":
        out.append("  L7 rules enforced as L4 only (compiled with --l7 l4-only: no proxy filters requests)")
    if s["node_ips"]:
        out.append(f"  host identity: {', '.join(s['node_ips'])}")
    out.append("  maps:")
    out += [f"    {m['name']:<10} {m['entries']:>7} / {m['max_entries']}" for m in s["maps"]]
    st = s["datapath"]["stats"]
    if st:
        out.append(f"  events: {st['events_lost']} lost (ring buffer full), {st['events_ratelimited_allow']} allow "
                   f"and {st['events_ratelimited_drop']} drop over budget; passed as control traffic: "
                   f"{st['nd_passed']} neighbour discovery, {st['icmp_related']} related ICMP errors; "
                   f"{st['frag_map_full']} first fragments not recorded")
        out.append("  conntrack inserts refused: " + ", ".join(f"{t} {st[f'{t}_full']}" for t in CT_MAPS))
    for d in s["datapath"]["drops"]:
        out.append(f"  dropped ({d['reason']}): {d['packets']} packets, {d['bytes']} bytes")
    out.append("  rules (packets / bytes of new flows):")
    for r in s["rules"]:
        where = f"  {r['file']}:{r['line']}" if r["file"] else ""
        verdict = f"{r['direction']} {r['action']}".strip()
        out.append(f"    #{r['id']:<4} {r['packets']:>8} {r['bytes']:>10}  {verdict:<14} "
                   f"{r['policy']} {r['rule']}{where}")
    return out


def _agent_text(a: dict) -> list[str]:
    art = a["artifact"]
    out = [f"agent (pid {a['pid']}): {'ready' if a['ready'] else 'NOT READY'}; watching {art['source']}"]
    if art["in_force"]:
        out.append(f"  artifact in force: sha256 {art['in_force'][:12]} ({art['path']})")
    if art["refused"]:
        out.append(f"  REFUSED sha256 {str(art['refused']['sha256'])[:12]}: {art['refused']['reason']} "
                   "(the artifact in force stays)")
    ep = a["endpoints"]
    out.append(f"  pods registered by the CNI plugin: {ep['cni']}")
    for pod in ep["pending"]:
        how = "denied everything (the artifact cannot express more)" if pod in ep["lockdown"] else \
            "only what its namespace's labels are granted"
        out.append(f"    {pod}: labels not known yet: {how}")
    inv = a["inventory"]
    out.append(f"  inventory: {inv['pods']} pods, {inv['namespaces']} namespaces"
               + (f" (directory {inv['directory']})" if inv["directory"] else "")
               + (f"; last read FAILED: {inv['error']}" if inv["error"] else ""))
    return out


def run(args) -> int:
    from ..agent.client import agent_for
    from ..bpf_runtime import bpffs
    from ..bpf_runtime.loaded import loaded_state
    from ..bpf_runtime.metrics import render
    from ..bpf_runtime.privileges import require_root
    from ..bpf_runtime.status import collect
    from .runtime_common import through_agent

    require_root()
    agent = agent_for(args.name)
    seen = through_agent(agent, "GET", "/v1/status") if agent is not None else None
    mine = seen["agent"]["name"] if seen else None
    waiting = seen is not None and not seen["loaded"]  # the agent serves the name and has no policy in force yet
    with bpf_errors():
        names = [args.name] if args.name else (bpffs.loaded_names() if bpffs.is_bpffs(bpffs.BPFFS) else [])
        names = [n for n in names if not (waiting and n == mine)]  # its view says why (a refused artifact)
        statuses = [seen["loaded"] if n == mine and seen["loaded"] else collect(loaded_state(n)) for n in names]
        for s in statuses:
            if s["name"] == mine:
                s["agent"] = seen["agent"]
    if args.metrics:
        print(render(statuses), end="")
    elif args.format != "text":
        print(structured(statuses if not args.name else statuses[0] if statuses else
                         {"name": args.name, "agent": seen["agent"]}, args.format))
    elif not statuses:
        print("nothing is loaded" + ("; the agent is waiting for a valid artifact" if seen else ""))
        if seen:
            print("\n".join(_agent_text(seen["agent"])))
    else:
        for s in statuses:
            print("\n".join(_text(s) + (_agent_text(s["agent"]) if "agent" in s else [])))
    return 0
