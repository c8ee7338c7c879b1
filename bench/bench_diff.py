#!/usr/bin/env python3
"""Benchmark: `twinwall diff` offline on the foundation's large generated ruleset pair (bench/
gen_kube.py: kube-proxy-like, ~120k rules and ~10k chains per family), against
`iptables-restore --test` + `ip6tables-restore --test` of the same files, in the same run.

Target (issue 4): twinwall's wall time <= 2.0x the restore tools' (the sum of their times).
Peak memory is printed, not judged.

    sudo .venv/bin/python bench/bench_diff.py             # generate (cached) + measure
    .venv/bin/python bench/bench_diff.py --data DIR       # reuse DIR/{iptables,ip6tables}.rules
    ... --json                                            # machine-readable result on stdout

The restore tools run only inside a throw-away network namespace (root needed); twinwall runs
offline. Measuring helpers: bench/_measure.py; data and reference: bench/bench_audit.py.
Exit: 0 target met, 1 missed, 2 error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _measure as M  # noqa: E402
import bench_audit as BA  # noqa: E402

TARGET = 2.0


def twinwall_diff_argv(python: str, paths: Dict[str, str]) -> List[str]:
    return [python, "-m", "twinwall", "diff", "--iptables", paths["iptables"], "--ip6tables", paths["ip6tables"],
            "--format", "json"]


def check_diff_output(path: str) -> str:
    """The JSON must parse and hold the contract's lists; returns a one-line summary."""
    doc = M.load_json_output(path, "twinwall diff")
    if not isinstance(doc.get("differences"), list) or not isinstance(doc.get("not_comparable"), list):
        raise M.MeasureError("twinwall diff JSON lacks the 'differences'/'not_comparable' lists")
    by_hook: Dict[str, int] = {}
    for d in doc["differences"]:
        by_hook[d["hook"]] = by_hook.get(d["hook"], 0) + 1
    hooks = ", ".join(f"{h} {n}" for h, n in sorted(by_hook.items())) or "none"
    return f"{len(doc['differences'])} differences ({hooks}), {len(doc['not_comparable'])} not comparable"


def render_text(info, ref: M.Combined, cand: Optional[M.Measurement], verdict, repeat: int, note: str) -> str:
    v4, v6 = info["ipv4"], info["ipv6"]
    lines = [
        f"twinwall diff benchmark ({repeat} runs each: median time, max peak RSS)",
        f"  data: {info['dir']}",
        f"  IPv4: {v4['rules']} rules in {v4['chains']} user chains; IPv6: {v6['rules']} rules in {v6['chains']} user chains",
        "",
    ]
    rows = M.comparison_rows(ref, cand, cand.name if cand else "", verdict)
    lines.append(M.table(rows))
    if cand is not None:
        runs = ", ".join(f"{r.wall_s:.2f}" for r in cand.runs)
        lines.append(f"\n  twinwall diff runs: {runs} s (user+sys of the last: "
                     f"{cand.runs[-1].user_s + cand.runs[-1].sys_s:.2f} s, both families walked in parallel)")
    if note:
        lines.append(f"  twinwall output: {note}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    BA.add_data_arguments(ap)
    BA.add_run_arguments(ap, TARGET, "time ratio target")
    args = ap.parse_args(argv)
    log = M.progress_log(args.quiet)

    try:
        info = BA.ensure_data(args, log)
        paths = info["paths"]
        reference = BA.restore_reference(paths, args.iptables_restore, args.ip6tables_restore)
        candidate = None
        out_json = os.path.join(info["dir"], "twinwall-diff.out")
        if not args.reference_only:
            # exit 0 (no difference) and 1 (differences) are both a successful diff
            candidate = M.Command("twinwall diff", twinwall_diff_argv(args.python, paths), ok_codes=(0, 1),
                                  stdout_path=out_json, env=BA.twinwall_env(), timeout_s=args.timeout)
        ref, cand, ms = BA.run_comparison(candidate, reference, args.repeat, log, args.python)
        note = check_diff_output(out_json) if cand is not None else ""
    except M.MeasureError as exc:
        print(f"bench_diff: error: {exc}", file=sys.stderr)
        return 2

    verdict = M.verdicts(cand, ref, args.target, None) if cand is not None else None
    if args.json:
        doc = {
            "schema": "twinwall-bench/1",
            "benchmark": "diff",
            "repeat": args.repeat,
            "data": {k: info[k] for k in ("dir", "ipv4", "ipv6")},
            "measurements": {name: m.to_dict() for name, m in ms.items()},
            "reference": ref.to_dict(),
            "candidate": None if cand is None else {"name": cand.name, "wall_s": round(cand.wall_s, 4),
                                                     "maxrss_kib": cand.maxrss_kib},
            "verdict": verdict,
            "output_check": note or None,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(render_text(info, ref, cand, verdict, args.repeat, note))
    if verdict is None:
        return 0
    return 0 if verdict["time_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
