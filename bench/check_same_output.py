#!/usr/bin/env python3
"""Check that an optimisation changed no verdict: run `twinwall audit` and `twinwall diff` with two
source trees (``--before SRC``, e.g. an older commit's ``src/`` from ``git archive``; and this
repository's) on the bench pairs (bench/out/shape-*/, made by bench_shapes.py) and on every dump
pair of the corpus (scripts/corpus_run.py's pairing), and compare the JSON documents.

    git archive main src | tar -x -C /tmp/before
    .venv/bin/python bench/check_same_output.py --before /tmp/before/src [--corpus DIR] [--bench-only]

Prints one line per input and command: ``same``, or the first JSON paths that differ (and how
many). ``--ignore-path REGEX`` leaves out paths known to differ on purpose. A twinwall.audit/2
document is compared in the /1 form (its address lists inlined) unless ``--raw-audit``;
``--verbose-audit`` runs the newer audit with --verbose instead. Exit 0 when all are the same, 1
otherwise, 2 on an error (a run that crashed or timed out).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
from typing import Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))

import corpus_run  # noqa: E402


def run(python: str, src: str, argv: List[str], timeout: float) -> Tuple[int, object]:
    env = dict(os.environ, PYTHONPATH=src, TWINWALL_JOBS="1")
    proc = subprocess.run([python, "-m", "twinwall"] + argv, capture_output=True, env=env, timeout=timeout)
    if proc.returncode not in (0, 1):
        return proc.returncode, proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
    return proc.returncode, json.loads(proc.stdout)


def differences(a, b, path: str = "") -> Iterator[str]:
    if type(a) is not type(b):
        yield f"{path or '/'}: {type(a).__name__} vs {type(b).__name__}"
    elif isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                yield f"{path}/{k}: only {'after' if k in b else 'before'}"
            else:
                yield from differences(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        if len(a) != len(b):
            yield f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}/{i}")
    elif a != b:
        yield f"{path}: {str(a)[:80]!r} vs {str(b)[:80]!r}"


def _place(c: dict) -> str:
    """How a twinwall.diff/2 ``*_rule`` names a cited rule (or run, or policy) by place."""
    if "policy" in c:
        return f"{c['table']} {c['chain']} policy {c['policy']}"
    if c["table"] == "(none)":
        return str(c.get("source", ""))
    if "count" in c:
        return f"{c['table']} {c['chain']} #{c['rule_number']}-#{c['last_rule_number']} ({c['count']} rules)"
    return f"{c['table']} {c['chain']} #{c['rule_number']}"


def as_inline_diff(before, after):
    """A twinwall.diff/2 document (``after``) in the form of an older one (``before``, no
    ``schema``): each region's decided_by indexes replaced by the citations they stand for,
    ``schema`` and ``citations`` left out, the ``*_decided_by`` the newer form adds to
    ``*_only`` regions too, citations' sources spelled, and each ``*_rule`` that names several
    rules by place (the texts are in the citations) replaced by the older document's text when it
    names the same rules."""
    if not (isinstance(after, dict) and "citations" in after and isinstance(before, dict) and "schema" not in before):
        return after
    sources = after.get("sources", [])
    table = [{k: sources[v] if k == "source" and isinstance(v, int) else v for k, v in c.items()}
             for c in after["citations"]]
    out = {k: v for k, v in after.items() if k not in ("schema", "citations", "sources")}
    for key, regions in out.items():
        if not isinstance(regions, list):
            continue
        old = before.get(key) if isinstance(before.get(key), list) else []
        new = []
        for i, r in enumerate(regions):
            if not isinstance(r, dict):
                new.append(r)
                continue
            r = {n: [table[j] for j in v] if n.endswith("_decided_by") else v for n, v in r.items()}
            o = old[i] if i < len(old) and isinstance(old[i], dict) else {}
            for n in [n for n in r if n.endswith("_rule")]:
                side = n[: -len("_rule")]
                cited = r.get(f"{side}_decided_by")
                if cited is not None and n in o and r[n] != o[n]:
                    by: dict = {}
                    for c in cited:
                        by.setdefault(c["verdict"], []).append(_place(c))
                    for v, names in by.items():  # (the first ten of a verdict, the others counted)
                        if len(names) > 10:
                            by[v] = names[:10] + [f"... {len(names) - 10} more"]
                    places = "; ".join(f"{v}: " + "; ".join(by[v]) for v in sorted(by)) if len(by) > 1 else \
                        "; ".join(next(iter(by.values()), []))
                    if r[n] == places:
                        r[n] = o[n]
            if key.endswith("_only"):
                for n in [n for n in r if n.endswith("_decided_by") and n not in o]:
                    del r[n]
            new.append(r)
        out[key] = new
    return out


def as_inline_audit(before, after):
    """A twinwall.audit/2 document (``after``) in the form of a twinwall.audit/1 one
    (``before``): each index that stands where the older document has a list replaced by the
    ``address_sets`` entry it names, ``schema`` the older one's, ``address_sets`` left out. Led by
    the older document, not by twinwall's own reader: the proof does not rest on the code it
    checks (the unit tests hold that reader to ``audit --verbose``)."""
    if not (isinstance(after, dict) and after.get("schema") == "twinwall.audit/2"
            and isinstance(before, dict) and before.get("schema") == "twinwall.audit/1"):
        return after
    table = after.get("address_sets") or []

    def inline(old, new):
        if isinstance(new, int) and not isinstance(new, bool) and isinstance(old, list) and 0 <= new < len(table):
            return table[new]
        if isinstance(new, dict) and isinstance(old, dict):
            return {k: inline(old.get(k), v) for k, v in new.items()}
        if isinstance(new, list) and isinstance(old, list) and new and isinstance(new[0], (dict, list)):
            return [inline(old[i] if i < len(old) else None, v) for i, v in enumerate(new)]
        return new

    out = inline(before, {k: v for k, v in after.items() if k != "address_sets"})
    out["schema"] = before["schema"]
    return out


def inputs(args) -> List[Tuple[str, dict]]:
    out = []
    if not args.corpus_only:
        for d in sorted(glob.glob(os.path.join(HERE, "out", "shape-*"))):
            if os.path.isfile(os.path.join(d, "iptables.rules")):
                out.append((os.path.relpath(d, REPO), {"ipv4": os.path.join(d, "iptables.rules"),
                                                        "ipv6": os.path.join(d, "ip6tables.rules"),
                                                        "sockets": os.path.join(d, "sockets.txt")}))
            elif os.path.isfile(os.path.join(d, "nft.json")):
                out.append((os.path.relpath(d, REPO), {"nft": os.path.join(d, "nft.json"),
                                                        "sockets": os.path.join(d, "sockets.txt")}))
    if not args.bench_only and os.path.isdir(args.corpus):
        jobs, _ = corpus_run.plan(args.corpus)
        for j in jobs:
            out.append((j.name, {"ipv4": j.ipv4, "ipv6": j.ipv6}))
    return out


def commands(files: dict, diff_args: Tuple[str, ...] = (), audit_args: Tuple[str, ...] = ()) -> List[Tuple[str, List[str]]]:
    if "nft" in files:
        return [("audit", ["audit", "--nft", files["nft"], "--sockets", files["sockets"], "--format", "json"]
                 + list(audit_args))]
    pair = []
    for fam, opt in (("ipv4", "--iptables"), ("ipv6", "--ip6tables")):
        if files.get(fam):
            pair += [opt, files[fam]]
    audit = ["audit"] + pair + (["--sockets", files["sockets"]] if files.get("sockets") else []) + ["--format", "json"]
    audit += list(audit_args)
    cmds = [("audit", audit)]
    if files.get("ipv4") and files.get("ipv6"):
        cmds.append(("diff", ["diff"] + pair + ["--format", "json"] + list(diff_args)))
    return cmds


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, metavar="SRC", help="the source tree to compare with")
    ap.add_argument("--after", default=os.path.join(REPO, "src"), metavar="SRC", help="default: this repository's src/")
    ap.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "corpus", "net-network"))
    ap.add_argument("--bench-only", action="store_true")
    ap.add_argument("--corpus-only", action="store_true")
    ap.add_argument("--only", help="regex: inputs whose name matches")
    ap.add_argument("--ignore-path", action="append", default=[], help="regex of JSON paths to leave out")
    ap.add_argument("--verbose-diff", action="store_true",
                    help="run the after tree's diff with --verbose (every rule cited, as before the "
                         "compact citations): it must equal the before tree's document")
    ap.add_argument("--raw-diff", action="store_true",
                    help="compare a twinwall.diff/2 document with an older one as it is (by default its "
                         "citations are inlined and its rules-by-place texts checked against the older texts)")
    ap.add_argument("--verbose-audit", action="store_true",
                    help="run the after tree's audit with --verbose (every address list inline, the "
                         "twinwall.audit/1 form): it must equal the before tree's document")
    ap.add_argument("--raw-audit", action="store_true",
                    help="compare a twinwall.audit/2 document with an older one as it is (by default "
                         "its address lists are inlined)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    if not os.path.isdir(args.corpus):
        alt = os.path.join(REPO, "..", "..", "shared", "corpus", "net-network")
        args.corpus = alt if os.path.isdir(alt) else args.corpus
    ignore = [re.compile(p) for p in args.ignore_path]
    changed = errors = 0
    for name, files in inputs(args):
        if args.only and not re.search(args.only, name):
            continue
        extra = ("--verbose",) if args.verbose_diff else ()
        audit_extra = ("--verbose",) if args.verbose_audit else ()
        for (what, cmd), (_, cmd_after) in zip(commands(files), commands(files, extra, audit_extra)):
            try:
                rc_a, a = run(args.python, args.before, cmd, args.timeout)
                rc_b, b = run(args.python, args.after, cmd_after, args.timeout)
            except (subprocess.TimeoutExpired, ValueError) as exc:
                print(f"{name}: {what}: ERROR {exc}", flush=True)
                errors += 1
                continue
            if rc_a not in (0, 1) or rc_b not in (0, 1):
                same = rc_a == rc_b and a == b
                print(f"{name}: {what}: exit {rc_a} vs {rc_b} {'(same error)' if same else f'{a} vs {b}'}", flush=True)
                changed += not same
                continue
            if what == "diff" and not args.raw_diff:
                b = as_inline_diff(a, b)
            if what == "audit" and not args.raw_audit:
                b = as_inline_audit(a, b)
            diffs = [d for d in differences(a, b) if not any(p.search(d) for p in ignore)]
            if rc_a != rc_b:
                diffs.insert(0, f"exit code {rc_a} vs {rc_b}")
            if diffs:
                changed += 1
                print(f"{name}: {what}: {len(diffs)} differences: " + "; ".join(diffs[:4]), flush=True)
            else:
                print(f"{name}: {what}: same", flush=True)
    print(f"\n{changed} changed, {errors} errors")
    return 2 if errors else (1 if changed else 0)


if __name__ == "__main__":
    sys.exit(main())
