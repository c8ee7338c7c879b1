#!/usr/bin/env python3
"""Run `twinwall diff` on a real dual-stack pair and check that every reported region is
explainable from the two rule lists.

Default input: the chair's 2016-03-16 dumps in ../shared/corpus (a router with ~5,000 rules per
family). For every region reported as a difference or as not comparable:

1. every rule it names is a line of that family's dump (or the chain's policy, as printed), and
   the verdict it is named for is that rule's target (ACCEPT/DROP/REJECT, or the policy);
2. concrete packets drawn from the region (addresses from its roles, ports/uid/interfaces/state
   from its ranges) are walked through the *evaluator* one by one, per family: each verdict
   must be one the region reports for that family, and one of the rules the evaluator cites
   for it must be among the rules the region names for that verdict;
3. the two families' verdicts for the region really differ (differences) or are both mixed
   (not comparable).

    .venv/bin/python scripts/check_diff_corpus.py [--iptables A --ip6tables B] [--samples 4]

Exit 0 when every region checks out, 1 otherwise, 2 when the dumps are missing.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from typing import Dict, List, Set

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "src"))

from twinwall.analysis.context import build_contexts  # noqa: E402
from twinwall.analysis.diff.compare import HOOK_PATHS, Region, diff_contexts, example_packet  # noqa: E402
from twinwall.analysis.diff.describe import describe_region  # noqa: E402
from twinwall.loader import load_rulesets  # noqa: E402
from twinwall.model import HostSnapshot, RulesetText  # noqa: E402

CORPUS = os.path.join(
    REPO, "..", "shared", "corpus", "net-network", "configs_chair_for_Network_Architectures_and_Services"
)
DEFAULT_V4 = os.path.join(CORPUS, "iptables-save-2016-03-16_13-53-28")
DEFAULT_V6 = os.path.join(CORPUS, "ip6tables-save-2016-03-16_13-53-28")

TARGET_VERDICT = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject"}


def rule_lines(text: str) -> Set[str]:
    return {line.strip() for line in text.splitlines() if line.startswith("-A ")}


def policies(text: str) -> Dict[tuple, str]:
    out = {}
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and table:
            parts = line[1:].split()
            if len(parts) > 1 and parts[1] != "-":
                out[(table, parts[0])] = parts[1]
    return out


def target_of(rule: str) -> str:
    m = re.search(r"\s-j\s+(\S+)", rule)
    return m.group(1) if m else ""


def check_names(side: Dict, lines: Set[str], pols: Dict[tuple, str], family: str, problems: List[str], where: str) -> None:
    for verdict, decisions in side.items():
        for d in decisions:
            if d.policy is not None:
                if pols.get((d.table, d.chain), "ACCEPT") != d.policy:
                    problems.append(f"{where}: {family} names policy {d.policy} of {d.table} {d.chain}, the dump says otherwise")
                if TARGET_VERDICT.get(d.policy) != verdict:
                    problems.append(f"{where}: {family} cites policy {d.policy} for verdict {verdict}")
                continue
            if d.rule not in lines:
                problems.append(f"{where}: {family} names a rule that is not in the dump: {d.rule}")
            t = target_of(d.rule)
            if TARGET_VERDICT.get(t) != verdict:
                problems.append(f"{where}: {family} cites a -j {t} rule for verdict {verdict}: {d.rule}")


def check_packets(ctx, r: Region, side: Dict, rnd: random.Random, samples: int, problems: List[str], where: str) -> int:
    ev = ctx.evaluator()
    walked = 0
    for _ in range(samples):
        packet = example_packet(ctx, r.box, rnd)
        if packet is None:
            continue
        walked += 1
        for o in ev.hook_path(HOOK_PATHS[r.hook], [packet]):
            if o.verdict not in side:
                problems.append(f"{where}: {ctx.family} packet gets {o.verdict}, region says {sorted(side)}")
                continue
            named = side[o.verdict]
            cited = set(o.decided_by)
            if named and not (cited & set(named)):
                problems.append(
                    f"{where}: {ctx.family} {o.verdict} decided by {[d.describe() for d in o.decided_by][-2:]}, "
                    f"not by the rules the region names"
                )
    return walked


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iptables", default=DEFAULT_V4)
    ap.add_argument("--ip6tables", default=DEFAULT_V6)
    ap.add_argument("--samples", type=int, default=4, help="concrete packets per region and family (default 4)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    for path in (args.iptables, args.ip6tables):
        if not os.path.isfile(path):
            print(f"check_diff_corpus: {path} not found (is ../shared/corpus there?)", file=sys.stderr)
            return 2
    texts = {}
    for fam, path in (("ipv4", args.iptables), ("ipv6", args.ip6tables)):
        with open(path, encoding="utf-8", errors="replace") as fh:
            texts[fam] = fh.read()
    snap = HostSnapshot(sockets_known=False)
    snap.rulesets = [RulesetText(f, "iptables-save", "unknown", os.path.basename(p), texts[f])
                     for f, p in (("ipv4", args.iptables), ("ipv6", args.ip6tables))]
    t0 = time.perf_counter()
    contexts = build_contexts(snap, load_rulesets(snap))
    result = diff_contexts(contexts)
    elapsed = time.perf_counter() - t0
    print(f"diff completed in {elapsed:.2f} s: {len(result.differences)} differences, "
          f"{len(result.not_comparable)} not comparable")
    lines = {f: rule_lines(t) for f, t in texts.items()}
    pols = {f: policies(t) for f, t in texts.items()}
    rnd = random.Random(args.seed)
    problems: List[str] = []
    walked = 0
    regions = [(r, "difference") for r in result.differences] + [(r, "not comparable") for r in result.not_comparable]
    for r, kind in regions:
        where = f"{kind} {r.hook} {describe_region(r.box, r.hook, result)}"
        va, vb = set(r.a), set(r.b)
        if kind == "difference" and (va == vb and len(va) == 1 or len(va) > 1 and len(vb) > 1):
            problems.append(f"{where}: reported as a difference but IPv4 {sorted(va)} / IPv6 {sorted(vb)}")
        if kind == "not comparable" and not (len(va) > 1 and len(vb) > 1):
            problems.append(f"{where}: reported as not comparable but IPv4 {sorted(va)} / IPv6 {sorted(vb)}")
        for fam, side in (("ipv4", r.a), ("ipv6", r.b)):
            check_names(side, lines[fam], pols[fam], fam, problems, where)
            walked += check_packets(contexts[fam], r, side, rnd, args.samples, problems, where)
    print(f"checked {len(regions)} regions with {walked} concrete packets through the evaluator")
    by_hook: Dict[str, int] = {}
    for r, _ in regions:
        by_hook[r.hook] = by_hook.get(r.hook, 0) + 1
    print("regions per hook: " + ", ".join(f"{h} {n}" for h, n in sorted(by_hook.items())))
    if problems:
        print(f"{len(problems)} problem(s):")
        for p in problems[:50]:
            print("  " + p)
        return 1
    print("every region is explained by the rules it names, and the evaluator agrees packet by packet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
