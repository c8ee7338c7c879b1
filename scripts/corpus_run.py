#!/usr/bin/env python3
"""Run `twinwall audit` over every real-world iptables-save / ip6tables-save dump of a corpus and
report, per file, whether it was audited, refused with a clean error, or crashed.

    .venv/bin/python scripts/corpus_run.py [CORPUS_DIR] [--json] [--timeout S] [--strict]

CORPUS_DIR defaults to ../shared/corpus/net-network next to the repository. Each dump is audited
offline (`twinwall audit --iptables F [--ip6tables G] --format json`, no sockets: the audit then
reports host-level findings). An ip6tables dump whose name matches an iptables dump in the same
folder with "ip6tables" in place of "iptables" (the chair's dual-stack dumps, paired by
timestamp) is audited together with it in one run. Files that are not iptables-save output
(ferm configs, nft rulesets, shell scripts, ...) are recognised by content - an iptables-save
dump has `*table` and `COMMIT` lines - and skipped with a note.

Outcomes per run:
  ok       exit 0 or 1 and the output is JSON with "services" and "findings"
  error    exit 2 with a one-line `twinwall: ...` message (a refused input, reported separately)
  crash    a Python traceback on stderr, a signal, any other exit code, or exit 0/1 without
           valid JSON
  timeout  killed after --timeout seconds

Exit status: 1 if any run crashed or timed out (with --strict also if any was refused with an
error), else 0; 2 if the corpus directory does not exist. Corpus files are only read, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORPUS = os.path.join(os.path.dirname(REPO), "shared", "corpus", "net-network")

TABLE_RE = re.compile(r"^\*(filter|nat|mangle|raw|security)\s*$", re.M)
COMMIT_RE = re.compile(r"^COMMIT\s*$", re.M)
# an IPv6 address after -s/-d, or ICMPv6: only ip6tables-save prints these
V6_HINT_RE = re.compile(
    r"\s(-s|-d|--src|--dst|--source|--destination)\s+(!\s+)?[0-9a-fA-F]*:[0-9a-fA-F:.]*(/\d+)?(\s|$)"
    r"|\s-p\s+(ipv6-icmp|icmpv6|58)\s|\s-m\s+icmp6\s|--icmpv6-type",
    re.M,
)


@dataclass
class Dump:
    path: str
    family: str  # "ipv4" | "ipv6"


@dataclass
class Job:
    name: str  # shown in the report, relative to the corpus
    ipv4: Optional[str] = None
    ipv6: Optional[str] = None


@dataclass
class Result:
    job: Job
    outcome: str  # ok | error | crash | timeout
    seconds: float
    returncode: Optional[int]
    message: str = ""
    findings: Optional[int] = None
    services: Optional[int] = None
    detail: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return {
            "name": self.job.name, "iptables": self.job.ipv4, "ip6tables": self.job.ipv6,
            "outcome": self.outcome, "seconds": round(self.seconds, 3), "returncode": self.returncode,
            "message": self.message, "findings": self.findings, "services": self.services,
        }


def classify(path: str) -> Tuple[Optional[str], str]:
    """(family or None, why). None means: not an iptables-save dump, skip it."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        return None, f"unreadable: {exc}"
    if b"\0" in raw[:4096]:
        return None, "binary file"
    text = raw.decode("utf-8", "replace")
    if not TABLE_RE.search(text) or not COMMIT_RE.search(text):
        return None, "not iptables-save format (no '*table' and 'COMMIT' lines)"
    base = os.path.basename(path).lower()
    if "ip6tables" in base or "ip6tables-save" in text[:500] or V6_HINT_RE.search(text):
        return "ipv6", "ip6tables-save"
    return "ipv4", "iptables-save"


def plan(corpus: str) -> Tuple[List[Job], List[Tuple[str, str]]]:
    """Jobs to run and (file, reason) pairs skipped."""
    dumps: List[Dump] = []
    skipped: List[Tuple[str, str]] = []
    for root, dirs, files in os.walk(corpus):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(root, f)
            rel = os.path.relpath(path, corpus)
            if f in ("LICENSE",) or f.lower().endswith((".md", ".rst")):
                continue
            family, why = classify(path)
            if family is None:
                skipped.append((rel, why))
            else:
                dumps.append(Dump(path, family))
    by_path = {d.path: d for d in dumps}
    paired: Dict[str, str] = {}  # v6 path -> v4 path
    for d in dumps:
        if d.family != "ipv6":
            continue
        folder, base = os.path.split(d.path)
        if "ip6tables" in base:
            twin = os.path.join(folder, base.replace("ip6tables", "iptables"))
            if twin in by_path and by_path[twin].family == "ipv4":
                paired[d.path] = twin
    twins_v4 = set(paired.values())
    jobs: List[Job] = []
    for d in dumps:
        rel = os.path.relpath(d.path, corpus)
        if d.family == "ipv4":
            if d.path in twins_v4:
                continue  # audited with its ip6tables twin
            jobs.append(Job(rel, ipv4=d.path))
        elif d.path in paired:
            v4 = paired[d.path]
            jobs.append(Job(f"{os.path.relpath(v4, corpus)} + {os.path.basename(d.path)}", ipv4=v4, ipv6=d.path))
        else:
            jobs.append(Job(rel, ipv6=d.path))
    jobs.sort(key=lambda j: j.name)
    return jobs, skipped


def twinwall_env() -> Dict[str, str]:
    env = dict(os.environ)
    src = os.path.join(REPO, "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_job(job: Job, python: str, timeout: float) -> Result:
    argv = [python, "-m", "twinwall", "audit"]
    if job.ipv4:
        argv += ["--iptables", job.ipv4]
    if job.ipv6:
        argv += ["--ip6tables", job.ipv6]
    argv += ["--format", "json"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=twinwall_env())
    except subprocess.TimeoutExpired:
        return Result(job, "timeout", time.perf_counter() - start, None, f"killed after {timeout:g} s")
    secs = time.perf_counter() - start
    err = proc.stderr.strip()
    err_lines = err.splitlines()
    rc = proc.returncode
    if "Traceback (most recent call last)" in err:
        last = err_lines[-1] if err_lines else ""
        return Result(job, "crash", secs, rc, f"traceback: {last}", detail=err_lines[-25:])
    if rc == 2:
        msg = err_lines[-1] if err_lines else "(no message)"
        if len(err_lines) != 1 or not err_lines[0].startswith("twinwall: "):
            return Result(job, "crash", secs, rc, f"exit 2 without a one-line 'twinwall:' message: {msg}",
                          detail=err_lines[-25:])
        return Result(job, "error", secs, rc, msg)
    if rc not in (0, 1):
        what = f"signal {-rc}" if rc < 0 else f"exit {rc}"
        return Result(job, "crash", secs, rc, f"{what}: {err_lines[-1] if err_lines else ''}", detail=err_lines[-25:])
    try:
        doc = json.loads(proc.stdout)
    except ValueError as exc:
        return Result(job, "crash", secs, rc, f"exit {rc} but the output is not JSON: {exc}")
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), list) or not isinstance(doc.get("findings"), list):
        return Result(job, "crash", secs, rc, f"exit {rc} but the JSON lacks the 'services'/'findings' lists")
    return Result(job, "ok", secs, rc, findings=len(doc["findings"]), services=len(doc["services"]))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS, help=f"corpus directory (default {DEFAULT_CORPUS})")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs twinwall (default: this one)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run before it counts as a timeout (default 120)")
    ap.add_argument("--strict", action="store_true", help="also fail when a dump is refused with a clean error")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the traceback tail of each crash")
    args = ap.parse_args(argv)

    if not os.path.isdir(args.corpus):
        print(f"corpus_run: no such directory: {args.corpus}", file=sys.stderr)
        return 2
    jobs, skipped = plan(args.corpus)
    results: List[Result] = []
    for job in jobs:
        r = run_job(job, args.python, args.timeout)
        results.append(r)
        if not args.json:
            extra = ""
            if r.outcome == "ok":
                extra = f"{r.findings} findings" + (f", {r.services} services" if r.services else "") + f" (exit {r.returncode})"
            else:
                extra = r.message
            print(f"{r.outcome:<8}{r.seconds:7.2f}s  {job.name}  {extra}", flush=True)
            if r.outcome == "crash" and args.verbose:
                for line in r.detail:
                    print(f"            | {line}")
    counts = {k: sum(1 for r in results if r.outcome == k) for k in ("ok", "error", "crash", "timeout")}
    total_time = sum(r.seconds for r in results)
    slowest = max(results, key=lambda r: r.seconds) if results else None
    if args.json:
        print(json.dumps({
            "corpus": os.path.abspath(args.corpus),
            "results": [r.to_dict() for r in results],
            "skipped": [{"file": f, "reason": why} for f, why in skipped],
            "summary": dict(counts, skipped=len(skipped), runs=len(results), seconds=round(total_time, 2)),
        }, indent=2))
    else:
        for f, why in skipped:
            print(f"{'skip':<8}{'':>8}  {f}  {why}")
        print()
        print(f"{len(results)} runs ({sum(1 for j in jobs if j.ipv4 and j.ipv6)} dual-stack pairs): "
              f"{counts['ok']} ok, {counts['error']} error, {counts['crash']} crash, {counts['timeout']} timeout; "
              f"{len(skipped)} files skipped; {total_time:.1f} s in all"
              + (f", slowest {slowest.seconds:.2f} s ({slowest.job.name})" if slowest else ""))
        bad = [r for r in results if r.outcome in ("crash", "timeout")]
        if bad and not args.verbose:
            print("re-run with -v to see the traceback tails of the crashes")
    failed = counts["crash"] + counts["timeout"] + (counts["error"] if args.strict else 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
