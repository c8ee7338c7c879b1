"""Persistence, apart from runtime: written only once a transaction is confirmed, so a reboot
before the confirm is a rollback.

What is written is the applied artifact, never a live ``iptables-save`` (which would capture
Docker's chains, and whatever else a front-end put there since): for iptables, the persisted
file's tables with the candidate's tables replacing theirs, Docker's chains left out (Docker
rebuilds them when it starts); for nftables, the candidate's script as one marked block of
``nftables.conf``. Every file is written atomically (temp file, fsync, rename) after the old one
is kept as ``FILE.bak``, and checked with ``--test`` / ``nft -c`` first.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional

from twinwall.apply.backends import first_error_line, run_tool
from twinwall.errors import InputError

BEGIN = "# BEGIN twinwall (managed block: twinwall confirm rewrites it)"
END = "# END twinwall"


def under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def atomic_write(path: str, text: str) -> None:
    """Replace ``path`` with ``text``: the old file kept as ``path.bak``, the new one written to a
    temporary file, synced and renamed over it (a crash leaves the old or the new, never half)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    if os.path.exists(path):
        with open(path, "rb") as f:
            old = f.read()
        _write_synced(path + ".bak", old)
    _write_synced(path, text.encode())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    mode = 0o644  # (what netfilter-persistent and iptables-services write)
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def iptables_paths(root: str, family: str) -> List[str]:
    """Debian/Ubuntu's netfilter-persistent files, or RHEL's iptables-services files where the
    host has /etc/sysconfig and no /etc/iptables."""
    if os.path.isdir(under(root, "/etc/sysconfig")) and not os.path.isdir(under(root, "/etc/iptables")):
        return [under(root, "/etc/sysconfig/iptables" if family == "ipv4" else "/etc/sysconfig/ip6tables")]
    return [under(root, "/etc/iptables/rules.v4" if family == "ipv4" else "/etc/iptables/rules.v6")]


def nft_path(root: str) -> str:
    if os.path.isdir(under(root, "/etc/sysconfig")) and not os.path.exists(under(root, "/etc/nftables.conf")):
        return under(root, "/etc/sysconfig/nftables.conf")
    return under(root, "/etc/nftables.conf")


def persist_iptables(root: str, backend, tool: Callable[[str, str], str]) -> List[str]:
    from twinwall.apply.backends.iptables import join_tables, split_tables, strip_docker

    written = []
    for family, tables in backend.tables.items():
        for path in iptables_paths(root, family):
            merged = split_tables(_read(path))
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
            atomic_write(path, text)
            written.append(path)
    return written


def persist_nft(root: str, script: str) -> List[str]:
    path = nft_path(root)
    old = _read(path)
    block = f"{BEGIN}\n{script.rstrip()}\n{END}\n"
    if old is None:
        text = "#!/usr/sbin/nft -f\n" + block
    elif BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END + "\n") if (END + "\n") in rest else rest.partition(END)
        text = head + block + tail
    else:
        text = old + ("" if old.endswith("\n") else "\n") + block
    atomic_write(path, text)
    return [path]
