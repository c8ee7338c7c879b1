#!/usr/bin/env python3
"""Count the CPU instructions one twinwall command runs, with two source trees side by side: a
measure of a small change that this machine's run-to-run noise (10-30% in wall time) hides.

    git archive main src | tar -x -C /tmp/before
    .venv/bin/python bench/count_instructions.py --before /tmp/before/src -- \\
        audit --iptables bench/out/shape-kube-r10000-k2000-s1/iptables.rules ... --format json

Each tree's command runs once under valgrind's callgrind (about 50 times slower than natively),
the two at the same time, in one process (TWINWALL_JOBS=1: a forked child would not be counted)
and with a fixed hash seed (PYTHONHASHSEED=0: the same sets and dicts, the same count from run
to run). Prints both counts and their difference. The count is of instructions, not time: a
cache miss or a page fault costs no more than an add here. A development tool (the benchmarks
never run it); it needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
_COLLECTED = re.compile(r"Collected : (\d+)")
_VALGRIND_LINE = re.compile(r"==\d+==")  # (valgrind's own lines on standard error)


def start(python: str, src: str, argv: List[str], out: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=src, TWINWALL_JOBS="1", PYTHONHASHSEED="0")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python, "-m", "twinwall"] + argv
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def collected(proc: subprocess.Popen, what: str) -> int:
    _, err = proc.communicate()
    found = _COLLECTED.search(err)
    if found is None:
        raise SystemExit(f"count_instructions: no count for {what} (valgrind said: {err.strip()[-300:]})")
    if proc.returncode not in (0, 1):  # (1: the audit's or the diff's findings)
        said = "\n".join(line for line in err.splitlines() if not _VALGRIND_LINE.match(line)).strip()
        raise SystemExit(f"count_instructions: twinwall failed with {what} (exit {proc.returncode}): {said[-300:]}")
    return int(found.group(1))


def count(python: str, trees: List[Tuple[str, str]], argv: List[str]) -> List[int]:
    with tempfile.TemporaryDirectory(prefix="twinwall-callgrind-") as tmp:
        procs = [(name, start(python, src, argv, os.path.join(tmp, f"out.{i}"))) for i, (name, src) in enumerate(trees)]
        return [collected(proc, name) for name, proc in procs]


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Everything after -- is the twinwall command line, e.g. "
                                            "-- diff --iptables A --ip6tables B --format json")
    parser.add_argument("--before", required=True, metavar="SRC", help="the other tree's src/ directory")
    parser.add_argument("--after", default=os.path.join(REPO, "src"), metavar="SRC",
                        help="this tree's src/ (default: this repository's)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run (default: this one)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the twinwall command line, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the twinwall command to count after --")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    for src in (args.before, args.after):
        if not os.path.isdir(os.path.join(src, "twinwall")):
            parser.error(f"{src}: no twinwall package in it (give a src/ directory)")
    before, after = count(args.python, [("--before", args.before), ("--after", args.after)], command)
    print(f"before {before / 1e9:.4f} G instructions ({args.before})")
    print(f"after  {after / 1e9:.4f} G instructions ({args.after})")
    print(f"change {100 * (after - before) / before:+.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
