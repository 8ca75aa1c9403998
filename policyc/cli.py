"""The `policyc` command: one subcommand per module in policyc.commands (conventions: docs/cli.md)."""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from . import __version__
from .commands.common import EXIT_STATUS
from .commands.parser import Parser, UsageError, sniff_format
from .commands.terminal import colourise
from .compiler.diagnostics import Diagnostic, PolicycError, render

COMMANDS = ("validate", "query", "matrix", "paths", "blast-radius", "graph", "check", "diff", "verify",
            "compile", "load", "unload", "status", "observe", "endpoint", "agent")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    """Bad input in the chosen format: SARIF and markdown on stdout (the report file code scanning reads,
    the pull-request comment), JSON and YAML diagnostics on stderr, text coloured on a terminal."""
    if fmt == "sarif":
        print(render(exc.diagnostics, "sarif", __version__))
    elif fmt == "markdown":  # the pull-request comment shows the mistake; the details go to stderr too
        print(render(exc.diagnostics, "markdown"))
        print(colourise(render(exc.diagnostics), sys.stderr), file=sys.stderr)
    elif fmt in ("json", "yaml"):
        print(render(exc.diagnostics, fmt), file=sys.stderr)
    else:
        print(colourise(render(exc.diagnostics), sys.stderr), file=sys.stderr)


def usage_error(exc: UsageError, fmt: str) -> None:
    """A command-line mistake: as a diagnostic in a machine-readable format, else argparse's usage
    line of the (sub)command it was given to, then the message."""
    if fmt in ("json", "yaml", "sarif", "markdown"):
        report(PolicycError(Diagnostic.simple(exc.args[0], code="invalid-argument")), fmt)
    else:
        print(exc.parser.format_usage().rstrip(), file=sys.stderr)
        print(colourise(f"{exc.parser.prog}: error: {exc.args[0]}", sys.stderr), file=sys.stderr)


def _to_devnull(*streams) -> None:
    """Point streams whose reader left at /dev/null, so that the interpreter's last flush goes nowhere."""
    for stream in streams:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _complete(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        usage_error(exc, sniff_format(argv))
        return 2
    try:
        status = args.run(args)
        sys.stdout.flush()  # a reader that left must be seen here, not after the status is decided
        return status
    except PolicycError as exc:
        try:
            report(exc, getattr(args, "format", "text"))
        except BrokenPipeError:  # nobody reads the error any more: the status still says there was one
            _to_devnull(sys.stdout, sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left before the answer was written: no status may claim it was given (docs/cli.md).
        _to_devnull(sys.stdout)
        return 128 + signal.SIGPIPE
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("POLICYC_DEBUG") == "1":
            raise
        print(f"policyc: internal error: {type(exc).__name__}: {exc} (set POLICYC_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
