"""One backend per ruleset kind (firewalld's design): each knows how to check a candidate,
save what it would replace, load it atomically, put the saved rules back, and what a reboot
should load once the change is confirmed.

* ``iptables``: iptables-restore texts per family (nft or legacy binaries);
* ``nft``: one ``nft -f`` script touching only the tables it names;
* ``commands``: a front-end's own commands (ufw, firewall-cmd) with their undo.
"""

from __future__ import annotations

import subprocess
from typing import Dict, List, Optional, Sequence

from twinwall.errors import CollectionError

TIMEOUT = 60.0


def run_tool(argv: Sequence[str], input: Optional[str] = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a firewall tool; a missing binary is a CollectionError naming it (never a traceback)."""
    try:
        return subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise CollectionError(f"{argv[0]}: not installed") from None
    except subprocess.TimeoutExpired:
        raise CollectionError(f"{' '.join(argv)}: no answer after {timeout:.0f}s") from None


def first_error_line(res: subprocess.CompletedProcess) -> str:
    lines = [l.strip() for l in (res.stderr + "\n" + res.stdout).splitlines() if l.strip()]
    # iptables-restore prints "iptables-restore v1.8.9 (nf_tables): " then the reason
    meaningful = [l for l in lines if not l.endswith("):") and not l.endswith(": ")]
    return "; ".join((meaningful or lines or [f"exit code {res.returncode}"])[:2])


def make_backend(candidate):
    """The backend object for a candidate."""
    if candidate.backend == "iptables":
        from twinwall.apply.backends.iptables import IptablesBackend

        return IptablesBackend(candidate)
    if candidate.backend == "nft":
        from twinwall.apply.backends.nft import NftBackend

        return NftBackend(candidate)
    from twinwall.apply.backends.commands import CommandsBackend

    return CommandsBackend(candidate)


class Backend:
    """What the transaction asks of every backend (see the module docstring)."""

    kind = ""

    def __init__(self, candidate):
        self.candidate = candidate

    def families(self) -> List[str]:
        return self.candidate.families()

    def validate(self) -> None:
        """Raise InputError when the kernel would refuse the candidate; changes nothing."""

    def save(self) -> Dict[str, str]:
        """The current rules this candidate would replace: backup name -> text."""
        return {}

    def already_loaded(self, saved: Dict[str, str]) -> bool:
        """Whether loading the candidate would change nothing."""
        return False

    def load(self, saved: Dict[str, str]) -> None:
        """Load the candidate, all or nothing: on failure put ``saved`` back, then raise."""
        raise NotImplementedError

    def restore(self, saved: Dict[str, str]) -> None:
        """Put the saved rules back."""
        raise NotImplementedError

    def persist(self, root: str) -> List[str]:
        """Make the confirmed change survive a reboot; returns the files written."""
        return []
