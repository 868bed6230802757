"""The `edgenas` command line.

Each subcommand lives in its own module under `edgenas/cli/` and exposes two functions:

    add_parser(subparsers)  -> registers the subcommand and its arguments
    run(args)               -> does the work by calling the library; returns an exit code

The CLI is thin: all real work is in the library. User errors (`EdgeNASError`) are printed as
one line and exit with status 2; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edgenas import __version__
from edgenas.errors import EdgeNASError

# Subcommand modules, in the order `edgenas --help` lists them.
SUBCOMMANDS = ["demo", "train", "eval", "space", "device", "profile", "predictor", "search", "finetune", "export"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """Bad usage exits 2 with one line (the flag, what it expects, where to read more), not argparse's
    multi-line usage block; subcommand parsers inherit this class."""

    def _get_values(self, action, arg_strings):
        # An empty value is never meant (`--out ""` would otherwise fall back to the default path).
        if action.option_strings and any(isinstance(s, str) and not s.strip() for s in arg_strings):
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, got an empty string")
        return super()._get_values(action, arg_strings)

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgenas",
        description="Hardware-aware once-for-all NAS for edge devices.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgenas {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"edgenas.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"edgenas.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.add_parser(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    # paramiko logs every connection at INFO ("Connected (version 2.0, ...)", "Authentication
    # (publickey) successful!"): only with -v.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Global flags may also come after the subcommand (`edgenas space info x --debug`).
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.run(args) or EXIT_OK)
    except EdgeNASError as exc:
        if debug or args.debug:
            raise
        print(f"edgenas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("edgenas: interrupted", file=sys.stderr)
        return 130


def add_common(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand accepts, so they work after the subcommand name too."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
