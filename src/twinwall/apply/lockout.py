"""The lockout guard: evaluate the candidate ruleset on the admin's own connections before
anything is loaded.

The admin's connections are found three ways, in this network namespace only (a session to the
machine outside it is not what the namespace's rules decide): ``SSH_CONNECTION`` of this process
or of an ancestor (sudo drops it from the environment, the login shell above still has it); the
TCP sockets of an ``sshd`` ancestor; and every established connection to an SSH port (the ports
sshd listens on, and 22). An IPv4-mapped ``::ffff:a.b.c.d`` peer of an IPv6 socket travels as
IPv4, and IPv4's rules decide it.

For each, twinwall's evaluator (the one the audit uses) walks: the connection's established
packets in and out, and a new connection from the same source to the same SSH port (its SYN in,
the answers out). Every packet of those must be accepted.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set, Tuple

from twinwall.errors import InputError

SSH_PROCESSES = ("sshd", "sshd-session")
DEFAULT_SSH_PORT = 22
TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"


@dataclass(frozen=True)
class Connection:
    family: str  # the family its packets travel in ("ipv4" for an IPv4-mapped peer)
    local: str
    lport: int
    peer: str
    pport: int
    how: str = ""  # how it was found

    def key(self) -> Tuple:
        return (self.family, self.local, self.lport, self.peer, self.pport)

    def __str__(self) -> str:
        def hp(a, p):
            return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"

        return f"tcp {hp(self.peer, self.pport)} -> {hp(self.local, self.lport)}"


# --------------------------------------------------------------------------------------------
# finding them


def _unmap(address: str) -> Tuple[str, str]:
    """(family, address) with an IPv4-mapped IPv6 address as the IPv4 address it stands for."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return "ipv4", str(ip.ipv4_mapped)
    return ("ipv4" if ip.version == 4 else "ipv6"), str(ip)


def _hex_address(text: str) -> str:
    raw = bytes.fromhex(text)
    # /proc/net/tcp{,6} print each 32-bit word in host byte order
    words = [raw[i:i + 4][::-1] if _LITTLE else raw[i:i + 4] for i in range(0, len(raw), 4)]
    return str(ipaddress.ip_address(b"".join(words)))


_LITTLE = __import__("sys").byteorder == "little"


@dataclass(frozen=True)
class TcpSocket:
    local: str
    lport: int
    peer: str
    pport: int
    state: str
    inode: int


def read_tcp_sockets(proc_net: str = "/proc/net") -> List[TcpSocket]:
    out = []
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc_net, name)) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            try:
                la, lp = parts[1].split(":")
                ra, rp = parts[2].split(":")
                out.append(TcpSocket(_hex_address(la), int(lp, 16), _hex_address(ra), int(rp, 16), parts[3], int(parts[9])))
            except ValueError:
                continue
    return out


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _comm(pid: int) -> str:
    return (_read(f"/proc/{pid}/comm") or b"").decode(errors="replace").strip()


def _ppid(pid: int) -> Optional[int]:
    stat = (_read(f"/proc/{pid}/stat") or b"").decode(errors="replace")
    try:
        return int(stat.rpartition(")")[2].split()[1])
    except (IndexError, ValueError):
        return None


def _same_netns(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def ancestors(pid: Optional[int] = None) -> List[int]:
    out = []
    pid = pid or os.getpid()
    seen: Set[int] = set()
    while pid and pid > 1 and pid not in seen:
        seen.add(pid)
        out.append(pid)
        pid = _ppid(pid)
    return out


def _socket_inodes(pid: int) -> Set[int]:
    inodes: Set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(int(m.group(1)))
    return inodes


def _ssh_connection_values(pids: Iterable[int]) -> List[Tuple[str, str]]:
    """SSH_CONNECTION of this process and of its ancestors, with where it was read."""
    out = []
    if os.environ.get("SSH_CONNECTION"):
        out.append((os.environ["SSH_CONNECTION"], "SSH_CONNECTION"))
    for pid in pids:
        env = _read(f"/proc/{pid}/environ") or b""
        for item in env.split(b"\0"):
            if item.startswith(b"SSH_CONNECTION="):
                out.append((item.split(b"=", 1)[1].decode(errors="replace"), f"SSH_CONNECTION of {_comm(pid)}[{pid}]"))
    return out


def ssh_listen_ports(sockets: List[TcpSocket]) -> Set[int]:
    """The ports sshd processes of this namespace listen on, and 22."""
    listening = {s.inode: s.lport for s in sockets if s.state == TCP_LISTEN}
    ports = {DEFAULT_SSH_PORT}
    if not listening:
        return ports
    for name in os.listdir("/proc"):
        if not name.isdigit() or _comm(int(name)) not in SSH_PROCESSES or not _same_netns(int(name)):
            continue
        for inode in _socket_inodes(int(name)):
            if inode in listening:
                ports.add(listening[inode])
    return ports


def admin_connections() -> List[Connection]:
    """Every connection that may be the admin's, in this network namespace."""
    sockets = read_tcp_sockets()
    established = [s for s in sockets if s.state == TCP_ESTABLISHED]
    by_tuple = {(_unmap(s.local)[1], s.lport, _unmap(s.peer)[1], s.pport): s for s in established}
    found: Dict[Tuple, Connection] = {}

    def add(s: TcpSocket, how: str) -> None:
        fam, local = _unmap(s.local)
        _, peer = _unmap(s.peer)
        c = Connection(fam, local, s.lport, peer, s.pport, how)
        found.setdefault(c.key(), c)

    chain = ancestors()
    for value, how in _ssh_connection_values(chain):
        parts = value.split()
        if len(parts) != 4:
            continue
        try:
            peer, pport, local, lport = _unmap(parts[0])[1], int(parts[1]), _unmap(parts[2])[1], int(parts[3])
        except ValueError:
            continue
        s = by_tuple.get((local, lport, peer, pport))
        if s is not None:  # (a session to another namespace is not decided by these rules)
            add(s, how)
    by_inode = {s.inode: s for s in established}
    for pid in chain:
        if _comm(pid) in SSH_PROCESSES and _same_netns(pid):
            for inode in _socket_inodes(pid):
                if inode in by_inode:
                    add(by_inode[inode], f"socket of {_comm(pid)}[{pid}], an ancestor of this process")
    ports = ssh_listen_ports(sockets)
    for s in established:
        if s.lport in ports:
            add(s, f"established to SSH port {s.lport}")
    return list(found.values())


# --------------------------------------------------------------------------------------------
# the candidate as the evaluator sees it


def after_snapshot(backend, saved: Dict[str, str]):
    """The live host's snapshot with the candidate's rules in place of what they replace; None
    when nothing predicts the rules (a commands candidate without predicted texts)."""
    from twinwall.apply.candidate import Candidate
    from twinwall.sources.host import collect_host

    snap = collect_host(include_rules=True)
    kind = backend.kind
    cand = backend.candidate
    if kind == "commands":
        if cand.ipv4 is None and cand.ipv6 is None and not cand.nft:
            return None
        from twinwall.apply.backends import make_backend

        if cand.nft:
            sub = make_backend(Candidate("nft", nft=cand.nft))
            return _with_nft(snap, sub, sub.save())
        sub = make_backend(Candidate("iptables", variant=cand.variant, ipv4=cand.ipv4, ipv6=cand.ipv6))
        return _with_iptables(snap, sub, sub.save())
    if kind == "nft":
        return _with_nft(snap, backend, saved)
    return _with_iptables(snap, backend, saved)


def _with_iptables(snap, backend, saved):
    from twinwall.apply.backends.iptables import join_tables, split_tables
    from twinwall.model import RulesetText

    for family, tables in backend.prepared(saved).items():
        texts = [t for t in snap.rulesets if t.format == "iptables-save" and t.family == family]
        chosen = [t for t in texts if not backend.variant or t.backend == backend.variant]
        merged = split_tables(saved.get(family))
        merged.update(tables)
        if chosen:
            chosen[0].text = join_tables(merged)
            chosen[0].source += " with the candidate"
        else:
            snap.rulesets.append(RulesetText(family, "iptables-save", backend.variant or "nft", "candidate", join_tables(merged)))
    return snap


def _with_nft(snap, backend, saved):
    from twinwall.model import RulesetText

    after = backend.scratch(saved, json=True)
    if after is None:
        raise InputError("the nft candidate could not be loaded in a scratch network namespace to check it "
                         "against the admin's connections (--allow-lockout to skip that check)")
    new_items = [i for i in json.loads(after).get("nftables", []) if "metainfo" not in i]
    touched = set(backend.tables)
    texts = [t for t in snap.rulesets if t.format == "nft-json"]
    if backend.whole:
        snap.rulesets = [t for t in snap.rulesets if not (t.format == "iptables-save" and t.backend == "nft")]
        kept: List = []
    elif texts:
        kept = [i for i in json.loads(texts[0].text).get("nftables", []) if not _in_tables(i, touched)]
    else:
        kept = []
    text = json.dumps({"nftables": kept + new_items})
    if texts:
        texts[0].text = text
        texts[0].netlink = None
    else:
        snap.rulesets.append(RulesetText("inet", "nft-json", "nft", "candidate", text))
    return snap


def _in_tables(item: dict, tables) -> bool:
    for kind, body in item.items():
        if not isinstance(body, dict):
            return False
        if kind == "metainfo":
            return True  # the scratch namespace's one replaces it
        name = body.get("name") if kind == "table" else body.get("table")
        return (body.get("family"), name) in tables
    return False


# --------------------------------------------------------------------------------------------
# the walk


def _decided(outcome) -> str:
    for d in reversed(outcome.decided_by):
        if d.policy is not None:
            return f"{d.table} {d.chain} policy {d.policy}"
        return f"{d.table} {d.chain} rule {d.rule_number} ({d.rule})"
    return "no rule"


def check(snapshot, connections: List[Connection]) -> List[str]:
    """One sentence per connection the ruleset of ``snapshot`` would cut (empty: all kept)."""
    from twinwall.analysis.context import build_contexts
    from twinwall.analysis.evaluator import V_ACCEPT
    from twinwall.netfilter.packetset import CT_ESTABLISHED, CT_NEW, iv_or, make_box, prefix_interval
    from twinwall.analysis.verdicts import CLIENT_PORTS
    from twinwall.loader import load_rulesets
    from twinwall.sources.host import run_command

    if not connections:
        return []
    rulesets = load_rulesets(snapshot)
    ifaces = {c.peer: _route_dev(c.peer, run_command) for c in connections}
    contexts = build_contexts(snapshot, rulesets, [d for d in ifaces.values() if d])
    ndp = None
    if any(c.family == "ipv6" for c in connections) and contexts["ipv6"].rules_known:
        from twinwall.analysis.ndp import neighbour_discovery, on_link_prefixes

        ndp = neighbour_discovery(contexts["ipv6"], on_link_prefixes(snapshot))
    problems = []
    for c in connections:
        ctx = contexts[c.family]
        if not ctx.rules_known:
            continue
        dev = ifaces.get(c.peer)
        iface = ctx.universe.mask(dev) if dev else ctx.remote_ifaces
        every = ctx.universe.all_mask
        peer = (prefix_interval(c.peer, c.family),)
        local = (prefix_interval(c.local, c.family),)
        tcp = ((6, 6),)
        port = ((c.lport, c.lport),)
        replies = iv_or(CLIENT_PORTS, ((c.pport, c.pport),))
        ev = ctx.evaluator()
        walks = [
            ("its packets in", ev.local_input([make_box(peer, local, iface, every, proto=tcp, sport=((c.pport, c.pport),), dport=port, state=CT_ESTABLISHED)])),
            ("its packets out", ev.hook_path(("output", "postrouting"), [make_box(local, peer, every, iface, proto=tcp, sport=port, dport=replies, state=CT_ESTABLISHED)])),
            (f"a new connection from {c.peer} to port {c.lport}", ev.local_input([make_box(peer, local, iface, every, proto=tcp, sport=CLIENT_PORTS, dport=port, state=CT_NEW)])),
        ]
        cut = None
        for what, outcomes in walks:
            bad = [o for o in outcomes if o.verdict != V_ACCEPT]
            if bad:
                o = bad[0]
                maybe = f" (if {', '.join(o.uncertain)} matches)" if o.uncertain else ""
                cut = f"{what}: {o.verdict} by {_decided(o)}{maybe}"
                break
        if cut is None and c.family == "ipv6" and ndp is not None and ndp.restricts:
            # conntrack leaves neighbour discovery untracked: an "established" accept does not
            # pass it, and the session dies once the neighbour entry goes stale
            if not ndp.cut(make_box(peer, local, iface, every, proto=tcp, state=CT_NEW)):
                cut = ndp.reason()
        if cut:
            problems.append(f"the candidate would cut the admin's connection {c} ({c.family}; {c.how}): {cut}")
    return problems


def _route_dev(peer: str, run) -> Optional[str]:
    res = run(["ip", "-o", "route", "get", peer])
    if not res.ok:
        return None
    m = re.search(r"\bdev (\S+)", res.stdout)
    return m.group(1) if m else None


def guard(backend, saved: Dict[str, str]) -> Tuple[List[Connection], List[str]]:
    """(the admin's connections found, one sentence per connection the candidate would cut)."""
    # (a family the candidate leaves alone keeps deciding its connections as it does now)
    connections = [c for c in admin_connections() if c.family in backend.families()]
    if not connections:
        return [], []
    snap = after_snapshot(backend, saved)
    if snap is None:
        return connections, []
    return connections, check(snap, connections)
