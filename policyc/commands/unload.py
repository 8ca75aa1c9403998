"""`policyc unload`: detach and unpin a loaded artifact; works from the pins alone after a crash."""
from __future__ import annotations

from .common import add_format_arg, structured, subcommand
from .runtime_common import bpf_errors

EXAMPLES = """
policyc unload shop
"""


def register(sub) -> None:
    parser = subcommand(sub, "unload", "detach and remove a loaded artifact (idempotent)", EXAMPLES)
    parser.add_argument("name", metavar="NAME")
    add_format_arg(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    import sys

    from ..agent.client import agent_for
    from ..bpf_runtime.loader import unload

    with bpf_errors():
        detached = unload(args.name)
    if agent_for(args.name) is not None:
        print(f"policyc unload: a policyc agent keeps {args.name} in force and will load its watched artifact "
              "again on its next poll; stop the agent first to take the policy off this node", file=sys.stderr)
    if args.format != "text":
        print(structured({"name": args.name, "detached": detached}, args.format))
        return 0
    print(f"unloaded {args.name}: {len(detached)} attachment(s) detached" if detached
          else f"unloaded {args.name} (nothing was attached)")
    return 0
