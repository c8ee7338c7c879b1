#!/usr/bin/env python3
"""Random-ruleset differential against the kernel: twinwall's verdicts vs real probes.

    sudo .venv/bin/python scripts/differential.py --seeds 500 [--start 0] [--show-ruleset SEED]

Builds one namespace host (tests/netns/diffhost.py), then for each seed loads a random ruleset
(tests/netns/rulegen.py) with iptables-restore / ip6tables-restore / nft -f, probes every
listening socket from two clients (several source addresses and ports) and compares every probe
and every (socket, family) status with twinwall's answer. Prints each disagreement with its
seed, probe, both answers and the ruleset, then the agreement figure. Exit 1 on any
disagreement, 2 when it cannot run (not root, no namespaces).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "netns"))
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Forms excluded while known defects are fixed: see rulegen.Options; "
                                       "--all generates them too.")
    p.add_argument("--seeds", type=int, default=50, help="how many consecutive seeds (default 50)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--all", action="store_true", help="generate every form, the excluded ones too")
    p.add_argument("--show-ruleset", type=int, metavar="SEED", help="print one seed's ruleset and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="only the disagreements and the figure")
    args = p.parse_args(argv)

    import harness
    import rulegen

    opts = rulegen.Options(**{k: True for k in rulegen.Options.__dataclass_fields__}) if args.all else None
    if args.show_ruleset is not None:
        import diffhost

        print(rulegen.generate(args.show_ruleset, diffhost.plan(), opts).text())
        return 0
    reason = harness.netns_unavailable_reason()
    if reason:
        print(f"differential: {reason}", file=sys.stderr)
        return 2
    import diffhost

    seeds = range(args.start, args.start + args.seeds)
    bad_seeds, probes, verdicts, skipped, disagreements = [], 0, 0, 0, 0
    t0 = time.monotonic()
    with diffhost.DiffHost() as host:
        for seed in seeds:
            res = host.run_seed(seed, opts)
            probes += res.probes
            verdicts += res.verdicts
            skipped += len(res.skipped)
            if not res.agrees:
                bad_seeds.append(seed)
                disagreements += len(res.disagreements)
                print(res.report(), flush=True)
            elif not args.quiet:
                print(f"seed {seed}: agree ({res.ruleset.kind}, {res.probes} probes, {res.verdicts} statuses)",
                      flush=True)
    took = time.monotonic() - t0
    n = len(seeds)
    print(f"agreement: {n - len(bad_seeds)}/{n} seeds ({100.0 * (n - len(bad_seeds)) / max(n, 1):.1f}%), "
          f"{probes} probes, {verdicts} (socket, family) statuses, {disagreements} disagreements, "
          f"{skipped} uncertain answers not compared; seeds {args.start}-{args.start + n - 1}, {took:.0f} s")
    if bad_seeds:
        print("disagreeing seeds: " + " ".join(map(str, bad_seeds)))
    return 1 if bad_seeds else 0


if __name__ == "__main__":
    sys.exit(main())
