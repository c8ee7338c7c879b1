#!/usr/bin/env python3
"""Benchmark: `twinwall audit` offline on a large kube-proxy-like ruleset pair, against
`iptables-restore --test` + `ip6tables-restore --test` of the same files, in the same run.

Target (issue 2): twinwall's wall time and peak memory each <= 1.0x the restore tools'
(reference time = sum of the two tools' times; reference memory = the larger of their peaks).

    sudo .venv/bin/python bench/bench_audit.py            # generate (cached) + measure
    .venv/bin/python bench/bench_audit.py --data DIR      # reuse DIR/{iptables,ip6tables}.rules, sockets.txt
    ... --json                                            # machine-readable result on stdout

Exit: 0 all targets met, 1 a target missed, 2 error (a tool failed, no root, ...).
The restore tools run inside a throw-away network namespace (root needed); twinwall runs
offline and needs nothing. Other benchmarks (diff, nft) reuse add_data_arguments(),
ensure_data(), restore_reference() and run_comparison() from here.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _measure as M  # noqa: E402
import gen_kube  # noqa: E402

DATA_FILES = ("iptables.rules", "ip6tables.rules", "sockets.txt")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def add_data_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("data")
    g.add_argument("--data", metavar="DIR", help="use the existing iptables.rules, ip6tables.rules, sockets.txt in DIR")
    g.add_argument("--out", metavar="DIR", help="where to generate (default bench/out/kube-s<seed>-c<chains>-r<rules>-k<sockets>; reused when present)")
    g.add_argument("--regen", action="store_true", help="generate again even if the files exist")
    g.add_argument("--chains", type=int, default=10000, help="user chains per family (default 10000)")
    g.add_argument("--rules", type=int, default=120000, help="rules per family (default 120000)")
    g.add_argument("--sockets", type=int, default=2000, help="listening sockets (default 2000)")
    g.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")


def add_run_arguments(ap: argparse.ArgumentParser, target: float, target_help: str) -> None:
    """The options of a run against iptables-restore / ip6tables-restore (audit and diff)."""
    ap.add_argument("--repeat", type=int, default=3, help="runs per command (default 3)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs twinwall (default: this one)")
    ap.add_argument("--iptables-restore", default="iptables-restore", help="IPv4 reference tool")
    ap.add_argument("--ip6tables-restore", default="ip6tables-restore", help="IPv6 reference tool")
    ap.add_argument("--reference-only", action="store_true", help="measure only the restore tools")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before one twinwall run is killed (default 300)")
    ap.add_argument("--target", type=float, default=target, help=f"{target_help} (default {target})")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def ensure_data(args, log) -> Dict[str, object]:
    """Paths of the three data files plus their sizes: from --data, or generated (cached)."""
    if args.data:
        d = args.data
        missing = [f for f in DATA_FILES if not os.path.isfile(os.path.join(d, f))]
        if missing:
            raise M.MeasureError(f"--data {d}: missing {', '.join(missing)}")
    else:
        d = args.out or os.path.join(HERE, "out", f"kube-s{args.seed}-c{args.chains}-r{args.rules}-k{args.sockets}")
        if args.regen or not all(os.path.isfile(os.path.join(d, f)) for f in DATA_FILES):
            log(f"generating {d} ...")
            gen_kube.generate(d, args.chains, args.rules, args.sockets, args.seed)
        else:
            log(f"reusing {d}")
    paths = {name.split(".")[0]: os.path.join(d, name) for name in DATA_FILES}
    info: Dict[str, object] = {"dir": d, "paths": paths}
    for fam, key in (("ipv4", "iptables"), ("ipv6", "ip6tables")):
        with open(paths[key], encoding="utf-8", errors="replace") as fh:
            rules, chains = gen_kube.count_ruleset(fh.read())
        info[fam] = {"rules": rules, "chains": chains, "bytes": os.path.getsize(paths[key])}
    with open(paths["sockets"], encoding="utf-8", errors="replace") as fh:
        lines = [ln for ln in fh if ln.strip()]
    info["sockets"] = sum(1 for ln in lines if not ln.startswith("Netid"))
    return info


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def restore_reference(paths: Dict[str, str], ipt: str = "iptables-restore", ip6t: str = "ip6tables-restore") -> List[M.Command]:
    """The reference: both restore tools in --test mode (parse and build, never commit), each in
    the throw-away namespace."""
    for tool in (ipt, ip6t):
        if shutil.which(tool) is None:
            raise M.MeasureError(f"{tool} is not installed (apt-get install iptables)")
    return [
        M.Command("iptables-restore --test", [ipt, "--test", paths["iptables"]], netns=True),
        M.Command("ip6tables-restore --test", [ip6t, "--test", paths["ip6tables"]], netns=True),
    ]


def twinwall_env(src: Optional[str] = None) -> Dict[str, str]:
    """Measure the working tree (or ``src``): put it first on PYTHONPATH."""
    src = src or os.path.join(REPO, "src")
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": src + (os.pathsep + old if old else "")}


def twinwall_audit_argv(python: str, paths: Dict[str, str]) -> List[str]:
    return [python, "-m", "twinwall", "audit", "--iptables", paths["iptables"], "--ip6tables", paths["ip6tables"],
            "--sockets", paths["sockets"], "--format", "json"]


def custom_argv(template: str, paths: Dict[str, str]) -> List[str]:
    """--twinwall-cmd: a command line with {iptables} {ip6tables} {sockets} placeholders."""
    return [part.format(**paths) for part in shlex.split(template)]


def run_comparison(candidate: Optional[M.Command], reference: List[M.Command], repeat: int, log,
                   python: Optional[str] = None):
    """Measure candidate and reference commands round-robin. Returns (reference Combined,
    candidate Measurement or None, all measurements). ``python``: the interpreter that runs
    twinwall as the candidate, to byte-compile the sources with first (None: another command)."""
    cmds = list(reference) + ([candidate] if candidate else [])
    if candidate and python:
        M.byte_compile(python, os.path.join(REPO, "src", "twinwall"))
    ms = M.measure(cmds, repeat=repeat, progress=log)
    ref = M.Combined("reference", [ms[c.name] for c in reference])
    cand = ms[candidate.name] if candidate else None
    return ref, cand, ms


def check_audit_output(path: str, expected_sockets: int) -> str:
    """A sanity look at twinwall's JSON: it must parse and list services; returns a summary."""
    doc = M.load_json_output(path, "twinwall audit")
    services = doc.get("services")
    if not isinstance(services, list):
        raise M.MeasureError("twinwall audit JSON has no 'services' list")
    findings = doc.get("findings", [])
    return f"{len(services)} services (of {expected_sockets} sockets), {len(findings) if isinstance(findings, list) else '?'} findings"


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def render_text(info, ref: M.Combined, cand: Optional[M.Measurement], cand_label: str, verdict, repeat: int, note: str) -> str:
    v4, v6 = info["ipv4"], info["ipv6"]
    lines = [
        f"twinwall audit benchmark ({repeat} runs each: median time, max peak RSS)",
        f"  data: {info['dir']}",
        f"  IPv4: {v4['rules']} rules in {v4['chains']} user chains; IPv6: {v6['rules']} rules in "
        f"{v6['chains']} user chains; {info['sockets']} sockets",
        "",
    ]
    rows = M.comparison_rows(ref, cand, cand_label, verdict)
    lines.append(M.table(rows))
    if note:
        lines += ["", f"  twinwall output: {note}"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(ap)
    add_run_arguments(ap, 1.0, "ratio target for time and memory")
    ap.add_argument("--twinwall-cmd", metavar="CMD",
                    help="measure this command instead of twinwall audit ({iptables} {ip6tables} {sockets} are replaced)")
    args = ap.parse_args(argv)
    log = M.progress_log(args.quiet)

    out_json = None
    try:
        info = ensure_data(args, log)
        paths = info["paths"]
        reference = restore_reference(paths, args.iptables_restore, args.ip6tables_restore)
        candidate = None
        out_json = os.path.join(info["dir"], "twinwall-audit.out")
        if not args.reference_only:
            if args.twinwall_cmd:
                cargv = custom_argv(args.twinwall_cmd, paths)
                label = "candidate (--twinwall-cmd)"
            else:
                cargv = twinwall_audit_argv(args.python, paths)
                label = "twinwall audit"
            # exit 0 (nothing found) and 1 (findings) are both a successful audit
            candidate = M.Command(label, cargv, ok_codes=(0, 1), stdout_path=out_json, env=twinwall_env(),
                                  timeout_s=args.timeout)
        ref, cand, ms = run_comparison(candidate, reference, args.repeat, log,
                                       None if args.twinwall_cmd else args.python)
        note = ""
        if cand is not None and not args.twinwall_cmd:
            note = check_audit_output(out_json, info["sockets"])
    except M.MeasureError as exc:
        print(f"bench_audit: error: {exc}", file=sys.stderr)
        return 2

    verdict = M.verdicts(cand, ref, args.target, args.target) if cand is not None else None
    if args.json:
        doc = {
            "schema": "twinwall-bench/1",
            "benchmark": "audit",
            "repeat": args.repeat,
            "data": {k: info[k] for k in ("dir", "ipv4", "ipv6", "sockets")},
            "measurements": {name: m.to_dict() for name, m in ms.items()},
            "reference": ref.to_dict(),
            "candidate": None if cand is None else {"name": cand.name, "wall_s": round(cand.wall_s, 4), "maxrss_kib": cand.maxrss_kib},
            "verdict": verdict,
            "output_check": note or None,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(render_text(info, ref, cand, cand.name if cand else "", verdict, args.repeat, note))
    if verdict is None:
        return 0
    return 0 if verdict["time_pass"] and verdict["memory_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
