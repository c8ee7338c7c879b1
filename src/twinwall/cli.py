"""Command line: `twinwall <command>`. Each command lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them together and turns
user-facing errors into one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from twinwall import __version__
from twinwall.errors import TwinwallError
from twinwall.gc_pause import gc_paused

# (command, module, one-line help). Only the chosen command's module is imported, so `twinwall
# scan` does not pay for the evaluator and `twinwall audit` does not pay for the scanner.
COMMANDS = [
    ("collect", "twinwall.commands.collect", "gather host facts into a snapshot JSON file"),
    ("audit", "twinwall.commands.audit", "which listening services a new connection can reach, per family"),
    ("explain", "twinwall.commands.explain", "show the walk through the chains for one port"),
    ("scan", "twinwall.scan.cli", "probe hosts over IPv4 and IPv6 and compare with the audit"),
    ("diff", "twinwall.commands.diff", "every traffic class IPv4 and IPv6 treat differently, in and out"),
    ("fleet", "twinwall.commands.fleet", "audit many hosts' snapshots at once: findings per host, IPv6-only exposure"),
    ("fix", "twinwall.commands.fix", "a proved remediation plan for the findings (--apply to load it safely)"),
    ("report", "twinwall.commands.report", "render a saved JSON document as sarif, junit, prometheus or html"),
    ("confirm", "twinwall.commands.confirm", "keep the pending firewall transaction: stop its rollback, persist it"),
    ("rollback", "twinwall.commands.rollback", "revert the pending firewall transaction now"),
    ("transaction", "twinwall.commands.transaction", "show the pending or last firewall transaction"),
    ("policy", "twinwall.commands.policy", "one policy file for both families: compile, prove, adopt, apply"),
]

class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's raw-description formatter, as wide as argparse makes it, without importing
    shutil to learn the width: argparse builds a formatter for every option a parser declares,
    not only for --help, and shutil brings bz2, lzma and zlib with it (2.5 ms and 0.8 MiB of
    every run)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None) -> None:
        if width is None:
            width = terminal_columns() - 2  # (as argparse subtracts)
        super().__init__(prog, indent_increment, max_help_position, width)


def terminal_columns() -> int:
    """The columns ``shutil.get_terminal_size()`` reports: $COLUMNS, else standard output's
    terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):  # (no fileno, closed, not a terminal)
            columns = 0
    return columns or 80


EPILOG = """\
exit codes: 0 nothing to report, 1 findings/differences, 2 error.
Run 'twinwall COMMAND --help' for the options of a command."""


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinwall",
        description="Keep a Linux host's IPv4 and IPv6 firewalls twins: for every listening "
        "service, can a new connection from elsewhere reach it over IPv4? over IPv6?",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"twinwall {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        if selected is not None and name != selected:
            # once the command is known (it comes first), the others' parsers would only be
            # built to be thrown away: a dozen parsers cost a run as much as its own options
            continue
        if name != selected:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=getattr(module, "DESCRIPTION", help_text),
            epilog=getattr(module, "EPILOG", None),
            formatter_class=HelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _command_in(argv: List[str]) -> Optional[str]:
    names = {c[0] for c in COMMANDS}
    for arg in argv:
        if arg in names:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def main(argv: Optional[List[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    # building the parser imports the command's module and what it needs: thousands of
    # functions and classes and no garbage, which the cyclic collector would scan again and again
    with gc_paused():
        parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except TwinwallError as exc:
        print(f"twinwall: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("twinwall: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    """The console script: run, flush, and leave without tearing the heap down.

    A large audit leaves millions of small objects behind; freeing them one by one at
    interpreter exit costs a tenth of a second or more and serves nobody, since the output is
    written and no file is left open for writing."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
