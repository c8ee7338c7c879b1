"""The proof: a policy's compiled rules, parsed back by twinwall's own parsers and walked by its
evaluator, decide every packet the way the policy says.

For each target (iptables, nft), family and hook, the policy's meaning (``policy.meaning``)
cuts the whole packet space into regions, each decided by one rule of the file, a baseline
entry or the hook's default; the evaluator (``analysis.evaluator``) walks each region through
the parsed compiled rules, and every packet of it must get that verdict. The compiled texts are
parsed as written and, as root, as the tools print them back after loading them into a scratch
network namespace (iptables-restore then iptables-save; nft -f then nft -j list ruleset).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence

from twinwall.analysis.evaluator import Evaluator
from twinwall.netfilter.interfaces import InterfaceUniverse
from twinwall.netfilter.packetset import IIF, OIF, Box, box_meets, loopback_addresses
from twinwall.policy.lower import Lowered, Note, lower
from twinwall.policy.meaning import Meaning, interface_names, whole_box
from twinwall.policy.model import FAMILIES, FAMILY_LABEL, HOOKS, Policy, families_text
from twinwall.netfilter.ruleset import (
    DNAT,
    GOTO,
    JUMP,
    NAT_DONE,
    NOTRACK,
    REDIRECT,
    RETURN,
    Chain,
    Decision,
    Rule,
    Ruleset,
    Table,
)

TARGETS = ("iptables", "nft")
STAND_IN_UID = 4_000_000_000  # for user names this machine does not know (check only)


@dataclass
class Mismatch:
    target: str
    family: str
    hook: str
    decided_by: str  # the policy rule / baseline entry / default that should decide
    intended: str
    actual: str
    compiled: List[Decision]
    example: str

    def __str__(self) -> str:
        rules = "; ".join(d.describe() for d in self.compiled) or "(no rule)"
        return (f"{self.target} {FAMILY_LABEL[self.family]} {self.hook}: {self.decided_by} says {self.intended}, "
                f"the compiled rules {self.actual} ({self.example}): {rules}")


@dataclass
class CheckResult:
    lowered: Lowered
    proved: List[str] = field(default_factory=list)  # "iptables IPv4 input: 41 regions" ...
    mismatches: List[Mismatch] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    info: List[str] = field(default_factory=list)
    # the families outside the file ([defaults] families): one line each, not a warning
    outside: List[str] = field(default_factory=list)

    @property
    def notes(self) -> List[Note]:
        return self.lowered.notes

    def exit_code(self) -> int:
        if self.mismatches:
            return 2
        return 1 if self.warnings else 0


def uid_numbers(policy: Policy, info: List[str]) -> Dict[str, str]:
    """User names as numbers for the proof: this machine's, or a stand-in no account has."""
    import pwd

    out: Dict[str, str] = {}
    for rule in policy.rules:
        if rule.uid and not rule.uid[0].isdigit() and rule.uid not in out:
            try:
                out[rule.uid] = str(pwd.getpwnam(rule.uid).pw_uid)
            except KeyError:
                out[rule.uid] = str(STAND_IN_UID + len(out))
                info.append(f"{rule.label()}: user {rule.uid!r} does not exist here: the proof uses uid "
                            f"{out[rule.uid]} for it (the host that loads the rules resolves the name)")
    return out


def compiled_texts(lowered: Lowered, target: str, source: str = ""):
    if target == "iptables":
        from twinwall.policy.generators.iptables import generate

        return generate(lowered, source)
    from twinwall.policy.generators.nft import generate as generate_nft

    return generate_nft(lowered, source)


def parse_texts(target: str, texts) -> Dict[str, List[Ruleset]]:
    """The compiled texts read by twinwall's parsers, as written."""
    if target == "iptables":
        from twinwall.parsers.iptables_save import parse_iptables_save

        return {f: [parse_iptables_save(texts[f], f, f"compiled rules.{'v4' if f == 'ipv4' else 'v6'}")] for f in texts}
    return {}


class ScratchNamespace:
    """A network namespace of its own, for loading compiled rules and reading them back."""

    def __init__(self):
        self.name = f"tw-policy-{secrets.token_hex(4)}"

    def __enter__(self) -> "ScratchNamespace":
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    def run(self, argv: Sequence[str], input: Optional[str] = None, timeout: float = 60):
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], input=input, capture_output=True,
                              text=True, timeout=timeout)

    def runner(self):
        from twinwall.sources.host import run_command

        return lambda argv, timeout=60: run_command(["ip", "netns", "exec", self.name, *argv], timeout=timeout)


def scratch_unavailable() -> Optional[str]:
    if os.geteuid() != 0:
        return "not root: loading the compiled rules into a scratch network namespace needs root"
    from twinwall.sources.host import which

    for tool in ("ip", "iptables-restore", "nft"):
        if which(tool) is None:
            return f"{tool} is not installed"
    return None


def loaded_rulesets(target: str, texts) -> Dict[str, List[Ruleset]]:
    """The compiled rules as the kernel tools print them back from a scratch namespace."""
    from twinwall.errors import InputError

    with ScratchNamespace() as ns:
        if target == "iptables":
            from twinwall.parsers.iptables_save import parse_iptables_save

            out = {}
            for f in texts:  # (the governed families: no file for the other)
                tool = "iptables" if f == "ipv4" else "ip6tables"
                res = ns.run([f"{tool}-restore"], input=texts[f])
                if res.returncode != 0:
                    raise InputError(f"{tool}-restore refused the compiled rules: {res.stderr.strip()}")
                saved = ns.run([f"{tool}-save"])
                out[f] = [parse_iptables_save(saved.stdout, f, f"{tool}-save of the compiled rules")]
            return out
        res = ns.run(["nft", "-f", "-"], input=texts)
        if res.returncode != 0:
            raise InputError(f"nft -f refused the compiled rules: {res.stderr.strip()}")
        from twinwall.loader import load_rulesets
        from twinwall.model import HostSnapshot
        from twinwall.sources.host import collect_nft_ruleset

        snap = HostSnapshot(hostname="scratch")
        text = collect_nft_ruleset(snap, ns.runner())
        if text is None:
            raise InputError(f"the compiled nft rules could not be read back: {'; '.join(snap.missing)}")
        snap.rulesets.append(text)
        return load_rulesets(snap)


def _universe(lowered: Lowered, rulesets: Dict[str, List[Ruleset]]) -> InterfaceUniverse:
    """The interfaces the file and the compiled rules name."""
    specs = set(interface_names(lowered))
    for rss in rulesets.values():
        for rs in rss:
            specs.update(rs.interface_specs)
    return InterfaceUniverse(specs)


def prove(lowered: Lowered, target: str, rulesets: Dict[str, List[Ruleset]], result: CheckResult, how: str) -> None:
    universe = _universe(lowered, rulesets)
    for family in lowered.families:
        local = loopback_addresses(family)
        ev = Evaluator(rulesets[family], family, universe, local)  # (binds the universe: rules compile)
        for hook in HOOKS:
            # every packet: the evaluator's regions of the compiled rules, each asked of the
            # policy's meaning (which may cut it further); one interface class at a time
            policy_meaning = Meaning(lowered, family, hook, universe)
            bad = regions = 0
            for piece, piece_rulesets, piece_meaning in _interface_pieces(
                    whole_box(family, universe), hook, ev.rulesets, policy_meaning):
                piece_ev = Evaluator([_in_parts(rs) for rs in piece_rulesets or ev.rulesets], family, universe, local)
                outcomes = piece_ev.hook_path((hook,), [piece])
                regions += len(outcomes)
                by_verdict: Dict[str, List] = {}
                for o in outcomes:
                    if o.uncertain:
                        bad += 1
                        if bad <= 5:
                            result.mismatches.append(_mismatch(target, family, hook, piece_meaning, o))
                        continue
                    by_verdict.setdefault(o.verdict, []).append(o)
                # each verdict's packets (of this piece) asked of the policy's meaning at once
                for verdict, outs in by_verdict.items():
                    for region in piece_meaning.disagreeing([o.origin for o in outs], verdict):
                        bad += 1
                        if bad <= 5:
                            o = next((o for o in outs if box_meets(o.origin, _as_constraint(region.box))), outs[0])
                            result.mismatches.append(Mismatch(
                                target, family, hook, region.fr.label if region.fr else f"the {hook} default",
                                region.verdict, o.verdict, o.decided_by, _example(region.box, family)))
            result.proved.append(f"{target} ({how}) {FAMILY_LABEL[family]} {hook}: {regions} regions"
                                 + (f", {bad} wrong" if bad else " agree"))


def prove_untouched(lowered: Lowered, target: str, rulesets: Dict[str, List[Ruleset]], result: CheckResult,
                    how: str) -> None:
    """For a file that governs one family, compiled for nft (one inet table sees both): every
    packet of the other family must pass the table, at every hook, as if it were not there."""
    universe = _universe(lowered, rulesets)
    for family in lowered.policy.outside():
        ev = Evaluator(rulesets.get(family, []), family, universe, loopback_addresses(family))
        for hook in HOOKS:
            outcomes = ev.hook_path((hook,), [whole_box(family, universe)])
            bad = [o for o in outcomes if o.verdict != "accept" or o.uncertain]
            for o in bad[:5]:
                result.mismatches.append(Mismatch(
                    target, family, hook, "the file leaves this family alone ([defaults] families)", "accept",
                    o.verdict + (" (uncertain)" if o.uncertain else ""), o.decided_by, _example(o.origin, family)))
            result.proved.append(f"{target} ({how}) {FAMILY_LABEL[family]} {hook}: outside the file, "
                                 + (f"{len(bad)} regions touched by the table" if bad else
                                    f"{len(outcomes)} regions pass the table untouched"))


def _mismatch(target: str, family: str, hook: str, policy_meaning: Meaning, o) -> Mismatch:
    """An outcome the compiled rules leave uncertain, against what the policy says of it."""
    region = policy_meaning.regions([o.origin])[0]
    return Mismatch(target, family, hook, region.fr.label if region.fr else f"the {hook} default",
                    region.verdict, o.verdict + " (uncertain)", o.decided_by, _example(region.box, family))


def _as_constraint(box: Box):
    return tuple(enumerate(box))


# a chain at least this long is walked one interface class at a time
PIECEWISE_RULES = 200
# actions that change a packet on its way (its addresses, its conntrack state): with them a rule
# that cannot meet the entering packets might still meet what they become
_REWRITING = frozenset((DNAT, REDIRECT, NAT_DONE, NOTRACK))


def _interface_pieces(box: Box, hook: str, rulesets: List[Ruleset], policy_meaning: Meaning):
    """(box, rulesets, meaning) to walk, covering ``box``: the whole of it with all the rules,
    or, for a long ruleset, one input (forward: then output) interface class at a time with only
    the rules and policy entries whose interfaces meet that class.

    Why: a long flat chain (adopt's output of a 5000-rule FORWARD dispatching on interfaces)
    walked with all packets at once cuts the packets no rule has matched yet into thousands of
    pieces, each tested against every later rule. Exact: the walk never changes a packet's
    interfaces, so a rule whose interface match misses every packet of a piece matches none of
    them anywhere in the walk (rules that rewrite packets turn the pieces off)."""
    rules = [r for rs in rulesets for t in rs.tables.values() for c in t.chains.values() for r in c.rules]
    if len(rules) < PIECEWISE_RULES or any(r.action in _REWRITING for r in rules) or any(
            b.kind != "filter" for rs in rulesets for b in rs.base_chains):
        yield box, None, policy_meaning
        return
    dims = {"input": (IIF,), "output": (OIF,)}.get(hook, (IIF, OIF))
    yield from _split_pieces(box, dims, rulesets, policy_meaning, len(rules))


def _split_pieces(box: Box, dims, rulesets: List[Ruleset], policy_meaning: Meaning, count: int):
    dim, later = dims[0], dims[1:]
    mask = box[dim]
    bit = 1
    while bit <= mask:
        if mask & bit:
            piece = box[:dim] + (bit,) + box[dim + 1:]
            sub = [_meeting(rs, piece) for rs in rulesets]
            sub_meaning = policy_meaning.within(piece)
            sub_count = sum(len(c) for rs in sub for t in rs.tables.values() for c in t.chains.values())
            if later and sub_count >= PIECEWISE_RULES and sub_count > count // 4:
                yield from _split_pieces(piece, later, sub, sub_meaning, sub_count)
            else:
                yield piece, sub, sub_meaning
        bit <<= 1


def _meeting(rs: Ruleset, box: Box) -> Ruleset:
    """``rs`` with only the rules whose interface matches meet ``box``'s interfaces."""
    tables = {}
    for tname, table in rs.tables.items():
        chains = {}
        for cname, chain in table.chains.items():
            kept = Chain(chain.table, chain.name, chain.policy)
            kept.line = chain.line
            kept.set_source([r for r in chain.rules if _may_meet(r.alternatives, box)], lambda _c, src: src)
            chains[cname] = kept
        tables[tname] = Table(tname, chains)
    return replace(rs, tables=tables)


# a base chain is walked in parts of this many rules
PART_RULES = 24


def _in_parts(rs: Ruleset) -> Ruleset:
    """``rs`` with each long base chain cut into parts: the base chain jumps to each part in
    turn, and the part holds that stretch of the rules.

    Why: the evaluator merges the packets coming back from a jump, so the packets no rule has
    matched yet are merged every PART_RULES rules instead of piling up as thousands of pieces
    through a 5000-rule chain. Exact: an unconditional jump to a chain holding the same rules,
    with no RETURN or GOTO among them, decides every packet as the rules did in place (a
    chain with either is left whole)."""
    bases = {(b.table, b.chain) for b in rs.base_chains if b.kind == "filter"}
    tables = dict(rs.tables)
    for tname, cname in bases:
        table = tables.get(tname)
        chain = table.chains.get(cname) if table else None
        if table is None or chain is None or len(chain) < 2 * PART_RULES:
            continue
        rules = chain.rules
        if any(r.action in (RETURN, GOTO) for r in rules):
            continue
        chains = dict(table.chains)
        jumps: List[Rule] = []
        for k in range(0, len(rules), PART_RULES):
            name = f"{cname} (rules {k + 1}-{min(k + PART_RULES, len(rules))}, walked as one part)"
            part = Chain(tname, name)
            part.set_source(list(rules[k:k + PART_RULES]), lambda _c, src: src)
            chains[name] = part
            jumps.append(Rule(tname, cname, len(jumps) + 1, f"(twinwall check: -j {name})", action=JUMP, target=name))
        whole = Chain(tname, cname, chain.policy)
        whole.line = chain.line
        whole.set_source(jumps, lambda _c, src: src)
        chains[cname] = whole
        tables[tname] = Table(tname, chains)
    return replace(rs, tables=tables)


def _may_meet(alternatives, box: Box) -> bool:
    for alt in alternatives:
        for dim, value in alt:
            if (dim == IIF or dim == OIF) and not box[dim] & value:
                break
        else:
            return True
    return False


def _example(box, family: str) -> str:
    from twinwall.netfilter.packetset import DPORT, DST, PROTO, SRC, format_address

    return (f"e.g. proto {box[PROTO][0][0]} {format_address(box[SRC][0][0], family)} -> "
            f"{format_address(box[DST][0][0], family)} port {box[DPORT][0][0]}")


def check_policy(policy: Policy, targets: Sequence[str] = TARGETS, scratch: Optional[bool] = None) -> CheckResult:
    info: List[str] = []
    lowered = lower(policy, uid_numbers(policy, info))
    result = CheckResult(lowered, info=info)
    reason = scratch_unavailable()
    if scratch is None:
        scratch = reason is None
    for target in targets:
        texts = compiled_texts(lowered, target, policy.path)
        if target == "iptables":
            prove(lowered, target, parse_texts(target, texts), result, "as written")
        if scratch:
            loaded = loaded_rulesets(target, texts)
            prove(lowered, target, loaded, result, "loaded in a scratch namespace")
            if target == "nft" and policy.outside():
                prove_untouched(lowered, target, loaded, result, "loaded in a scratch namespace")
        else:
            result.skipped.append(f"{target}: not proved as loaded ({reason or 'scratch namespace off'})"
                                  + ("; nft rules are proved only as nft prints them back" if target == "nft" else ""))
    for family in policy.outside():
        result.outside.append(
            f"{FAMILY_LABEL[family]} is outside this file ([defaults] families = {families_text(policy.families)}): "
            f"not compiled, not proved, left as the host has it")
    if len(policy.families) > 1:
        _family_warnings(policy, lowered, result)
    return result


def _family_warnings(policy: Policy, lowered: Lowered, result: CheckResult) -> None:
    for rule, family, why in lowered.family_only:
        other = FAMILY_LABEL["ipv6" if family == "ipv4" else "ipv4"]
        what = f"{rule.proto}" + (f"/{','.join(str(a) if a == b else f'{a}-{b}' for a, b in rule.ports)}" if rule.ports else "")
        effect = (f"a service listening on both families is treated differently over {other}" if rule.direction == "in"
                  else f"{'outgoing' if rule.direction == 'out' else 'forwarded'} {other} connections are not treated the same")
        result.warnings.append(
            f"{rule.label()}: {rule.action} {what} {rule.direction} exists in {FAMILY_LABEL[family]} only ({why}): {effect}")
    for hook in HOOKS:
        v4, v6 = (policy.defaults.of(hook, f) for f in FAMILIES)
        if v4 != v6:
            result.warnings.append(f"defaults: {hook} is {v4} over IPv4 and {v6} over IPv6")
