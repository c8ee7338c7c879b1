"""firewalld: rich rules with ``family=`` (firewalld rejects an address without it), added to
the runtime configuration during the trial and made permanent only on confirm.

What firewalld makes of rich rules is its own nft table (``inet firewalld``), which twinwall
cannot predict without a firewalld to run them: the commands are shown, and the change is
refused as unproved rather than applied unproved.
"""

from __future__ import annotations

from typing import List, Sequence

from twinwall.fix.model import Change, Refused, RuleSpec

ACTIONS = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject"}


def rich_rule(rule: RuleSpec) -> str:
    if rule.raw or rule.action not in ACTIONS or rule.chain != "INPUT" or rule.hop_limit:
        raise Refused(f"firewalld rich rules cannot express {rule.iptables_line()}")
    parts = [f'rule family="{rule.family}"']
    if rule.source:
        parts.append(f'source address="{rule.source}"')
    if rule.protocol in ("tcp", "udp") and rule.dport is not None:
        parts.append(f'port port="{rule.dport}" protocol="{rule.protocol}"')
    elif rule.icmp_type:
        parts.append(f'icmp-type name="{rule.icmp_type}"')
    parts.append(ACTIONS[rule.action])
    return " ".join(parts)


def commands_for(ch: Change) -> List[str]:
    # rich rules are ordered by action (deny before allow), not by position: priorities do it
    out = []
    for n, rule in enumerate(ch.rules):
        prio = -100 + n
        out.append(f"firewall-cmd --add-rich-rule='{rich_rule(rule).replace('rule ', f'rule priority={prio} ', 1)}'")
    return out


class FirewalldOwner:
    name = "firewalld"

    def render(self, snapshot, changes: Sequence[Change]):
        cmds = [c for ch in changes for c in commands_for(ch)]
        raise Refused("firewalld owns these rules; twinwall cannot prove what it would load. The change, "
                      "to review and run yourself (with --timeout=60 to try it): " + "; ".join(cmds))


OWNER = FirewalldOwner()
