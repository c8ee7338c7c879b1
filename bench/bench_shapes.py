#!/usr/bin/env python3
"""Benchmark: twinwall audit and diff on every ruleset shape of issue 12, at any size, against
the kernel tools reading the same files, in the same run (paired, round-robin, medians).

    sudo .venv/bin/python bench/bench_shapes.py                          # every shape, default sizes
    sudo .venv/bin/python bench/bench_shapes.py --shapes blocklist --sizes 10000,100000
    sudo .venv/bin/python bench/bench_shapes.py --before /tmp/old/src     # also an older tree, same run
    ... --json

Shapes (bench/gen_shapes.py): kube (dispatch -d ADDR -p tcp --dport P), kube-port (dispatch by
port only), blocklist (N x -s ADDR/32 -j DROP then a few accepts, 10 sockets), blocklist-sockets
(the same with --many-sockets listening sockets), chains (many small chains), nft-rules (one
inet table, N separate rules), nft-sets (the same addresses as two named sets), corpus (the
chair's real router pair from ../shared/corpus, size ignored), bench (bench_audit.py's and
bench_diff.py's default pair, 10,000 chains, 2,000 sockets; size ignored).

Reference: iptables-restore --test + ip6tables-restore --test of the same two files (sum of the
times, larger of the peaks), or for the nft shapes `nft -j list ruleset` of the ruleset loaded
with `nft -f`, always in a throw-away network namespace. twinwall runs offline: `audit
--iptables --ip6tables --sockets` (nft: `audit --nft nft.json --sockets`) and `diff --iptables
--ip6tables`. Per command: median wall time and maximum peak RSS of its own process
(bench/_measure.py). Targets: audit <= 1.0x time and memory (nft: <= 0.5x time), diff <= 2.0x
time and <= 1.0x memory. Exit 0 all met, 1 a target missed, 2 an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _measure as M  # noqa: E402
import bench_audit as BA  # noqa: E402
import gen_kube  # noqa: E402
import gen_shapes  # noqa: E402

SHAPES = ("kube", "kube-port", "blocklist", "blocklist-sockets", "chains", "nft-rules", "nft-sets", "corpus", "bench")
DEFAULT_SIZES = {"kube": [10000, 30000], "kube-port": [10000, 30000], "blocklist": [10000, 30000],
                 "blocklist-sockets": [10000], "chains": [10000, 30000], "nft-rules": [20000, 60000],
                 "nft-sets": [20000, 200000], "corpus": [0], "bench": [120000]}
# the shared corpus sits next to the main checkout (../shared), a worktree one level further down
CORPUS = next((p for p in (os.path.join(REPO, up, "shared", "corpus", "net-network",
                                        "configs_chair_for_Network_Architectures_and_Services")
                           for up in ("..", os.path.join("..", ".."))) if os.path.isdir(p)), "")
CORPUS_PAIR = ("iptables-save-2016-03-16_13-53-28", "ip6tables-save-2016-03-16_13-53-28")
TARGETS = {"audit": (1.0, 1.0), "audit-nft": (0.5, 1.0), "diff": (2.0, 1.0)}


def data_dir(shape: str, size: int, args) -> str:
    """Generate (cached) one shape at one size; returns its directory."""
    if shape == "corpus":
        if not CORPUS:
            raise M.MeasureError("the corpus (../shared/corpus/net-network) is not there")
        d = os.path.join(HERE, "out", "shape-corpus")
        os.makedirs(d, exist_ok=True)
        for src, name in zip(CORPUS_PAIR, ("iptables.rules", "ip6tables.rules")):
            copy = os.path.join(d, name)
            if not os.path.exists(copy):
                # the dumps' MACs are anonymised to XX:XX:..., which the restore tools refuse:
                # the copy measured (by both sides) has a documentation MAC (RFC 7042) there
                with open(os.path.join(CORPUS, src), encoding="utf-8", errors="replace") as fh:
                    text = fh.read().replace("XX:XX:XX:XX:XX:XX", "00:00:5e:10:00:00")
                with open(copy, "w", encoding="utf-8") as fh:
                    fh.write(text)
        socks = os.path.join(d, "sockets.txt")
        if not os.path.exists(socks):
            with open(socks, "w", encoding="ascii") as fh:
                fh.write(gen_shapes.sockets_text(gen_shapes.host_sockets(10, args.seed)))
        return d
    if shape == "bench":  # bench_audit.py's and bench_diff.py's default pair (10,000 chains)
        d = os.path.join(HERE, "out", f"kube-s{args.seed}-c10000-r{size}-k2000")
        if args.regen or not os.path.isfile(os.path.join(d, "sockets.txt")):
            gen_kube.generate(d, 10000, size, 2000, args.seed)
        return d
    gen = "blocklist" if shape == "blocklist-sockets" else shape
    sockets = args.many_sockets if shape == "blocklist-sockets" else (2000 if shape.startswith("kube") else 10)
    d = os.path.join(HERE, "out", f"shape-{shape}-r{size}-k{sockets}-s{args.seed}")
    marker = os.path.join(d, "sockets.txt")
    if args.regen or not os.path.isfile(marker):
        gen_shapes.generate(gen, d, size, sockets, args.seed)
    return d


def twinwall(python: str, src: str, label: str, argv: List[str], out: str, timeout: float) -> M.Command:
    return M.Command(label, [python, "-m", "twinwall"] + argv, ok_codes=(0, 1), stdout_path=out,
                     env=BA.twinwall_env(src), timeout_s=timeout)


def trees(args) -> List[tuple]:
    out = [("", os.path.abspath(args.src))]
    if args.before:
        out.append(("before ", os.path.abspath(args.before)))
    return out


def measure_shape(shape: str, size: int, args, log) -> Dict[str, object]:
    d = data_dir(shape, size, args)
    nft = shape.startswith("nft")
    cands: List[tuple] = []  # (what, tree label, Command)
    for tag, src in trees(args):
        suffix = "-before" if tag else ""
        socks = os.path.join(d, "sockets.txt")
        if nft:
            argv = ["audit", "--nft", os.path.join(d, "nft.json"), "--sockets", socks, "--format", "json"]
            cands.append(("audit-nft", tag, twinwall(args.python, src, f"{tag}twinwall audit --nft", argv,
                                                    os.path.join(d, f"audit{suffix}.json"), args.timeout)))
            continue
        pair = ["--iptables", os.path.join(d, "iptables.rules"), "--ip6tables", os.path.join(d, "ip6tables.rules")]
        if "audit" in args.what:
            cands.append(("audit", tag, twinwall(args.python, src, f"{tag}twinwall audit",
                                                 ["audit"] + pair + ["--sockets", socks, "--format", "json"],
                                                 os.path.join(d, f"audit{suffix}.json"), args.timeout)))
        if "diff" in args.what:
            cands.append(("diff", tag, twinwall(args.python, src, f"{tag}twinwall diff",
                                                ["diff"] + pair + ["--format", "json"],
                                                os.path.join(d, f"diff{suffix}.json"), args.timeout)))
    for _, src in trees(args):
        M.byte_compile(args.python, os.path.join(src, "twinwall"))
    with M.NetNamespace() as ns:
        if nft:
            res = subprocess.run(ns.wrap(["nft", "-f", os.path.join(d, "ruleset.nft")]), capture_output=True, text=True)
            if res.returncode != 0:
                raise M.MeasureError(f"nft -f {d}/ruleset.nft failed: {res.stderr.strip()[-2000:]}")
            refs = [M.Command("nft -j list ruleset", ["nft", "-j", "list", "ruleset"], netns=True,
                              stdout_path=os.path.join(d, "nft.json"), timeout_s=args.timeout)]
            M.run_once(refs[0], ns)  # nft.json must exist before twinwall's first run
        else:
            refs = BA.restore_reference({"iptables": os.path.join(d, "iptables.rules"),
                                         "ip6tables": os.path.join(d, "ip6tables.rules")})
        ms = M.measure(refs + [c for _, _, c in cands], repeat=args.repeat, progress=log, ns=ns)
    ref = M.Combined("reference", [ms[c.name] for c in refs])
    rules = {}
    if not nft:
        for fam, name in (("ipv4", "iptables.rules"), ("ipv6", "ip6tables.rules")):
            with open(os.path.join(d, name), encoding="utf-8", errors="replace") as fh:
                rules[fam] = sum(1 for ln in fh if ln.startswith("-A "))
    row: Dict[str, object] = {"shape": shape, "size": size, "dir": d, "rules": rules,
                              "reference": {"wall_s": round(ref.wall_s, 4), "maxrss_kib": ref.maxrss_kib,
                                            "tools": [c.name for c in refs]},
                              "candidates": []}
    for what, tag, c in cands:
        m = ms[c.name]
        tt, mt = TARGETS[what]
        v = M.verdicts(m, ref, tt, mt)
        row["candidates"].append({"what": what, "tree": tag.strip() or "current", "wall_s": round(m.wall_s, 4),
                                  "maxrss_kib": m.maxrss_kib, **v})
    return row


def render(rows: List[Dict[str, object]], repeat: int) -> str:
    table = [["shape", "size", "reference", "command", "time", "peak RSS", "time x", "mem x", "verdict"]]
    for r in rows:
        ref = r["reference"]
        for i, c in enumerate(r["candidates"]):
            ok = c["time_pass"] and c["memory_pass"]
            table.append([
                r["shape"] if i == 0 else "", str(r["size"]) if i == 0 else "",
                f"{ref['wall_s']:.3f} s {M.fmt_kib(ref['maxrss_kib'])}" if i == 0 else "",
                ("before " if c["tree"] != "current" else "") + c["what"],
                f"{c['wall_s']:.3f} s", M.fmt_kib(c["maxrss_kib"]), f"{c['time_ratio']:.2f}x",
                f"{c['memory_ratio']:.2f}x", "PASS" if ok else "FAIL",
            ])
    head = (f"twinwall on every shape ({repeat} paired runs each: median time, max peak RSS; reference: "
            "iptables-restore --test + ip6tables-restore --test, or nft -j list ruleset; size: rules per family, nft: in all)")
    return head + "\n\n" + M.table(table)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated (default: all)")
    ap.add_argument("--sizes", help="comma-separated rule counts for every shape (default: per shape)")
    ap.add_argument("--what", default="audit,diff", help="audit, diff or both (default)")
    ap.add_argument("--many-sockets", type=int, default=2004, help="sockets of blocklist-sockets (default 2004)")
    ap.add_argument("--src", default=os.path.join(REPO, "src"), metavar="SRC",
                    help="the twinwall source tree measured (default: this repository's src/)")
    ap.add_argument("--before", metavar="SRC", help="also measure this twinwall source tree (e.g. an older commit's src/)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per command (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--regen", action="store_true", help="generate the data again")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs twinwall")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before one run is killed (default 600)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    log = M.progress_log(args.quiet)
    shapes = [s for s in args.shapes.split(",") if s]
    bad = [s for s in shapes if s not in SHAPES]
    if bad:
        ap.error(f"unknown shape {', '.join(bad)} (choose from {', '.join(SHAPES)})")
    rows = []
    try:
        for shape in shapes:
            sizes = ([int(x) for x in args.sizes.split(",")] if args.sizes and shape not in ("corpus", "bench")
                     else DEFAULT_SIZES[shape])
            for size in sizes:
                log(f"== {shape} {size}")
                rows.append(measure_shape(shape, size, args, log))
                if not args.json:
                    print(render(rows[-1:], args.repeat).split("\n\n", 1)[1].split("\n", 1)[1], flush=True)
    except M.MeasureError as exc:
        print(f"bench_shapes: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"schema": "twinwall-bench/1", "benchmark": "shapes", "repeat": args.repeat, "rows": rows}, indent=1))
    else:
        print()
        print(render(rows, args.repeat))
    ok = all(c["time_pass"] and c["memory_pass"] for r in rows for c in r["candidates"] if c["tree"] == "current")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
