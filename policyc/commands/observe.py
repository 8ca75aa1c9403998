"""`policyc observe`: verdict events of a loaded artifact, printed like `hubble observe`."""
from __future__ import annotations

import json
import sys

from ..compiler.diagnostics import Diagnostic, PolicycError
from .common import add_format_arg, subcommand
from .runtime_common import bpf_errors

EXAMPLES = """
policyc observe shop --verdict deny --follow
policyc observe --timeout 10 -o json | jq .    # one JSON object per line
"""


def register(sub) -> None:
    parser = subcommand(sub, "observe", "print flow verdicts from the ring buffer (like hubble observe)", EXAMPLES)
    parser.add_argument("name", nargs="?", metavar="NAME", help="loaded artifact (default: the only one)")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new flows (Ctrl-C stops)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="read for S seconds, then exit (with or without --follow)")
    parser.add_argument("--verdict", choices=("allow", "deny"), help="only flows with this verdict")
    add_format_arg(parser, ("text", "json"))
    parser.set_defaults(run=run)


def run(args) -> int:
    from ..agent.client import AgentError, AgentUnavailable, agent_for
    from ..bpf_runtime.loaded import default_name, loaded_state
    from ..bpf_runtime.observe import Flow, observe
    from ..bpf_runtime.privileges import require_root

    require_root()

    def emit(flow) -> None:
        print(json.dumps(flow.as_dict(), sort_keys=True) if args.format == "json" else flow.text(), flush=True)

    follow = args.follow or args.timeout is not None
    agent = agent_for(args.name)
    if agent is not None:  # the agent reads the ring buffer for us (it has one consumer position)
        count = 0
        try:
            for item in agent.stream("/v1/observe", follow=int(follow), timeout=args.timeout, verdict=args.verdict):
                if "error" in item:
                    raise PolicycError(Diagnostic.simple(f"policyc agent: {item['error']}"))
                emit(Flow(**item))
                count += 1
        except (AgentError, AgentUnavailable) as exc:
            raise PolicycError(Diagnostic.simple(f"policyc agent: {exc}")) from None
    else:
        with bpf_errors():
            state = loaded_state(args.name or default_name())
            count = observe(state, emit, follow, args.timeout, args.verdict)
    if args.format == "text" and not count and not args.follow:
        print("no flows pending", file=sys.stderr)
    return 0
