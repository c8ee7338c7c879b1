#!/usr/bin/env python3
"""Run `twinwall policy adopt` on every iptables-save / ip6tables-save dump of a corpus, then
`twinwall policy check` on what it wrote, and report per dump:

    .venv/bin/python scripts/policy_corpus.py [CORPUS_DIR] [--timeout S]

adopt: equivalent (exit 0), not-equivalent (exit 1: the file lists the differences and the
rules a policy cannot say), error (exit 2, one line), crash (a traceback), timeout.
check: clean (0), warnings (1: rules in one family only), wrong (2: a compiled rule decides
differently from the file: a compiler defect), crash, timeout.
Dumps are recognised by content (`*table` and `COMMIT` lines); files are only read. Exit 1
when any run crashed or a check found a wrong verdict, else 0.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORPUS = os.path.join(os.path.dirname(REPO), "shared", "corpus", "net-network")


def dumps(root: str):
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text = fh.read(2_000_000)
            except OSError:
                continue
            if re.search(r"^\*\w+", text, re.M) and re.search(r"^COMMIT", text, re.M):
                yield path, "--ip6tables" if "ip6tables" in name else "--iptables"


def run(argv, timeout):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    start = time.monotonic()
    try:
        res = subprocess.run([sys.executable, "-m", "twinwall", *argv], capture_output=True, text=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout", "", timeout
    took = time.monotonic() - start
    if "Traceback" in res.stderr:
        return "crash", res.stderr.strip().splitlines()[-1], took
    return res.returncode, res.stderr.strip().splitlines()[0] if res.stderr.strip() else "", took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    if not os.path.isdir(args.corpus):
        print(f"no corpus at {args.corpus}", file=sys.stderr)
        return 2
    bad = 0
    adopt_names = {0: "equivalent", 1: "not-equivalent", 2: "error"}
    check_names = {0: "clean", 1: "warnings", 2: "wrong"}
    with tempfile.TemporaryDirectory() as tmp:
        for path, option in dumps(args.corpus):
            out = os.path.join(tmp, "adopted.toml")
            with open(path, encoding="utf-8", errors="replace") as fh:
                rules = sum(1 for line in fh if line.startswith("-A "))
            rc, msg, adopt_s = run(["policy", "adopt", option, path, "-o", out], args.timeout)
            adopt = adopt_names.get(rc, str(rc))
            check, check_s = "-", 0.0
            if rc in (0, 1):
                crc, cmsg, check_s = run(["policy", "check", "--no-scratch", out], args.timeout)
                check = check_names.get(crc, str(crc))
                if crc in ("crash", 2):
                    bad += 1
                    msg = cmsg
            elif rc == "crash":
                bad += 1
            print(f"{os.path.relpath(path, args.corpus)}: {rules} rules, adopt {adopt} {adopt_s:.1f} s, "
                  f"check {check} {check_s:.1f} s" + (f" ({msg})" if msg and adopt == "error" else ""), flush=True)
            os.remove(out) if os.path.exists(out) else None
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
