"""argparse as docs/cli.md wants it: an option given twice never keeps only its last value, an unknown
option is named (with a did-you-mean) by the command it was given to, and every parse error reaches
main() as an exception, to be reported in the output format the command line asked for."""
from __future__ import annotations

import argparse
import difflib
import re

FORMAT_OPTIONS = ("-o", "--format", "--output")  # kubectl, cilium and hubble spell it -o/--output


class UsageError(Exception):
    """A command-line mistake found by the parser: main() reports it in the chosen format, exit 2."""

    def __init__(self, message: str, parser: argparse.ArgumentParser):
        super().__init__(message)
        self.parser = parser


class StoreOnce(argparse.Action):
    """A single-valued option: given twice is an error, never the last value alone (docs/cli.md)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_once", set())
        if self.dest in given:
            parser.error(f"{'/'.join(self.option_strings)} given twice: it takes one value (options that add up, "
                         "such as --from, say so in --help)")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


_NUMBER = re.compile(r"^-\d")


class Parser(argparse.ArgumentParser):
    """argparse with the conventions of docs/cli.md: single-valued options refuse repeats, an unknown
    option is named with a did-you-mean by the subcommand it was given to, and errors raise UsageError
    so that main() can report them in the chosen output format."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, StoreOnce)
        self.register("action", "store", StoreOnce)

    def error(self, message: str):
        raise UsageError(message, self)

    def parse_known_args(self, args=None, namespace=None):
        if not self._subparsers and args is not None:
            self._unknown_options(list(args))
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and not self._subparsers:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _unknown_options(self, args: list[str]) -> None:
        """Name an unknown option before argparse complains about a missing required one instead."""
        known = [o for o in self._option_string_actions if o.startswith("--")]
        for arg in args:
            if arg == "--":
                return
            name = arg.split("=", 1)[0]
            if not arg.startswith("-") or arg == "-" or _NUMBER.match(arg) or name in self._option_string_actions:
                continue
            if name.startswith("--") and any(o.startswith(name) for o in known):
                continue  # an abbreviation argparse accepts
            if not name.startswith("--") and name[:2] in self._option_string_actions:
                continue  # -ojson
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            self.error(f"unrecognized option {name}" + (f"; did you mean {close[0]}?" if close else ""))


def sniff_format(argv: list[str]) -> str:
    """The output format asked for on a command line that did not parse (text if none or unknown)."""
    for i, arg in enumerate(argv):
        for option in FORMAT_OPTIONS:
            if arg == option and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(option + "=") or (option == "-o" and arg.startswith("-o") and len(arg) > 2
                                                 and not arg.startswith("--")):
                return arg.split("=", 1)[1] if "=" in arg else arg[2:]
    return "text"
