"""The rules a host has -> a policy file whose compiled rules decide every new connection in
filter INPUT, FORWARD and OUTPUT the same way, per family, proved with the evaluator.

Rules are read from the parsed model (``twinwall.netfilter.ruleset``), not from their text, so iptables
and nftables rulesets are adopted alike: each base chain is flattened in evaluation order (user
chains inlined under the conditions of the jump; a RETURN's packets leave the rest of the chain
out), and every packet box that decides something becomes a ``[[rule]]``. Chains that a
front-end owns (ufw, firewalld, Docker, kube-proxy...) are named in comments, not copied: the
front-end writes them again. What no policy rule can say (rate limits, marks, ipsets, GID
matches...) is listed in the file, never left out in silence; the proof then lists the packets
it changes.

A hook with several base chains (nft tables at other priorities; iptables mangle and security
beside filter) passes a packet only if each accepts it: their flattened lists are stacked into
one first-match list (``stack_chains``). Chains that may drop before conntrack runs (raw, nft
priority below -200) or that reroute (mangle OUTPUT) cannot be said in a policy: listed, not
adopted.

The proof compares, per family and hook, the original ruleset's filter base chains with the
adopted file compiled for iptables and parsed back: the evaluator walks every NEW packet
through the original; each region must get the same verdict from the compiled rules.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

from twinwall.analysis.evaluator import CONNTRACK_PRIORITY, Evaluator, bind_rulesets
from twinwall.netfilter.interfaces import OTHER, InterfaceUniverse
from twinwall.netfilter.packetset import (
    CT_ESTABLISHED,
    CT_INVALID,
    CT_NEW,
    DPORT,
    DST,
    GID,
    HOPLIMIT,
    HOPLIMIT_ALL,
    ICMP,
    ICMP_ALL,
    ID_ALL,
    IIF,
    OIF,
    PORT_ALL,
    PROTO,
    PROTO_ALL,
    SPORT,
    SRC,
    STATE,
    UID,
    Box,
    address_space,
    box_and,
    box_sub,
    iv_sub,
    loopback_addresses,
    merge_boxes,
    to_cidrs,
)
from twinwall.errors import InputError
from twinwall.policy.meaning import whole_box
from twinwall.policy.model import FAMILIES, FAMILY_LABEL, HOOKS, IPV4, IPV6, OTHER_PROTOCOLS
from twinwall.netfilter.ruleset import ACCEPT, CONTINUE, DROP, GOTO, JUMP, REJECT, RETURN, BaseChain, Rule, Ruleset
from twinwall.twins import ICMP4_TYPE, ICMP6_TYPE

ACTION: Dict[str, str] = {ACCEPT: "accept", DROP: "drop", REJECT: "reject"}
DIRECTION = {"input": "in", "forward": "forward", "output": "out"}
PROTO_NAMES = {6: "tcp", 17: "udp", **{v: k for k, v in OTHER_PROTOCOLS.items()}}
PORT_PROTOS = (6, 17, 132, 33, 136)
ICMP4_NAME = {v: k for k, v in ICMP4_TYPE.items()}
ICMP6_NAME = {v: k for k, v in ICMP6_TYPE.items()}
INLINE_ADDRESSES = 4  # longer address lists become a [groups] entry
MAX_DEPTH = 64


@dataclass
class Entry:
    """One packet box of one family that a rule decides, in evaluation order."""

    box: Box
    action: str
    rule: Rule


@dataclass
class Adopted:
    """One [[rule]] of the output, before the families are merged."""

    fields: Dict[str, object]  # everything but addresses
    addresses: Dict[str, List[str]]  # from / to / not_from / not_to -> CIDRs of its family
    origin: List[str]  # the original rules it comes from

    def key(self) -> tuple:
        shape = tuple(sorted(self.addresses))
        return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in self.fields.items())) + (shape,)


@dataclass
class AdoptResult:
    text: str
    equivalent: bool
    differences: List[str] = field(default_factory=list)
    unexpressible: List[str] = field(default_factory=list)
    referenced: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    rules: int = 0

    def summary(self) -> List[str]:
        out = [f"adopted {self.rules} rules; "
               + ("proved equivalent for new connections in filter INPUT, FORWARD and OUTPUT, per family"
                  if self.equivalent else f"NOT equivalent: {len(self.differences)} differences (listed in the file)")]
        if self.referenced:
            out.append(f"{len(self.referenced)} front-end chains referenced, not copied")
        if self.unexpressible:
            out.append(f"{len(self.unexpressible)} rules cannot be written in a policy (listed in the file)")
        return out


# ---------------------------------------------------------------------------------------------
# flattening


def chain_owner(chain: str) -> Optional[str]:
    """The front-end that writes a filter chain of this name: its rules are referenced, never
    copied into a policy (the front-end writes them again)."""
    from twinwall.analysis.frontends import writer_of_chain

    return writer_of_chain(chain)


def filter_view(rs: Ruleset) -> Ruleset:
    """The ruleset with only the base chains that filter INPUT, FORWARD and OUTPUT once
    conntrack has run: every nft filter chain on those hooks, iptables' filter, mangle (INPUT,
    FORWARD) and security tables. (Chains before conntrack, raw's, and mangle OUTPUT, which
    reroutes, are what ``unadoptable_stages`` refuses.)"""
    return replace(rs, base_chains=[b for b in rs.base_chains if _adoptable(b)])


def _adoptable(b: BaseChain) -> bool:
    return b.kind == "filter" and b.hook in HOOKS and b.priority >= CONNTRACK_PRIORITY


def unadoptable_stages(rs: Ruleset, hook: str) -> List[str]:
    """The base chains on ``hook`` that may drop a packet but that a policy cannot say: they run
    before conntrack (raw; nft priority below -200) or reroute (mangle OUTPUT)."""
    out = []
    for b in rs.base_chains:
        if b.hook != hook or _adoptable(b) or b.kind == "nat":
            continue
        chain = rs.chain(b.table, b.chain)
        deciding = _dropping_rules(rs, b.table, b.chain)
        if deciding or (chain is not None and (chain.policy or "ACCEPT") != "ACCEPT"):
            what = "; ".join(f"#{r.number}: {r.text}" for r in deciding[:3]) or f"policy {chain.policy if chain else '?'}"
            out.append(f"{FAMILY_LABEL[rs.family]} {b.table} {b.chain} (hook {hook}, priority {b.priority}) "
                       f"may drop packets ({what}) "
                       + ("before conntrack: a policy cannot say this" if b.priority < CONNTRACK_PRIORITY
                          else "as a rerouting chain: a policy cannot say this"))
    return out


def _dropping_rules(rs: Ruleset, table: str, name: str) -> List[Rule]:
    """The DROP and REJECT rules of a chain and of the chains it jumps to (MARK-only chains,
    as shorewall's mangle OUTPUT jumps to, drop nothing)."""
    out: List[Rule] = []
    seen = set()
    todo = [name]
    while todo:
        cname = todo.pop()
        chain = rs.chain(table, cname)
        if cname in seen or chain is None:
            continue
        seen.add(cname)
        for r in chain.rules:
            if r.action in (DROP, REJECT):
                out.append(r)
            elif r.action in (JUMP, GOTO):
                todo.append(r.target)
    return out


# a stack of base chains whose first-match product grows past this many entries is refused
MAX_STACKED_ENTRIES = 20000


def stack_chains(chains: List[Tuple[List["Entry"], str, Rule]]) -> Tuple[List["Entry"], str]:
    """Several base chains on one hook, in priority order, as one first-match list and default:
    a packet passes only if every chain accepts it (an accept ends one chain, and the next
    decides). Each chain is (entries, policy, a stand-in rule citing its policy).

    Why exact: a packet whose first entry in the first chain drops is dropped; one that chain
    accepts (by an entry or its accept policy) meets the next chain's entries, which for an
    entry's packets are listed right after it, intersected with it, and end with the next
    chain's policy for the rest of them."""
    entries, policy, _ = chains[0]
    for nxt, nxt_policy, nxt_end in chains[1:]:
        out: List[Entry] = []
        for e in entries:
            if e.action != "accept":
                out.append(e)
                continue
            whole = tuple(enumerate(e.box))
            for f in nxt:
                m = box_and(f.box, whole)
                if m is not None:
                    out.append(Entry(m, f.action, f.rule))
            out.append(Entry(e.box, nxt_policy, nxt_end))
            if len(out) > MAX_STACKED_ENTRIES:
                raise _Unsayable(f"the base chains' combinations exceed {MAX_STACKED_ENTRIES} rules")
        if policy == "accept":
            out.extend(nxt)
            policy = nxt_policy
        entries = out
    return entries, policy


class Flattener:
    def __init__(self, family: str):
        self.family = family
        self.unexpressible: List[str] = []
        self.referenced: List[str] = []
        self.logged: List[Rule] = []
        self.established = False
        self.invalid_dropped = False

    def chain(self, rs: Ruleset, table: str, name: str, within: List[Box], depth: int = 0) -> Tuple[List[Entry], List[Box]]:
        """(entries, the boxes that come back from the chain)."""
        chain = rs.chain(table, name)
        if chain is None or depth > MAX_DEPTH:
            raise InputError(f"{rs.source}: jump to missing chain {table} {name}")
        entries: List[Entry] = []
        returned: List[Box] = []
        current = within
        for rule in chain.rules:
            if not current:
                break
            self._states(rule)
            matched = [m for w in current for alt in rule.alternatives for m in [box_and(w, alt)] if m is not None]
            if not matched:
                continue
            if rule.action == CONTINUE:
                if rule.rule_logs():
                    self.logged.append(rule)
                continue  # logs, counts, marks: decides nothing
            if rule.unknown:
                self.unexpressible.append(f"{FAMILY_LABEL[self.family]} {table} {rule.chain} #{rule.number}: "
                                          f"{rule.text} ({', '.join(rule.unknown)}: a policy cannot say this)")
                continue
            if rule.action in ACTION:
                entries.extend(Entry(m, ACTION[rule.action], rule) for m in matched)
            elif rule.action in (JUMP, GOTO):
                owner = chain_owner(rule.target)
                if owner:
                    self.referenced.append(f"{FAMILY_LABEL[self.family]} {table} {rule.chain} #{rule.number}: "
                                           f"{rule.text} -> chain {rule.target} belongs to {owner}: not copied, "
                                           f"{owner} writes it")
                    continue
                sub, back = self.chain(rs, table, rule.target, merge_boxes(matched), depth + 1)
                entries.extend(sub)
                if rule.action == GOTO:
                    current = self._minus(current, rule)
                    returned.extend(back)
                    continue
                # what came back goes on below the jump: the rest of this chain sees it again,
                # which first match already gives (the jump decided nothing for it)
            elif rule.action == RETURN:
                returned.extend(matched)
                current = self._minus(current, rule)
            else:
                self.unexpressible.append(f"{FAMILY_LABEL[self.family]} {table} {rule.chain} #{rule.number}: "
                                          f"{rule.text} (target {rule.target or rule.action})")
        returned.extend(current)
        return entries, returned

    @staticmethod
    def _minus(boxes: List[Box], rule: Rule) -> List[Box]:
        out = boxes
        for alt in rule.alternatives:
            out = [piece for b in out for piece in (box_sub(b, alt) if box_and(b, alt) is not None else [b])]
        return merge_boxes(out) if len(out) > 1 else out

    def _states(self, rule: Rule) -> None:
        """Note the established/invalid rules new connections never meet (they become the
        [defaults] established / drop_invalid switches)."""
        for alt in rule.alternatives:
            st = dict(alt).get(STATE)
            if st is None or st & CT_NEW:
                continue
            if rule.action == ACCEPT and st & CT_ESTABLISHED:
                self.established = True
            if rule.action == DROP and st & CT_INVALID:
                self.invalid_dropped = True


# ---------------------------------------------------------------------------------------------
# boxes -> rules


def _addresses(value, family: str) -> Optional[Tuple[str, List[str]]]:
    space = address_space(family)
    if value == space:
        return None
    pos = to_cidrs(value, family)
    neg = to_cidrs(iv_sub(space, value), family)
    return ("pos", pos) if len(pos) <= len(neg) else ("neg", neg)


def _interfaces(mask: int, universe: InterfaceUniverse) -> Optional[Tuple[str, List[str]]]:
    if mask == universe.all_mask:
        return None
    labels = universe.label_list(mask)
    if OTHER not in labels and universe.of_names(labels) == mask:
        return ("pos", labels)
    comp = universe.label_list(universe.all_mask & ~mask)
    if OTHER not in comp and universe.all_mask & ~universe.of_names(comp) == mask:
        return ("neg", comp)
    raise _Unsayable(f"interfaces {', '.join(labels)}")


class _Unsayable(Exception):
    pass


def _ports(ivs) -> List[object]:
    return [lo if lo == hi else f"{lo}-{hi}" for lo, hi in ivs]


def _icmp_names(ivs, family: str) -> List[str]:
    names = []
    for lo, hi in ivs:
        if family == IPV4 and lo == hi == (3 << 8 | 4):
            names.append("fragmentation-needed")
            continue
        if lo & 0xFF or hi & 0xFF != 0xFF:
            raise _Unsayable("ICMP codes")
        for t in range(lo >> 8, (hi >> 8) + 1):
            name = (ICMP4_NAME if family == IPV4 else ICMP6_NAME).get(t)
            if name is None:
                raise _Unsayable(f"ICMP type {t}")
            names.append(name)
    return names


def _rejects_with_reset(origin: str) -> bool:
    # the model keeps REJECT's answer only in the rule's text (iptables-save and nft spellings)
    return "--reject-with tcp-reset" in origin or "reject with tcp reset" in origin


def box_rules(box: Box, action: str, hook: str, family: str, universe: InterfaceUniverse, origin: str) -> List[Adopted]:
    """The [[rule]]s (usually one) that decide exactly ``box`` (at state NEW)."""
    if box[GID] != ID_ALL:
        raise _Unsayable("an owner GID match")
    out = []
    protos = [None] if box[PROTO] == PROTO_ALL else [p for lo, hi in box[PROTO] for p in range(lo, hi + 1)]
    if len(protos) > 16:
        raise _Unsayable("a protocol range")
    uids = [None] if box[UID] == ID_ALL else list(box[UID])
    for proto in protos:
        for uid in uids:
            f: Dict[str, object] = {"direction": DIRECTION[hook]}
            if proto is not None:
                if proto in (1, 58):
                    if proto != (1 if family == IPV4 else 58):
                        continue  # the other family's ICMP number: no packet of this family
                    f["proto"] = "icmp"
                    if box[ICMP] != ICMP_ALL:
                        f["icmp_types"] = _icmp_names(box[ICMP], family)
                else:
                    f["proto"] = PROTO_NAMES.get(proto, str(proto))
            for dim, key in ((DPORT, "ports"), (SPORT, "source_ports")):
                if box[dim] != PORT_ALL:
                    if proto not in PORT_PROTOS:
                        raise _Unsayable("ports without tcp, udp, sctp, dccp or udplite")
                    f[key] = _ports(box[dim])
            addrs: Dict[str, List[str]] = {}
            for dim, key in ((SRC, "from"), (DST, "to")):
                a = _addresses(box[dim], family)
                if a:
                    addrs[key if a[0] == "pos" else "not_" + key] = a[1]
            for dim, key in ((IIF, "in_interface"), (OIF, "out_interface")):
                if (dim == IIF and hook == "output") or (dim == OIF and hook == "input"):
                    continue  # no such interface on this path: every value is the same
                i = _interfaces(box[dim], universe)
                if i:
                    f[key if i[0] == "pos" else "not_" + key] = i[1]
            if box[HOPLIMIT] != HOPLIMIT_ALL:
                hl = box[HOPLIMIT]
                if len(hl) != 1 or hl[0][0] != hl[0][1]:
                    raise _Unsayable("a hop-limit range")
                f["hop_limit"] = hl[0][0]
            if uid is not None:
                if hook != "output":
                    continue  # no owner on packets from elsewhere
                f["uid"] = uid[0] if uid[0] == uid[1] else f"{uid[0]}-{uid[1]}"
            f["action"] = action
            if action == "reject" and proto == 6 and _rejects_with_reset(origin):
                f["reject_with"] = "tcp-reset"
            out.append(Adopted(f, addrs, [origin]))
    return out


# ---------------------------------------------------------------------------------------------
# the two families -> one file


def _icmp_canonical(names) -> tuple:
    from twinwall.policy.model import icmp_type_in

    out = []
    for n in names:
        m = icmp_type_in(n, IPV4)
        out.append(m[0] if m else "v6:" + n)
    return tuple(sorted(out))


def _merge_key(a: Adopted, family: str) -> tuple:
    f = dict(a.fields)
    if "icmp_types" in f:
        f["icmp_types"] = list(_icmp_canonical(f["icmp_types"]))
    return Adopted(f, a.addresses, a.origin).key()


def merge_families(v4: List[Adopted], v6: List[Adopted]) -> List[Tuple[str, Adopted, Optional[Adopted]]]:
    """(family, rule, its twin) in an order that keeps each family's own order; rules that read
    the same in both families (apart from their addresses) become one ``both`` rule."""
    ka = [_merge_key(a, IPV4) for a in v4]
    kb = [_merge_key(b, IPV6) for b in v6]
    out: List[Tuple[str, Adopted, Optional[Adopted]]] = []
    sm = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            out.extend(("both", v4[i], v6[j]) for i, j in zip(range(i1, i2), range(j1, j2)))
            continue
        out.extend((IPV4, v4[i], None) for i in range(i1, i2))
        out.extend((IPV6, v6[j], None) for j in range(j1, j2))
    return out


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


class _Writer:
    def __init__(self):
        self.groups: Dict[Tuple[str, ...], str] = {}

    def addresses(self, cidrs: List[str]):
        if len(cidrs) <= INLINE_ADDRESSES:
            return cidrs if len(cidrs) > 1 else cidrs[0]
        key = tuple(cidrs)
        if key not in self.groups:
            self.groups[key] = f"adopted_{len(self.groups) + 1}"
        return self.groups[key]


def render(defaults: Dict[str, object], merged, header: List[str], trailer: List[str], twin: bool,
           only: Optional[str] = None) -> str:
    """``only``: the one family the file governs (its rules then carry no ``family`` key: the
    family is the file's whole scope)."""
    w = _Writer()
    blocks: List[str] = []
    if twin and only is not None:
        other = IPV6 if only == IPV4 else IPV4
        ol = FAMILY_LABEL[other]
        blocks.append(f"\n# the proposed twins below are for {ol}, which this file does not govern: to use them, add \"{other}\"\n"
                      f"# to [defaults] families. The file then replaces the host's {ol} rules (never read), and its rules,\n"
                      f"# which carry no family key, apply to {ol} too: those without addresses are their own twins,\n"
                      f"# those with {FAMILY_LABEL[only]} addresses only are left out of {ol}; uncomment the proposals for these.")
    for family, a, b in merged:
        lines = ["", "[[rule]]"]
        for o in a.origin + (b.origin if b else []):
            lines.append(f"# from {o}")
        f = dict(a.fields)
        body = [f"{k} = {_toml(v)}" for k, v in f.items() if k != "action"]
        for k in ("from", "to", "not_from", "not_to"):
            cidrs = list(a.addresses.get(k, [])) + (list(b.addresses.get(k, [])) if b else [])
            if cidrs:
                body.append(f"{k} = {_toml(w.addresses(cidrs))}")
        body.append(f"action = {_toml(f['action'])}")
        if family != "both" and family != only:
            body.append(f"family = {_toml(family)}")
        lines.extend(body)
        blocks.append("\n".join(lines))
        if twin and family != "both":
            blocks.append(_twin_block(family, a, body + ([f"family = {_toml(family)}"] if family == only else [])))
    out = list(header)
    out.append("[defaults]")
    for k, v in defaults.items():
        out.append(f"{k} = {_toml(v)}")
    if w.groups:
        out.append("")
        out.append("[groups]")
        for members, name in w.groups.items():
            out.append(f"{name} = {_toml(list(members))}")
    return "\n".join(out + blocks + ([""] + trailer if trailer else [])) + "\n"


LOOPBACK_TWIN = {"127.0.0.0/8": "::1/128", "::1/128": "127.0.0.0/8", "224.0.0.0/4": "ff00::/8",
                 "ff00::/8": "224.0.0.0/4", "169.254.0.0/16": "fe80::/10", "fe80::/10": "169.254.0.0/16"}


def _twin_block(family: str, a: Adopted, body: List[str]) -> str:
    """The missing twin of a one-family rule, commented out for the admin to review (the fix's
    mirror): same ports and action; addresses mapped where they have a twin by role, otherwise
    left for the admin to fill in."""
    other = IPV6 if family == IPV4 else IPV4
    lines = ["", f"# proposed twin for {FAMILY_LABEL[other]} (review, then uncomment):", "# [[rule]]"]
    unknown = []
    for line in body:
        key = line.split(" = ", 1)[0]
        if key == "family":
            lines.append(f'# family = "{other}"')
            continue
        if key in a.addresses:
            mapped = [LOOPBACK_TWIN.get(c) for c in a.addresses[key]]
            if all(mapped):
                lines.append(f"# {key} = {_toml(mapped)}")
            else:
                unknown.append(key)
                lines.append(f"# {key} = [\"<{FAMILY_LABEL[other]} addresses of {', '.join(a.addresses[key])}>\"]")
            continue
        if key == "icmp_types":
            names = json.loads(line.split(" = ", 1)[1])
            from twinwall.policy.model import icmp_type_in

            mapped = [m[0] for m in (icmp_type_in(n, other) for n in names) if m]
            if not mapped:
                return f"\n# no {FAMILY_LABEL[other]} twin: none of {', '.join(names)} exists in {FAMILY_LABEL[other]}"
            lines.append(f"# icmp_types = {_toml(mapped)}")
            continue
        lines.append("# " + line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the proof


def new_connection_differences(original: Dict[str, List[Ruleset]], compiled: Dict[str, List[Ruleset]],
                               universe: InterfaceUniverse, limit: int = 20) -> List[str]:
    """Where the compiled rules decide a NEW packet in filter INPUT, FORWARD or OUTPUT otherwise
    than the original, per family (empty: equivalent)."""
    out: List[str] = []
    for family in FAMILIES:
        if not original.get(family):
            continue
        views = [filter_view(rs) for rs in original[family]]
        ev_a = Evaluator(views, family, universe, loopback_addresses(family))
        ev_b = Evaluator(compiled[family], family, universe, loopback_addresses(family))
        for hook in HOOKS:
            start = whole_box(family, universe, CT_NEW)
            for oa in ev_a.hook_path((hook,), [start]):
                for ob in ev_b.hook_path((hook,), [oa.box]):
                    if ob.verdict == oa.verdict and not oa.uncertain:
                        continue
                    if len(out) < limit:
                        why = "; ".join(d.describe() for d in oa.decided_by[-1:]) or "no rule"
                        what = (f"the original {oa.verdict}" + (f" or not (depends on {', '.join(oa.uncertain)})"
                                                              if oa.uncertain else ""))
                        out.append(f"{FAMILY_LABEL[family]} {hook}: {_describe(ob.box, family)}: {what} ({why}), "
                                   f"the adopted rules {ob.verdict}")
                    else:
                        return out + ["(more differences left out)"]
    return out


def _describe(box: Box, family: str) -> str:
    proto = box[PROTO]
    p = "any protocol" if proto == PROTO_ALL else ",".join(
        str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in proto[:3])
    src = to_cidrs(box[SRC], family)
    dst = to_cidrs(box[DST], family)
    ports = "" if box[DPORT] == PORT_ALL else " port " + ",".join(
        str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in box[DPORT][:4])
    return f"proto {p} from {', '.join(src[:2])}{'...' if len(src) > 2 else ''} to {', '.join(dst[:2])}" \
           f"{'...' if len(dst) > 2 else ''}{ports}"


# ---------------------------------------------------------------------------------------------


def adopt_rulesets(rulesets: Dict[str, List[Ruleset]], twin: bool = False, sources: str = "",
                   families: Optional[Sequence[str]] = None) -> AdoptResult:
    """``families``: the families whose rules were read (None: those ``rulesets`` holds rules
    of). A family not read is unknown, not empty: the file then governs only the families read
    (``[defaults] families``) and says the other is left as the host has it."""
    read = tuple(f for f in FAMILIES if (f in families if families is not None else rulesets.get(f)))
    if not read:
        raise InputError("no ruleset was read: nothing to adopt")
    specs: set = set()
    for rss in rulesets.values():
        for rs in rss:
            specs.update(rs.interface_specs)
    universe = InterfaceUniverse(specs)
    for family in FAMILIES:
        bind_rulesets(rulesets.get(family, []), universe, loopback_addresses(family))
    per_family: Dict[str, Dict[str, List[Adopted]]] = {f: {h: [] for h in HOOKS} for f in FAMILIES}
    policies: Dict[str, Dict[str, str]] = {f: {} for f in FAMILIES}
    unexpressible: List[str] = []
    referenced: List[str] = []
    notes: List[str] = []
    established = invalid = False
    logged = False
    for family in read:
        rss = rulesets.get(family) or []
        if not rss:
            # (read, and empty: an nft ruleset with no table of this family)
            notes.append(f"the rules read hold no {FAMILY_LABEL[family]} table: {FAMILY_LABEL[family]} is written "
                         "as accepting everything, what the host does")
            for hook in HOOKS:
                policies[family][hook] = "accept"
            continue
        fl = Flattener(family)
        for hook in HOOKS:
            for rs in rss:
                unexpressible.extend(unadoptable_stages(rs, hook))
            stages = [(rs, b) for rs in rss for b in filter_view(rs).base_chains if b.hook == hook]
            if not stages:
                policies[family][hook] = "accept"
                continue
            # every base chain on the hook, in priority order: each must accept a packet
            chains = []
            for rs, base in sorted(stages, key=lambda s: s[1].priority):
                chain_entries, _ = fl.chain(rs, base.table, base.chain, [whole_box(family, universe, CT_NEW)])
                base_chain = rs.chain(base.table, base.chain)
                assert base_chain is not None  # (stages lists only the base chains a table holds)
                policy = "accept" if (base_chain.policy or "ACCEPT") == "ACCEPT" else "drop"
                end = Rule(base.table, base.chain, len(base_chain.rules) + 1, f"(end of the chain: policy {policy})")
                chains.append((chain_entries, policy, end))
            try:
                entries, policies[family][hook] = stack_chains(chains)
            except _Unsayable as exc:
                unexpressible.append(f"{FAMILY_LABEL[family]} {hook}: {len(chains)} base chains ({exc}): only the first is adopted")
                entries, policies[family][hook] = chains[0][0], chains[0][1]
            for e in entries:
                origin = f"{FAMILY_LABEL[family]} {e.rule.table} {e.rule.chain} #{e.rule.number}: {e.rule.text}"
                try:
                    per_family[family][hook].extend(box_rules(e.box, e.action, hook, family, universe, origin))
                except _Unsayable as exc:
                    unexpressible.append(f"{origin} ({exc}: a policy cannot say this)")
        unexpressible.extend(fl.unexpressible)
        referenced.extend(fl.referenced)
        established |= fl.established
        invalid |= fl.invalid_dropped
        logged |= bool(fl.logged)
    defaults: Dict[str, object] = {}
    only = read[0] if len(read) == 1 else None
    if only is not None:
        defaults["families"] = [only]
    for hook in HOOKS:
        if only is not None:
            defaults[hook] = policies[only][hook]
            continue
        v4, v6 = policies[IPV4][hook], policies[IPV6][hook]
        defaults[hook] = v4 if v4 == v6 else {"ipv4": v4, "ipv6": v6}
    defaults.update(log_dropped=logged, loopback=False, spoofed_loopback=False, essential_icmp=False,
                    established=established, drop_invalid=invalid)
    merged = []
    for hook in HOOKS:
        merged.extend(merge_families(per_family[IPV4][hook], per_family[IPV6][hook]))
    header = [f"# Adopted by twinwall policy adopt{' from ' + sources if sources else ''}.",
              "# The baseline switches are off so that the compiled rules decide new connections exactly as",
              "# the original did; turn them on (loopback, essential_icmp...) once you have reviewed the file."]
    if only is not None:
        other = FAMILY_LABEL[IPV6 if only == IPV4 else IPV4]
        header += [f"# Only {FAMILY_LABEL[only]} rules were read; {other} was not read, so this file governs",
                   f"# {FAMILY_LABEL[only]} alone ([defaults] families) and {other} is left as the host has it:",
                   f"# compile writes no {other} rules, check does not prove {other}, apply does not touch it."]
    trailer = []
    for n in notes:
        trailer.append(f"# note: {n}")
    for r in referenced:
        trailer.append(f"# referenced, not copied: {r}")
    for u in unexpressible:
        trailer.append(f"# not expressible, not adopted: {u}")
    body = render(defaults, merged, header, trailer, twin, only)
    differences = prove_adopted(body, rulesets, universe)
    proof = (["# proof: every new connection in filter INPUT, FORWARD and OUTPUT gets the original's verdict,",
              f"# in {'each family' if only is None else FAMILY_LABEL[only]} (twinwall's evaluator over the original "
              "and the compiled file)"]
             if not differences else
             [f"# proof: NOT equivalent, {len(differences)} differences:"] + [f"#   {d}" for d in differences])
    lines = body.split("\n")
    text = "\n".join(lines[:len(header)] + proof + [""] + lines[len(header):])
    return AdoptResult(text, not differences, differences, unexpressible, referenced, notes, len(merged))


def prove_adopted(text: str, original: Dict[str, List[Ruleset]], universe: InterfaceUniverse) -> List[str]:
    from twinwall.parsers.iptables_save import parse_iptables_save
    from twinwall.policy.generators.iptables import generate
    from twinwall.policy.lower import lower
    from twinwall.policy.model import parse_policy

    try:
        policy = parse_policy(text, "adopted policy")
    except InputError as exc:  # a defect here, not the user's: say so plainly
        raise InputError(f"the adopted policy does not read back ({exc})") from None
    texts = generate(lower(policy))
    compiled = {f: [parse_iptables_save(texts[f], f, "adopted, compiled")] for f in texts}
    return new_connection_differences(original, compiled, universe)


def adopt_snapshot(snapshot, twin: bool = False) -> AdoptResult:
    from twinwall.loader import load_rulesets

    rulesets = load_rulesets(snapshot)
    if not any(rulesets.values()):
        raise InputError("no ruleset was read: nothing to adopt (run as root, or give --iptables/--ip6tables/--nft)")
    sources = ", ".join(dict.fromkeys(r.source for r in snapshot.rulesets))
    # a family is read when a dump of it was given; an nft ruleset holds every family the
    # kernel has (no ip6 table there: IPv6 has no rules, which is known, not unread)
    read = [f for f in FAMILIES if any(r.family in (f, "inet") for r in snapshot.rulesets)]
    return adopt_rulesets(rulesets, twin, sources, read)
