"""ufw: the change as ufw commands, so ufw keeps owning its rules (user.rules / user6.rules).

A rule is written for one family by naming that family's address (``from ::/0`` is IPv6 only);
``prepend`` puts it at the top of that family's ufw rules, where it decides before the rule that
let the wider family in; a chain policy is ``ufw default deny incoming``. ``IPV6=`` in
/etc/default/ufw is respected: with ``IPV6=no`` ufw writes no IPv6 rule (it drops IPv6 itself)
and an IPv6 change is refused.

What the commands produce is predicted by running them: ufw, with a copy of its configuration
bind-mounted over /etc/ufw, /etc/default/ufw and /lib/ufw, enabled in a scratch network and
mount namespace (``unshare --net --mount``), then iptables-save / ip6tables-save read back. The
host's ufw files and rules are never touched by the plan.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from twinwall.apply.candidate import Candidate
from twinwall.fix.model import ANY, BEFORE, TOP, Change, Refused, RuleSpec
from twinwall.fix.owners.iptables import summary

ACTIONS = {"ACCEPT": "allow", "DROP": "deny", "REJECT": "reject"}
DEFAULTS = "/etc/default/ufw"


def ipv6_enabled(path: str = DEFAULTS) -> bool:
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return True
    m = re.search(r"^IPV6=(\S+)", text, re.M)
    return m is None or m.group(1).strip("\"'").lower() == "yes"


def rule_args(rule: RuleSpec) -> List[str]:
    """``allow proto tcp from 2001:db8:a::/64 to any port 22`` for one RuleSpec."""
    if rule.raw or rule.action not in ACTIONS or rule.icmp_type or rule.hop_limit or rule.oif or rule.not_oif:
        raise Refused(f"ufw commands cannot express {rule.iptables_line()}: write it in before{'6' if rule.family == 'ipv6' else ''}.rules")
    if rule.state not in (None, "NEW") or rule.chain in ("OUTPUT", "FORWARD") or "output" in rule.chain or "forward" in rule.chain:
        raise Refused(f"ufw commands cannot express {rule.iptables_line()}")
    a = [ACTIONS[rule.action]]
    if rule.iif:
        a += ["in", "on", rule.iif]
    if rule.protocol:
        a += ["proto", rule.protocol]
    a += ["from", rule.source or ANY[rule.family]]
    if rule.sport:
        a += ["port", rule.sport]
    a += ["to", "any"]
    if rule.dport is not None:
        a += ["port", str(rule.dport)]
    return a


def commands_for(ch: Change) -> Tuple[List[List[str]], List[List[str]]]:
    do: List[List[str]] = []
    undo: List[List[str]] = []
    prepend = ch.place in (TOP, BEFORE)
    # prepend puts each at the top: the last to run ends first, so run them in reverse
    for rule in (reversed(ch.rules) if prepend else ch.rules):
        args = rule_args(rule)
        do.append(["ufw", "prepend", *args] if prepend else ["ufw", *args])
        undo.insert(0, ["ufw", "delete", *args])
    for chain, policy in ch.policies.items():
        if chain != "INPUT":
            raise Refused(f"ufw: the {chain} policy is set with 'ufw default', for both families: plan it by hand")
        do.append(["ufw", "default", "deny" if policy == "DROP" else "allow", "incoming"])
        undo.insert(0, ["ufw", "default", "allow", "incoming"])
    return do, undo


# in the scratch namespace: the copies over ufw's directories, then ufw enabled and the commands
_SCRATCH = ('set -e; mount --bind "$1/etc-ufw" /etc/ufw; mount --bind "$1/default-ufw" /etc/default/ufw; '
            'mount --bind "$1/lib-ufw" /lib/ufw; mount -t tmpfs tw-ufw-run /run; '
            'ufw --force enable >/dev/null; sh -e "$1/commands.sh" >/dev/null; '
            'iptables-save; echo "#### twinwall ipv6"; ip6tables-save')


def predict(commands: Sequence[Sequence[str]]) -> Tuple[str, str]:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ufw"):
        raise Refused("ufw: predicting what the commands load needs root, unshare and ufw (a scratch namespace)")
    with tempfile.TemporaryDirectory(prefix="twinwall-ufw-") as d:
        shutil.copytree("/etc/ufw", f"{d}/etc-ufw", symlinks=True)
        shutil.copyfile(DEFAULTS, f"{d}/default-ufw")
        shutil.copytree("/lib/ufw", f"{d}/lib-ufw", symlinks=True)
        with open(f"{d}/commands.sh", "w", encoding="utf-8") as fh:
            fh.write("".join(" ".join(shlex.quote(a) for a in c) + "\n" for c in commands))
        res = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", _SCRATCH,
                              "sh", d], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise Refused(f"ufw: the commands fail in a scratch namespace: {' '.join(res.stderr.split())[:300]}")
    v4, _, v6 = res.stdout.partition("#### twinwall ipv6\n")
    return v4, v6


def ufw_spec(line: str, family: str) -> List[str]:
    """The ufw rule an ``-A ufw6-user-input ...`` line came from (``allow proto tcp from ::/0 to
    any port 22``); Refused for what ufw's simple syntax does not write that way."""
    toks = shlex.split(line)[2:]
    opts = {}
    i = 0
    while i < len(toks):
        if toks[i] in ("-s", "-d", "-p", "--dport", "--sport", "-i", "-j") and i + 1 < len(toks):
            opts[toks[i]] = toks[i + 1]
            i += 2
        elif toks[i] == "-m" and i + 1 < len(toks) and toks[i + 1] in ("tcp", "udp"):
            i += 2
        else:
            raise Refused(f"ufw: cannot tell which ufw rule wrote {line}")
    action = {"ACCEPT": "allow", "DROP": "deny", "REJECT": "reject"}.get(opts.get("-j", ""))
    if action is None or "-p" not in opts or "--dport" not in opts:
        raise Refused(f"ufw: cannot tell which ufw rule wrote {line}")
    spec = [action] + (["in", "on", opts["-i"]] if "-i" in opts else []) + ["proto", opts["-p"], "from",
                                                                             opts.get("-s", ANY[family])]
    if "--sport" in opts:
        spec += ["port", opts["--sport"]]
    return spec + ["to", opts.get("-d", "any").replace(ANY[family], "any"), "port", opts["--dport"]]


def replaced_rule(snapshot, ch: Change) -> List[str]:
    """ufw will not add a rule whose matches equal an existing one's ("Skipping inserting existing
    rule"): the rule that let the wider family in is deleted first, and put back on undo."""
    if ch.place != BEFORE or not ch.anchor:
        return []
    from twinwall.fix.iptables_text import SaveText
    from twinwall.fix.owners.iptables import family_text

    lines = SaveText.parse(family_text(snapshot, ch.family) or "").table("filter").chain(ch.chain)
    if ch.anchor > len(lines):
        raise Refused(f"ufw: {ch.chain} has no rule {ch.anchor}")
    spec = ufw_spec(lines[ch.anchor - 1], ch.family)
    if any(r.dport is not None and str(r.dport) != spec[-1] for r in ch.rules):
        raise Refused(f"ufw: the rule that lets {ch.family} in ({' '.join(spec)}) covers more than the service")
    return spec


USER_RULES = {"ipv4": "/etc/ufw/user.rules", "ipv6": "/etc/ufw/user6.rules"}


def user_rules(family: str, path: Optional[str] = None) -> Optional[List[List[str]]]:
    """ufw's rules of a family in its order (``ufw status numbered``), each as the ``-A`` lines
    it wrote under its ``### tuple ###`` line in user.rules / user6.rules; None when unreadable."""
    try:
        text = open(path or USER_RULES[family], encoding="utf-8").read()
    except OSError:
        return None
    out: List[List[str]] = []
    for line in text.splitlines():
        if line.startswith("### tuple ###"):
            out.append([])
        elif line.startswith("-A ") and out:
            out[-1].append(line)
    return out


def rule_holding(rules: List[List[str]], chain: str, n: int) -> Optional[int]:
    """The index of the ufw rule that wrote the ``n``-th (1-based) rule of ``chain``."""
    seen = 0
    for i, lines in enumerate(rules):
        for line in lines:
            if line.split()[1] == chain:
                seen += 1
                if seen == n:
                    return i
    return None


class _Order:
    """ufw's rules per family as the commands leave them, so that a rule deleted to make room is
    put back at its own number (``ufw insert N``, numbered as ``ufw status numbered``: the IPv4
    rules first) and the undo gives back exactly the rules there were."""

    def __init__(self) -> None:
        self.rules: Dict[str, Optional[List[object]]] = {}
        self.new = 0

    def family(self, family: str) -> List[object]:
        if family not in self.rules:
            found = user_rules(family)
            self.rules[family] = None if found is None else list(range(len(found)))
        got = self.rules[family]
        if got is None:
            raise Refused(f"ufw: cannot read {USER_RULES[family]} to put a replaced rule back where it was")
        return got

    def take(self, family: str, chain: str, anchor: int, spec: List[str]) -> List[str]:
        """Delete the rule that wrote ``chain``'s rule ``anchor``; returns the command that puts it back."""
        found = user_rules(family) or []
        index = rule_holding(found, chain, anchor)
        order = self.family(family)
        if index is None or index not in order:
            raise Refused(f"ufw: no rule of {USER_RULES[family]} wrote {chain} rule {anchor}")
        pos = order.index(index)
        order.remove(index)
        if pos >= len(order):
            return ["ufw", *spec]
        first = len(self.family("ipv4")) if family == "ipv6" else 0
        return ["ufw", "insert", str(first + pos + 1), *spec]

    def added(self, family: str, cmd: List[str]) -> None:
        if family not in self.rules or self.rules[family] is None:
            return
        order = self.family(family)
        self.new += 1
        if cmd[1] == "prepend":
            order.insert(0, f"new {self.new}")
        elif cmd[1] in ACTIONS.values():
            order.append(f"new {self.new}")


class UfwOwner:
    name = "ufw"

    def render(self, snapshot, changes: Sequence[Change]) -> Candidate:
        if any(c.family == "ipv6" for c in changes) and not ipv6_enabled():
            raise Refused("ufw has IPV6=no in /etc/default/ufw: it writes no IPv6 rule (and drops IPv6 itself)")
        do: List[List[str]] = []
        undo: List[List[str]] = []
        order = _Order()
        for ch in changes:
            if ch.replace_table:
                raise Refused("ufw: block IPv6 with IPV6=no in /etc/default/ufw and 'ufw reload'")
            cd, cu = commands_for(ch)
            old = replaced_rule(snapshot, ch)
            if old:
                assert ch.anchor is not None
                cu = cu + [order.take(ch.family, ch.chain, ch.anchor, old)]
                cd = [["ufw", "delete", *old]] + cd
            for c in cd:
                if c[1] != "delete":
                    order.added(ch.family, c)
            ch.owner = self.name
            ch.commands = [" ".join(shlex.quote(a) for a in c) for c in cd]
            ch.rules_text = "\n".join(" ".join(c[1:]) for c in cd)
            do += cd
            undo = cu + undo
        v4, v6 = predict(do)
        return Candidate("commands", ipv4=v4, ipv6=v6, commands=do, undo_commands=undo, summary=summary(changes))


OWNER = UfwOwner()
