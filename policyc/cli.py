"""The `policyc` command: one subcommand per module in policyc.commands (conventions: docs/cli.md)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .commands.common import EXIT_STATUS
from .commands.terminal import colourise
from .compiler.diagnostics import PolicycError, render

COMMANDS = ("validate", "query", "matrix", "paths", "blast-radius", "graph", "check", "diff", "verify",
            "compile", "load", "unload", "status", "observe", "endpoint", "agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="policyc", description="Compile and verify Cilium network policies.",
        epilog="`policyc COMMAND --help` shows a command's options and examples; docs/cli.md the conventions.\n\n"
        + EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"policyc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"policyc.commands.{name.replace('-', '_')}").register(sub)
    return parser


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion (argcomplete) when the shell asks for it; a no-op otherwise."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:  # completion is a convenience: without the package there is none
        return
    argcomplete.autocomplete(parser)


def report(exc: PolicycError, fmt: str) -> None:
    """Bad input in the chosen format: SARIF on stdout (it is the report file code scanning reads),
    JSON and YAML diagnostics on stderr, text coloured on a terminal."""
    if fmt == "sarif":
        print(render(exc.diagnostics, "sarif", __version__))
    elif fmt in ("json", "yaml"):
        print(render(exc.diagnostics, fmt), file=sys.stderr)
    else:
        print(colourise(render(exc.diagnostics), sys.stderr), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _complete(parser)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except PolicycError as exc:
        report(exc, getattr(args, "format", "text"))
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
