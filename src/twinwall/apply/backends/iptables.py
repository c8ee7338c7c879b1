"""iptables-restore texts, per family, with the nft or legacy binaries.

Every table a candidate text names is replaced whole (iptables-restore commits at each
``COMMIT``: atomic per table, never across families); the transaction makes the two families
all-or-nothing by restoring the first when the second fails.
"""

from __future__ import annotations

import re
import shutil
from typing import Callable, Dict, List, Optional, Tuple

from twinwall.analysis.frontends import FIREWALLD, writer_of_chain
from twinwall.apply.backends import Backend, first_error_line, run_tool
from twinwall.errors import InputError, TwinwallError

FAMILIES = ("ipv4", "ipv6")
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
_COUNTERS = re.compile(r"\[\d+:\d+\]")
_TARGET = re.compile(r"\s-[jg]\s+(\S+)")


class RestoreFailed(TwinwallError):
    """A restore the kernel refused while loading (the candidate or a backup)."""


def tool(family: str, variant: str, kind: str) -> str:
    """``iptables-nft-restore``, ``ip6tables-legacy-save``, ``iptables-restore``..."""
    base = "iptables" if family == "ipv4" else "ip6tables"
    return f"{base}-{variant}-{kind}" if variant else f"{base}-{kind}"


# --------------------------------------------------------------------------------------------
# iptables-save text, table by table


def split_tables(text: Optional[str]) -> Dict[str, List[str]]:
    """table name -> its lines from ``*name`` to ``COMMIT`` (comments and blank lines left out)."""
    tables: Dict[str, List[str]] = {}
    current: Optional[List[str]] = None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), [])
            current.clear()
            current.append(line)
        elif current is not None:
            current.append(line)
            if line == "COMMIT":
                current = None
    return tables


def join_tables(tables: Dict[str, List[str]]) -> str:
    return "".join(line + "\n" for lines in tables.values() for line in lines)


def normalized(lines: List[str]) -> List[str]:
    """A table's lines with counters zeroed (they are not part of the rules)."""
    out = []
    for line in lines:
        if line.startswith("[") and "]" in line:  # `-c`-style "[pkts:bytes] -A ..."
            line = line[line.index("]") + 1:].strip()
        out.append(_COUNTERS.sub("[0:0]", line))
    return out


def chain_of(line: str) -> Optional[str]:
    if line.startswith(":"):
        return line[1:].split()[0]
    if line.startswith(("-A ", "-I ")):
        return line.split()[1]
    return None


def owner_of_chain(chain: str) -> Optional[str]:
    """The front-end that owns a chain (and rewrites it at will): Docker's chains but DOCKER-USER
    (the admin's), kube-proxy's, ufw's, fail2ban's. (firewalld's iptables chains are not kept
    from the live rules: firewalld reloads them from its own configuration.)"""
    owner = writer_of_chain(chain)
    if chain == "DOCKER-USER" or owner == FIREWALLD:
        return None
    return owner


def chain_lines(lines: List[str], chain: str) -> List[str]:
    return [l for l in lines if chain_of(l) == chain]


def keep_frontend_chains(candidate: Dict[str, List[str]], live: Dict[str, List[str]], family: str,
                         add_missing: bool = False) -> Dict[str, List[str]]:
    """The candidate's tables with every front-end-owned chain the live table holds taken as it
    is loaded now (Docker may have added a container's rules since the plan was made): the
    change must leave them exactly as they are. A candidate that would delete one is refused;
    with ``add_missing`` (a rollback to rules saved before Docker made the chain) it is added."""
    out: Dict[str, List[str]] = {}
    for name, lines in candidate.items():
        live_lines = live.get(name, [])
        owned = [c for c in dict.fromkeys(chain_of(l) for l in live_lines if l.startswith(":")) if c and owner_of_chain(c)]
        if not owned:
            out[name] = lines
            continue
        declared = {chain_of(l) for l in lines if l.startswith(":")}
        missing = [c for c in owned if c not in declared]
        if missing and add_missing:
            at = max(i for i, l in enumerate(lines) if l.startswith(("*", ":"))) + 1
            lines = lines[:at] + [l for l in live_lines if l.startswith(":") and chain_of(l) in missing] + lines[at:]
        elif missing:
            who = sorted({owner_of_chain(c) or "" for c in missing})
            raise InputError(
                f"the {family} candidate replaces table {name} without {', '.join(who)}'s chains "
                f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}: loading it would delete them; "
                f"the change belongs in chains of the admin's (DOCKER-USER, INPUT) or in the front-end")
        kept = [l for l in lines if not (l.startswith("-A ") and chain_of(l) in owned)]
        commit = kept.pop() if kept and kept[-1] == "COMMIT" else None
        for c in owned:
            kept.extend(l for l in live_lines if l.startswith("-A ") and chain_of(l) == c)
        if commit:
            kept.append(commit)
        out[name] = kept
    return out


def strip_docker(tables: Dict[str, List[str]]) -> Tuple[Dict[str, List[str]], List[str]]:
    """A ruleset to persist without Docker's chains (and the jumps to them): Docker rebuilds
    them when it starts, and a boot that restored stale copies first would publish containers'
    old addresses. DOCKER-USER (the admin's) stays."""
    stripped: List[str] = []
    out: Dict[str, List[str]] = {}
    for name, lines in tables.items():
        drop = {c for c in (chain_of(l) for l in lines if l.startswith(":")) if c and owner_of_chain(c) == "docker"}
        if not drop:
            out[name] = lines
            continue
        stripped.extend(f"{name} {c}" for c in sorted(drop))
        keep = []
        for l in lines:
            if chain_of(l) in drop:
                continue
            m = _TARGET.search(" " + l)
            if l.startswith("-A ") and m and m.group(1) in drop:
                continue
            keep.append(l)
        out[name] = keep
    return out, stripped


def empty_table(name: str) -> List[str]:
    chains = BUILTIN_CHAINS.get(name, ())
    return [f"*{name}"] + [f":{c} ACCEPT [0:0]" for c in chains] + ["COMMIT"]


# --------------------------------------------------------------------------------------------


class IptablesBackend(Backend):
    kind = "iptables"

    def __init__(self, candidate):
        super().__init__(candidate)
        self.variant = candidate.variant
        self.texts = {f: getattr(candidate, f) for f in FAMILIES if getattr(candidate, f) is not None}
        self.tables = {f: split_tables(t) for f, t in self.texts.items()}
        for f, tables in self.tables.items():
            if not tables:
                raise InputError(f"the {f} candidate holds no table (a '*filter' ... 'COMMIT' block)")

    def families(self) -> List[str]:
        return list(self.texts)

    def _tool(self, family: str, kind: str) -> str:
        name = tool(family, self.variant, kind)
        if shutil.which(name) is None:
            from twinwall.errors import CollectionError

            raise CollectionError(f"{name}: not installed")
        return name

    def validate(self) -> None:
        # table by table: `iptables-nft-restore --test` of several tables at once has passed
        # inputs a real restore refuses (Debian #960003)
        for family, tables in self.tables.items():
            restore = self._tool(family, "restore")
            for name, lines in tables.items():
                res = run_tool([restore, "--test"], input="\n".join(lines) + "\n")
                if res.returncode != 0:
                    raise InputError(f"{restore} --test refuses the {family} candidate's table {name}: {first_error_line(res)}")

    def save(self) -> Dict[str, str]:
        out = {}
        for family in self.texts:
            save = self._tool(family, "save")
            res = run_tool([save])
            if res.returncode != 0:
                raise RestoreFailed(f"{save}: {first_error_line(res)}")
            out[family] = res.stdout
        return out

    def prepared(self, saved: Dict[str, str]) -> Dict[str, Dict[str, List[str]]]:
        """The tables to load: the candidate's, with the front-ends' chains as they are now."""
        return {f: keep_frontend_chains(t, split_tables(saved.get(f)), f) for f, t in self.tables.items()}

    def already_loaded(self, saved: Dict[str, str]) -> bool:
        for family, tables in self.prepared(saved).items():
            live = split_tables(saved.get(family))
            for name, lines in tables.items():
                if name not in live or normalized(canonical(self, family, lines)) != normalized(live[name]):
                    return False
        return True

    def _restore(self, family: str, text: str) -> None:
        restore = self._tool(family, "restore")
        res = run_tool([restore], input=text)
        if res.returncode != 0:
            raise RestoreFailed(f"{restore}: {first_error_line(res)}")

    def load(self, saved: Dict[str, str], fail_hook=None) -> None:
        done: List[str] = []
        for family, tables in self.prepared(saved).items():
            try:
                if fail_hook:
                    fail_hook(family)
                self._restore(family, join_tables(tables))
            except RestoreFailed as exc:
                # the failed family may have committed some of its tables: put it back too
                errors = []
                for f in done + [family]:
                    try:
                        self.restore_family(f, saved.get(f, ""))
                    except TwinwallError as again:
                        errors.append(str(again))
                extra = f"; restoring the saved rules failed too: {'; '.join(errors)}" if errors else ""
                raise RestoreFailed(f"loading the {family} candidate failed ({exc}); "
                                    f"{' and '.join(done + [family])} put back as they were{extra}") from None
            done.append(family)

    def restore_family(self, family: str, saved_text: str) -> None:
        """The tables the candidate replaced, as saved (those it created: emptied, and removed
        where iptables-nft can), with the front-ends' chains as they are loaded now: Docker may
        have started a container since the apply, and a rollback must not take it away."""
        saved_tables = split_tables(saved_text)
        touched = list(self.tables.get(family, {}))
        absent = [name for name in touched if name not in saved_tables]
        restore = {name: saved_tables[name] if name in saved_tables else empty_table(name) for name in touched}
        current = self._current(family)
        if current is not None:
            restore = keep_frontend_chains(restore, current, family, add_missing=True)
        if restore:
            self._restore(family, join_tables(restore))
        if absent and self._is_nft():
            # a table the candidate created did not exist before: iptables-nft can remove it
            nft_family = "ip" if family == "ipv4" else "ip6"
            for name in absent:
                if not any(l.startswith(":") and owner_of_chain(chain_of(l) or "") for l in restore[name]):
                    run_tool(["nft", "delete", "table", nft_family, name])

    def _current(self, family: str) -> Optional[Dict[str, List[str]]]:
        res = run_tool([self._tool(family, "save")])
        return split_tables(res.stdout) if res.returncode == 0 else None

    def _is_nft(self) -> bool:
        if self.variant:
            return self.variant == "nft"
        res = run_tool([self._tool("ipv4", "restore"), "--version"])
        return "nf_tables" in (res.stdout + res.stderr)

    def restore(self, saved: Dict[str, str]) -> None:
        errors = []
        for family in self.texts:
            try:
                self.restore_family(family, saved.get(family, ""))
            except TwinwallError as exc:
                errors.append(str(exc))
        if errors:
            raise RestoreFailed("; ".join(errors))

    def persist(self, root: str) -> List[str]:
        return persist_iptables(root, self, self._tool)


def canonical(backend: IptablesBackend, family: str, lines: List[str]) -> List[str]:
    """A table as iptables-save prints it back once loaded (``--syn`` becomes ``--tcp-flags``,
    ``-m state`` stays, match order...): loaded in a scratch network namespace of its own. Falls
    back to the text as given when that cannot be done (it then compares as written)."""
    restore = backend._tool(family, "restore")
    save = backend._tool(family, "save")
    name = lines[0][1:] if lines and lines[0].startswith("*") else "filter"
    script = f'{restore} && exec {save} -t "$1"'
    res = run_tool(["unshare", "--net", "sh", "-c", script, "sh", name], input="\n".join(lines) + "\n")
    if res.returncode != 0:
        return lines
    return split_tables(res.stdout).get(name, lines)


def persist_iptables(root: str, backend, tool: Callable[[str, str], str]) -> List[str]:
    """Write the backend's confirmed tables into the distribution's iptables files under root
    (merged with what is there, Docker's chains left out), each checked with restore --test.
    Here, not in apply.persist: it is the iptables backend's format (persist imports no backend)."""
    from twinwall.apply import persist

    written = []
    for family, tables in backend.tables.items():
        for path in persist.iptables_paths(root, family):
            merged = split_tables(persist._read(path))
            merged.update(tables)
            merged, stripped = strip_docker(merged)
            text = "# written by twinwall confirm: the confirmed ruleset\n"
            if stripped:
                text += "# Docker's chains left out (Docker rebuilds them): " + ", ".join(stripped) + "\n"
            text += join_tables(merged)
            restore = tool(family, "restore")
            res = run_tool([restore, "--test"], input=text)
            if res.returncode != 0:
                raise InputError(f"{path}: the ruleset to persist does not pass {restore} --test "
                                 f"({first_error_line(res)}); nothing written")
            persist.atomic_write(path, text)
            written.append(path)
    return written
