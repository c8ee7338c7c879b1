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


# ---------------------------------------------------------------------------------------------
# the host as it would be: what the proof and the lockout guard evaluate

CANDIDATE_SOURCE = {"ipv4": "candidate iptables-restore", "ipv6": "candidate ip6tables-restore",
                    "nft": "candidate nft -j list ruleset"}


def scratch_available() -> bool:
    """Whether a throw-away network namespace can be made here (root, unshare): the candidate is
    then loaded there and read back as the kernel prints it, never into the host itself."""
    import os
    import shutil

    return os.geteuid() == 0 and shutil.which("unshare") is not None


def _in_scratch(script: str, files: Dict[str, str], timeout: float = 60.0) -> str:
    """Run ``script`` (sh) in a new, empty network namespace (``unshare --net``), with ``files``
    written to a temporary directory ($D); return its standard output. Nothing it loads
    outlives it: the namespace goes with the process."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="twinwall-scratch-") as d:
        for name, text in files.items():
            with open(f"{d}/{name}", "w", encoding="utf-8") as fh:
                fh.write(text)
        try:
            res = subprocess.run(["unshare", "--net", "--", "sh", "-c", script, "sh", d],
                                 capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InputError(f"cannot load the candidate in a scratch namespace: {exc}") from None
    if res.returncode != 0:
        err = " ".join(res.stderr.split())[:300]
        raise InputError(f"the candidate does not load: {err}")
    return res.stdout


def restore_tool(family: str, variant: str) -> str:
    from twinwall.apply.backends.iptables import tool  # (the transaction's own naming)

    return tool(family, variant, "restore")


def roundtrip_iptables(family: str, variant: str, text: str) -> str:
    """``text`` loaded with iptables-restore in a scratch namespace and read back with
    iptables-save: the candidate as the kernel holds it (a rule the tool rejects fails here)."""
    tool = restore_tool(family, variant)
    save = tool.replace("-restore", "-save")
    return _in_scratch(f'{tool} < "$1/rules" && {save}', {"rules": text})


def roundtrip_nft(current_json: Optional[str], script: str) -> str:
    """The current native ruleset (``nft -j`` JSON) plus the candidate script, loaded in a
    scratch namespace in one go, read back with ``nft -j list ruleset``."""
    files = {"candidate.nft": script}
    load = ""
    if current_json and '"table"' in current_json:
        files["current.json"] = current_json
        load = 'nft -j -f "$1/current.json" && '
    return _in_scratch(load + 'nft -f "$1/candidate.nft" && nft -j list ruleset', files)


def candidate_snapshot(snapshot, candidate: "Candidate", scratch: Optional[bool] = None):
    """A copy of ``snapshot`` whose rulesets are the ones ``candidate`` would leave loaded.

    iptables texts replace the family's iptables-save dump (read back from a scratch namespace
    when one can be made: ``scratch`` None decides by :func:`scratch_available`); an nft script
    is loaded on top of the current native ruleset in a scratch namespace (the only way to know
    what nft makes of it), whose ``nft -j`` replaces the snapshot's."""
    import copy

    from twinwall.model import RulesetText

    snap = copy.deepcopy(snapshot)
    use_scratch = scratch_available() if scratch is None else scratch
    for family in ("ipv4", "ipv6"):
        text = getattr(candidate, family)
        if text is None:
            continue
        if use_scratch:
            text = roundtrip_iptables(family, candidate.variant, text)
        old = [r for r in snap.rulesets if r.format == "iptables-save" and r.family == family]
        backend = old[0].backend if old else (candidate.variant or "nft")
        snap.rulesets = [r for r in snap.rulesets if r not in old]
        snap.rulesets.append(RulesetText(family, "iptables-save", backend, CANDIDATE_SOURCE[family], text))
    if candidate.nft:
        if not use_scratch:
            raise InputError("an nft candidate can only be evaluated after loading it in a scratch network "
                             "namespace: run as root (unshare --net)")
        old = [r for r in snap.rulesets if r.format == "nft-json"]
        current = old[0].text if old else None
        text = roundtrip_nft(current, candidate.nft)
        snap.rulesets = [r for r in snap.rulesets if r not in old]
        snap.rulesets.append(RulesetText("inet", "nft-json", "nft", CANDIDATE_SOURCE["nft"], text))
    return snap
