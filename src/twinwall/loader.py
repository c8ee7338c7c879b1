"""From a snapshot's ruleset texts to parsed ``Ruleset`` models, one list per family.

This is the only place that knows which parser reads which dump format.
"""

from __future__ import annotations

from importlib import import_module
from typing import Dict, FrozenSet, List, Sequence, Tuple, Union

from twinwall.errors import InputError
from twinwall.model import FAMILIES, FAMILY_LABEL, IPV4, HostSnapshot, RulesetText
from twinwall.netfilter.ruleset import Ruleset


def ruleset_label(text: RulesetText) -> str:
    backend = f" ({text.backend})" if text.backend not in ("", "unknown") else ""
    return f"{text.source}{backend}"


def import_parsers(snapshot: HostSnapshot) -> None:
    """Import the parsers the snapshot's dumps need, ahead of load_rulesets: before a fork,
    so that each family's process does not import them again (3-4 ms on each, at the start
    of both)."""
    formats = {text.format for text in snapshot.rulesets}
    if "iptables-save" in formats:
        import_module("twinwall.parsers.iptables_save")
    if "nft-json" in formats:
        _nft_parser()
    if snapshot.ipsets:
        import_module("twinwall.parsers.ipset_save")


def load_rulesets(
    snapshot: HostSnapshot, keep_text: bool = True, families: Sequence[str] = FAMILIES,
    stretches: Union[bool, FrozenSet[str]] = False,
) -> Dict[str, List[Ruleset]]:
    """Parse every dump of the snapshot. Keys: "ipv4", "ipv6".

    ``keep_text=False`` empties each dump's text once parsed (the model keeps what it needs):
    for a 100k-rule host that halves peak memory. ``families`` limits the work to some
    families (the others come back empty). ``stretches``: an iptables-save dump's long
    stretches of source jumps are kept as such (parse_iptables_save), for the audit's walk; a
    set of actions: the stretches of those only (the diff's)."""
    out: Dict[str, List[Ruleset]] = {f: [] for f in FAMILIES}
    for text in snapshot.rulesets:
        if text.family not in families and text.family != "inet":
            continue
        if text.format == "iptables-save":
            from twinwall.parsers.iptables_save import parse_iptables_save

            if text.family not in FAMILIES:
                raise InputError(f"{text.source}: an iptables-save dump must be ipv4 or ipv6, not {text.family}")
            out[text.family].append(parse_iptables_save(text.text, text.family, ruleset_label(text), stretches))
        elif text.format == "nft-json":
            parser = _nft_parser()
            for rs in parser(text.text, ruleset_label(text), netlink=text.netlink):
                if rs.family in families:
                    out[rs.family].append(rs)
        else:
            raise InputError(f"{text.source}: unknown ruleset format {text.format!r}")
        if not keep_text and (text.family != "inet" or set(families) >= set(FAMILIES)):
            text.text = ""
            text.netlink = None
    if snapshot.ipsets:
        from twinwall.parsers.ipset_save import parse_ipset_save

        sets = parse_ipset_save(snapshot.ipsets)
        for family_rulesets in out.values():
            for rs in family_rulesets:
                rs.ipsets = sets  # (rules compile when first walked: after this)
    return out


def unread_tables(family: str, rulesets: Sequence[Ruleset]) -> List[Tuple[str, str]]:
    """(nft dump source, table label) of each iptables-nft table of ``family`` that an ``nft -j``
    dump left out (its xt matches come without their arguments) and no iptables-save dump of
    the family supplies: rules no verdict of that family can see."""
    from_save = {name for rs in rulesets if rs.kind == "iptables" for name in rs.tables}
    own = "ip" if family == IPV4 else "ip6"
    out = []
    for rs in rulesets:
        for label in getattr(rs, "excluded_tables", ()):
            nft_family, _, name = label.partition(" ")
            if nft_family in ("inet", own) and name not in from_save:
                out.append((rs.source, label))
    return out


def unread_table_note(family: str, label: str) -> str:
    tool = "iptables" if family == IPV4 else "ip6tables"
    return (f"table {label} holds iptables-nft rules that nft -j prints without their matches: the "
            f"{FAMILY_LABEL[family]} verdicts leave it out. Give its {tool}-save output too "
            f"(--{tool} FILE), or run on the live host")


def _nft_parser():
    from twinwall.parsers.nft_json import parse_nft_json  # (imported on first use: it is large)

    return parse_nft_json
