"""The walk of one question through the chains, as text an admin can follow."""

from __future__ import annotations

from functools import lru_cache
from typing import List, Optional

from twinwall.analysis.context import build_contexts
from twinwall.analysis.evaluator import V_ACCEPT
from twinwall.analysis.packetset import (
    CT_NEW,
    IIF,
    SRC,
    iv_and,
    iv_normalize,
    make_box,
    iv_sub,
    prefix_interval,
    remote_sources,
    to_cidrs,
)
from twinwall.errors import InputError
from twinwall.loader import load_rulesets, unread_table_note, unread_tables
from twinwall.model import FAMILY_LABEL, PROTO_NUM, HostSnapshot



@lru_cache(maxsize=256)
def _sources_text(src, family: str) -> str:
    # (remembered: a walk names the same sets line after line, and a set cut by a 100k-entry
    # blocklist takes a second to write as CIDRs)
    remote = remote_sources(family)
    if src == remote:
        return "any remote source"
    cidrs = to_cidrs(src, family)
    others = to_cidrs(iv_sub(remote, src), family)
    if len(others) < len(cidrs):
        return "any remote source except " + ", ".join(others[:4]) + (f" (+{len(others) - 4} more)" if len(others) > 4 else "")
    return ", ".join(cidrs[:4]) + (f" (+{len(cidrs) - 4} more)" if len(cidrs) > 4 else "")


def explain_port(
    snapshot: HostSnapshot,
    family: str,
    proto: str,
    port: int,
    source: Optional[str] = None,
    iface: Optional[str] = None,
    dest: Optional[str] = None,
) -> str:
    rulesets = load_rulesets(snapshot)
    # the interface asked about must have its own class in the universe
    ctx = build_contexts(snapshot, rulesets, [iface] if iface else ())[family]
    out: List[str] = []
    label = FAMILY_LABEL[family]
    if family == "ipv6" and snapshot.ipv6.enabled is False:
        return f"{label}: disabled on this host ({'; '.join(snapshot.ipv6.evidence)})\n"
    if not ctx.rules_known:
        return f"{label}: no ruleset was read\n"
    try:
        src = iv_and(remote_sources(family), (prefix_interval(source, family),)) if source else remote_sources(family)
        dst = (prefix_interval(dest, family),) if dest else ctx.remote_targets
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if not src:
        raise InputError(f"{source} is not a remote source (loopback, multicast or unspecified)")
    ifaces = ctx.universe.mask(iface) if iface else ctx.remote_ifaces
    num = PROTO_NUM[proto]
    box = make_box(src, dst, ifaces, ctx.universe.all_mask, proto=((num, num),), dport=((port, port),), state=CT_NEW)
    out.append(f"{label}: new {proto} connection to port {port} from {_sources_text(src, family)}"
               f"{' on ' + iface if iface else ''}")
    for rs in ctx.rulesets:
        out.append(f"  ruleset: {rs.source}")
    for _, table in unread_tables(family, ctx.rulesets):
        out.append(f"  NOTE: {unread_table_note(family, table)}")

    def trace(kind, depth, item, flows):
        pad = "    " + "  " * depth
        srcs = _sources_text(_union_src(flows), family)
        if kind == "match":
            out.append(f"{pad}{item.table} {item.chain} #{item.number}: {item.text}")
            extra = f"  [may match: {', '.join(item.unknown)}]" if item.unknown else ""
            out.append(f"{pad}    matches {srcs}{extra}")
        else:
            out.append(f"{pad}{item.table} {item.chain}: end of chain, policy {item.policy} ({srcs})")

    outcomes = ctx.evaluator(trace=trace).local_input([box])
    out.append("  verdict:")
    for o in outcomes:
        verdict = o.verdict.upper()
        srcs = _sources_text(o.box[SRC], family)
        ifl = ctx.universe.label_list(o.box[IIF])
        via = "" if o.box[IIF] == ifaces else f" via {','.join(ifl)}"
        out.append(f"    {verdict:7} {srcs}{via}")
        for d in o.decided_by:
            out.append(f"             by {d.describe()}")
        for u in o.uncertain:
            out.append(f"             ? assumes may match: {u}")
    if not any(o.verdict == V_ACCEPT for o in outcomes):
        out.append(f"  => {proto}/{port} is filtered over {label}")
    return "\n".join(out) + "\n"


def _union_src(flows):
    return iv_normalize(p for f in flows for p in f.box[SRC])
