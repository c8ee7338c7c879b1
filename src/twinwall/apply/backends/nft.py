"""Native nftables: one ``nft -f`` script, one kernel transaction for every table and family
it names. A candidate script touches only its own tables (twinwall's, a policy's); those
tables, as they are now, are what a rollback puts back (``flush ruleset``: all of it)."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from twinwall.apply.backends import Backend, first_error_line, run_tool
from twinwall.errors import InputError, TwinwallError

_FAMILIES = "ip|ip6|inet|arp|bridge|netdev"
_TABLE = re.compile(rf"^\s*(?:(?:add|create|flush|delete|destroy|list)\s+)?table\s+(?:({_FAMILIES})\s+)?([A-Za-z0-9_.\-]+)", re.M)
_OBJECT = re.compile(rf"^\s*(?:add|create|insert|replace|delete|destroy|flush)\s+(?:rule|chain|set|map|element|counter|quota|flowtable)\s+(?:({_FAMILIES})\s+)?([A-Za-z0-9_.\-]+)", re.M)
_FLUSH_RULESET = re.compile(r"^\s*flush\s+ruleset\b", re.M)
SAVED = "nft"


class NftFailed(TwinwallError):
    """nft refused a script while loading it."""


def touched_tables(script: str) -> Tuple[bool, List[Tuple[str, str]]]:
    """(whether the script flushes the whole ruleset, [(family, table)...] it names)."""
    seen: Dict[Tuple[str, str], None] = {}
    for rx in (_TABLE, _OBJECT):
        for m in rx.finditer(script):
            seen[(m.group(1) or "ip", m.group(2))] = None
    return bool(_FLUSH_RULESET.search(script)), list(seen)


def nft(args: List[str], script: Optional[str] = None):
    return run_tool(["nft", *args], input=script)


class NftBackend(Backend):
    kind = "nft"

    def __init__(self, candidate):
        super().__init__(candidate)
        self.script = candidate.nft or ""
        if not self.script.strip():
            raise InputError("the nft candidate holds no script")
        if not self.script.endswith("\n"):
            self.script += "\n"
        self.whole, self.tables = touched_tables(self.script)

    def families(self) -> List[str]:
        fams = {f for f, _ in self.tables}
        out = []
        if self.whole or fams & {"ip", "inet"}:
            out.append("ipv4")
        if self.whole or fams & {"ip6", "inet"}:
            out.append("ipv6")
        return out or ["ipv4", "ipv6"]

    def validate(self) -> None:
        res = nft(["-c", "-f", "-"], self.script)
        if res.returncode != 0:
            raise InputError(f"nft -c refuses the candidate: {first_error_line(res)}")

    def save(self) -> Dict[str, str]:
        """One script that puts every touched table back as it is (a table that does not exist
        yet: removed again)."""
        if self.whole:
            res = nft(["list", "ruleset"])
            if res.returncode != 0:
                raise NftFailed(f"nft list ruleset: {first_error_line(res)}")
            return {SAVED: "flush ruleset\n" + res.stdout}
        parts = []
        for family, name in self.tables:
            parts.append(f"add table {family} {name}\ndelete table {family} {name}\n")
            res = nft(["list", "table", family, name])
            if res.returncode == 0:
                parts.append(res.stdout if res.stdout.endswith("\n") else res.stdout + "\n")
        return {SAVED: "".join(parts)}

    def listing(self) -> Dict[Tuple[str, str], Optional[str]]:
        """The touched tables as nft lists them now (None: absent)."""
        out: Dict[Tuple[str, str], Optional[str]] = {}
        for family, name in self.tables:
            res = nft(["list", "table", family, name])
            out[(family, name)] = res.stdout if res.returncode == 0 else None
        return out

    def scratch(self, saved: Dict[str, str], json: bool = False) -> Optional[str]:
        """What the touched tables become once the candidate is loaded, from a scratch network
        namespace holding the saved tables first: their ``nft list`` texts, or with ``json``
        the ``nft -j list ruleset`` of that namespace. None when it cannot be done."""
        if self.whole and not json:
            return None
        listing = "nft -j list ruleset" if json else " ; ".join(
            f"echo '### {f} {n}'; nft list table {f} {n} 2>/dev/null" for f, n in self.tables)
        res = run_tool(["unshare", "--net", "sh", "-c", f"nft -f - && {{ {listing} ; }}"],
                       input=saved.get(SAVED, "") + self.script)
        return res.stdout if res.returncode == 0 else None

    def already_loaded(self, saved: Dict[str, str]) -> bool:
        after = self.scratch(saved)
        if after is None:
            return False
        blocks: Dict[Tuple[str, str], Optional[str]] = {}
        current = None
        for line in after.splitlines(keepends=True):
            if line.startswith("### "):
                f, n = line[4:].split()
                current = (f, n)
                blocks[current] = None
            elif current is not None:
                blocks[current] = (blocks[current] or "") + line
        return blocks == self.listing()

    def load(self, saved: Dict[str, str], fail_hook=None) -> None:
        if fail_hook:
            fail_hook("nft")
        res = nft(["-f", "-"], self.script)
        if res.returncode != 0:
            # one transaction: nothing was changed
            raise NftFailed(f"nft -f refused the candidate, nothing changed: {first_error_line(res)}")

    def restore(self, saved: Dict[str, str]) -> None:
        res = nft(["-f", "-"], saved.get(SAVED, ""))
        if res.returncode != 0:
            raise NftFailed(f"nft -f of the saved tables: {first_error_line(res)}")

    def persist(self, root: str) -> List[str]:
        from twinwall.apply import persist

        return persist.persist_nft(root, self.script)
