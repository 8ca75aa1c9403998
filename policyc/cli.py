"""The `policyc` command: one subcommand per module in policyc.commands."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .compiler.diagnostics import PolicycError, render

COMMANDS = ("validate", "query", "matrix", "check", "diff", "verify", "compile",
            "load", "unload", "status", "observe", "endpoint", "agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="policyc", description="Compile and verify Cilium network policies.")
    parser.add_argument("--version", action="version", version=f"policyc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"policyc.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except PolicycError as exc:
        fmt = getattr(args, "format", "text")
        print(render(exc.diagnostics, "json" if fmt == "json" else "text"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("POLICYC_DEBUG") == "1":
            raise
        print(f"policyc: internal error: {type(exc).__name__}: {exc} (set POLICYC_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
