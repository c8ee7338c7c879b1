"""A ``Candidate``: the complete ruleset a transaction would load, and what it is for.

The fixer (``twinwall fix``) and the policy compiler (``twinwall policy apply``) produce one;
the transaction (``twinwall.apply.transaction``) validates, guards, loads, confirms and persists
it. Keeping it a plain value (texts, not parsed rules) means the proof, the lockout guard and
the rollback state all see exactly what the kernel will be given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from twinwall.errors import InputError

BACKENDS = ("iptables", "nft", "commands")


@dataclass
class Candidate:
    # "iptables": ``ipv4``/``ipv6`` are whole iptables-restore inputs (every table they name is
    #   replaced, atomically, per table); None leaves that family alone.
    # "nft": ``nft`` is one `nft -f` script that touches only the tables it names (twinwall's own
    #   table, or a policy's), loaded in one transaction for both families.
    # "commands": a front-end owns the rules (ufw, firewall-cmd); ``commands`` make the change and
    #   ``undo_commands`` revert it; the rules the commands produce are still proved and guarded
    #   through ``ipv4``/``ipv6``/``nft`` when the planner can predict them.
    backend: str
    # for "iptables": which binaries load it: "nft" (iptables-nft-restore), "legacy"
    # (iptables-legacy-restore) or "" (whatever `iptables-restore` is on the host)
    variant: str = ""
    ipv4: Optional[str] = None
    ipv6: Optional[str] = None
    nft: Optional[str] = None
    commands: List[List[str]] = field(default_factory=list)
    undo_commands: List[List[str]] = field(default_factory=list)
    # one line for the transaction log and `twinwall transaction`
    summary: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"candidate backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.variant not in ("", "nft", "legacy"):
            raise InputError(f"iptables variant must be nft, legacy or empty, not {self.variant!r}")

    def families(self) -> List[str]:
        """The families this candidate changes (an nft script may change both)."""
        if self.backend == "iptables":
            return [f for f, text in (("ipv4", self.ipv4), ("ipv6", self.ipv6)) if text is not None]
        return ["ipv4", "ipv6"]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Candidate":
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as exc:
            raise InputError(f"not a twinwall candidate: {exc}") from None
