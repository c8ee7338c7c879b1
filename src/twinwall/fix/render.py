"""A plan as a table for people, a shell script to review and run, or ``twinwall.fix/1`` JSON."""

from __future__ import annotations

from typing import List

from twinwall.apply.candidate import restore_tool
from twinwall.fix.planner import Plan


def render_table(plan: Plan) -> str:
    out: List[str] = []
    host = plan.snapshot.hostname or "(offline input)"
    out.append(f"twinwall fix: {host}  ({len(plan.changes)} changes, {len(plan.refused)} refused)")
    if not plan.changes and not plan.refused:
        out.append("nothing to fix")
    for n, c in enumerate(plan.changes, 1):
        svc = f"  {', '.join(c.services)}" if c.services else ""
        out.append("")
        out.append(f"{n}. {c.strategy} for {c.finding} ({c.family} {c.chain}, owner {c.owner}){svc}")
        if c.full_note():
            out.append(f"   {c.full_note()}")
        for e in c.decided_by[:6]:
            out.append(f"   - {e}")
        for cmd in c.commands:
            out.append(f"   $ {cmd}")
    if plan.proof is not None:
        p = plan.proof
        out.append("")
        out.append("Proof (the candidate audited by twinwall before anything changes):")
        out.append("  findings gone: " + (", ".join(p.gone) or "none"))
        out.append("  opened: " + ("nothing" if not p.opened else f"{len(p.opened)} (see --format json)"))
        changed = [s for s in p.services if s["before"] != s["after"]]
        if changed:
            out.append(f"  {'SERVICE':<34} {'FAMILY':<6} {'BEFORE':<22} AFTER")
            for s in changed:
                out.append(f"  {s['service']:<34} {s['family']:<6} {s['before']:<22} {s['after']}")
        else:
            out.append("  every service keeps its status")
    if plan.refused:
        out.append("")
        out.append("Refused:")
        for r in plan.refused:
            what = f" {', '.join(r.services)}" if r.services else ""
            where = " ".join(x for x in (r.family, r.hook) if x) or "-"
            out.append(f"  {r.finding} ({where}){what}: {r.reason}")
    if plan.changes:
        out.append("")
        out.append("Nothing was changed. Apply with: twinwall fix --apply (same options), or review --format script")
    return "\n".join(out) + "\n"


def _heredoc(cmd: str, text: str, tag: str) -> List[str]:
    return [f"{cmd} <<'{tag}'", text.rstrip("\n"), tag]


def render_script(plan: Plan) -> str:
    lines = ["#!/bin/sh",
             "# twinwall fix plan" + (f" for {plan.snapshot.hostname}" if plan.snapshot.hostname else ""),
             "# Review before running. 'twinwall fix --apply' makes the same change with a lockout",
             "# guard and an automatic rollback unless confirmed.",
             "set -eu"]
    for c in plan.changes:
        lines.append(f"# {c.strategy} for {c.finding} ({c.family}){': ' + ', '.join(c.services) if c.services else ''}")
        for e in c.decided_by[:4]:
            lines.append(f"#   {e}")
    cand = plan.candidate
    if cand is None:
        lines.append("echo 'twinwall: nothing to fix'")
        return "\n".join(lines) + "\n"
    if cand.backend == "iptables":
        for family in ("ipv4", "ipv6"):
            text = getattr(cand, family)
            if text is None:
                continue
            tool = restore_tool(family, cand.variant)
            tag = "TWINWALL_" + family.upper()
            lines += _heredoc(f"{tool} --test", text, tag)
        for family in ("ipv4", "ipv6"):
            text = getattr(cand, family)
            if text is not None:
                lines += _heredoc(restore_tool(family, cand.variant), text, "TWINWALL_" + family.upper())
    elif cand.backend == "nft":
        lines += _heredoc("nft -c -f -", cand.nft or "", "TWINWALL_NFT")
        lines += _heredoc("nft -f -", cand.nft or "", "TWINWALL_NFT")
    else:
        import shlex

        lines += [" ".join(shlex.quote(a) for a in cmd) for cmd in cand.commands]
    return "\n".join(lines) + "\n"
