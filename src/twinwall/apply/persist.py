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
from typing import List, Optional


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
        write_synced(path + ".bak", old)
    write_synced(path, text.encode())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: str, data: bytes, mode_of: Optional[str] = None) -> None:
    """Temp file beside ``path``, fsync, rename: a crash leaves the old or the new, never half.
    The file keeps its mode (or takes that of ``mode_of``, e.g. the file it will replace)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    mode = 0o644  # (what netfilter-persistent and iptables-services write)
    try:
        mode = os.stat(mode_of or path).st_mode & 0o777
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
