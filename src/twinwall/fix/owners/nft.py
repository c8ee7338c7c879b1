"""Native nftables: the changes go into a table of twinwall's own, ``table inet twinwall``,
never into another owner's table (firewalld's, Docker's, the admin's own).

A packet must be accepted by every base chain on its hook, so this table can only take away:
an ``accept`` in it ends its own chain, and the other tables still decide. That is exactly what
mirror, close, block-ipv6 and baseline need (each drops what it must, accepting first what must
pass); a strategy that needs to let more in (accept-new) cannot be written here and its proof
fails. The base chains sit at ``priority filter - 10`` so that their log rules see a packet
before another table drops it. A chain policy the strategy sets becomes a last ``meta nfproto
... drop`` rule of the family.
"""

from __future__ import annotations

from typing import List, Sequence

from twinwall.apply.candidate import Candidate
from twinwall.fix.model import BEFORE, BOTTOM, TOP, Change
from twinwall.fix.owners.iptables import summary

TABLE = "inet twinwall"
HOOKS = {"INPUT": "input", "OUTPUT": "output", "FORWARD": "forward"}
PRIORITY = "filter - 10"


def table_script() -> str:
    chains = "".join(f"\tchain {h} {{\n\t\ttype filter hook {h} priority {PRIORITY}; policy accept;\n\t}}\n"
                     for h in HOOKS.values())
    return f"table {TABLE} {{\n{chains}}}\n"


class NftOwner:
    name = "nft"

    def render(self, snapshot, changes: Sequence[Change]) -> Candidate:
        from twinwall.fix.model import Refused

        tops: List[tuple] = []  # (chain, rank, order, statement): the final order at the top
        adds: List[str] = []
        policies: List[str] = []  # every change's policy drop goes after every change's rules
        for ch in changes:
            if ch.replace_table:
                ch.note += " (in table inet twinwall: the other tables are left as they are)"
            if ch.place in (BEFORE, BOTTOM):
                # where the rule would go in the admin's chain does not apply to this table
                ch.fallback = ""
                ch.note += (" (in table inet twinwall: at the top of its chain, before what earlier plans put there;"
                            " these rules match only new connections from elsewhere)")
            mine_top: List[str] = []
            mine_add: List[str] = []
            mine_policy: List[str] = []
            for rule in ch.rules:
                hook = HOOKS.get(rule.chain or ch.chain)
                if hook is None:
                    raise Refused(f"chain {rule.chain} has no twinwall base chain")
                if ch.place == TOP and rule.rank < 5 or ch.place in (BEFORE, BOTTOM):
                    # a service's rules (mirror, close) go before anything this table already
                    # holds (an earlier plan's accepts and its final drop), after the top block
                    rank = rule.rank if ch.place == TOP else 5
                    tops.append((hook, rank, len(tops), f"insert rule {TABLE} {hook} {rule.nft()}"))
                    mine_top.append(tops[-1][3])
                else:
                    mine_add.append(f"add rule {TABLE} {hook} {rule.nft()}")
            fam = "ipv4" if ch.family == "ipv4" else "ipv6"
            for chain, policy in ch.policies.items():
                mine_policy.append(f"add rule {TABLE} {HOOKS[chain]} meta nfproto {fam} {policy.lower()}")
            ch.owner = self.name
            # each insert goes to the top: listed in the order to run them, the last rule first
            ch.commands = [f"nft {c}" for c in list(reversed(mine_top)) + mine_add + mine_policy]
            ch.rules_text = "\n".join(mine_top + mine_add + mine_policy)
            adds += mine_add
            policies += mine_policy
        # each insert goes to the top: the rule meant to end first is inserted last
        inserts = [t[3] for t in sorted(tops, key=lambda t: (t[1], t[2]), reverse=True)]
        script = table_script() + "".join(l + "\n" for l in inserts + adds + policies)
        return Candidate("nft", nft=script, summary=summary(changes))


OWNER = NftOwner()
