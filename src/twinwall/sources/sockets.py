"""Read listening sockets from saved ``ss`` output.

Every common variant is understood: ``ss -tuln``, ``-tulnp``, ``-tulnpe``, with or without the
header (``-H``), one protocol only (``-tln`` / ``-uln``: no Netid column, so the protocol comes from
the state: LISTEN is tcp, UNCONN is udp), service names instead of port numbers (``ss`` without
``-n``), the bracketed IPv6 addresses of iproute2 >= 4.15 (``[::1]:25``, ``[::]:22``, ``*:8080``),
the unbracketed ones of older releases (``:::22``, ``::1:25``: the last colon separates the port),
``%iface`` suffixes (``0.0.0.0%eth0:53``, ``[fe80::1]%eth0:546``), and the ``-p``/``-e`` details
(``users:(("sshd",pid=812,fd=3))``, ``uid:``, ``v6only:``, ``cgroup:``).

How the wildcard addresses are read (this is what decides whether a socket also takes IPv4):

* ``[::]:22`` (iproute2 >= 4.15) is an AF_INET6 socket with IPV6_V6ONLY set: new ``ss`` prints the
  unspecified IPv6 address bracketed only when v6only is 1, so v6only is True even without ``-e``.
* ``*:8080`` is printed by new ``ss`` for an AF_INET6 socket on ``::`` with v6only 0 (dual stack):
  family ipv6, address ``::``, v6only False (or whatever ``v6only:N`` says).
* Old ``ss`` (iproute2 < 4.15) printed ``*`` for the IPv4 wildcard 0.0.0.0 and ``:::22`` for the
  IPv6 one. When the text itself shows it comes from an old ``ss`` (an unbracketed IPv6 address
  such as ``:::22`` and no ``0.0.0.0``/bracketed address anywhere), or when a ``-e`` line shows
  ``ino:`` but no ``v6only:`` (``ss -e`` prints v6only for every AF_INET6 socket), ``*`` is read as
  IPv4 0.0.0.0. Without any such evidence ``*`` is read as the dual-stack ``::`` socket: that
  counts it for both families, the cautious reading for an audit.
* ``:::22`` (old ``ss``) is ``::`` with v6only unknown (None) unless ``v6only:N`` is shown.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

# (the socket module's C functions under the same names, without the enum classes its import builds)
from _socket import AF_INET, AF_INET6, getservbyname, inet_ntop, inet_pton

from twinwall.errors import InputError
from twinwall.model import IPV4, IPV6, ListeningSocket, merge_same_sockets

__all__ = ["parse_ss", "unit_from_cgroup"]

HINT = (
    "expected the output of 'ss -tulnp' (or -tuln, -tulnpe, -H, -tln, -uln); "
    "save it with: ss -tulnpe > sockets.txt"
)

# Netids ss prints for sockets twinwall does not audit: skipped, not an error (e.g. `ss -lnp`).
_OTHER_NETIDS = frozenset(
    "u_str u_dgr u_seq u_sqp nl p_raw p_dgr raw icmp icmp6 sctp dccp mptcp v_str v_dgr xdp "
    "tipc tipc_str tipc_dgr".split()
)
_STATES = frozenset(
    "LISTEN UNCONN ESTAB SYN-SENT SYN-RECV FIN-WAIT-1 FIN-WAIT-2 TIME-WAIT CLOSE-WAIT LAST-ACK "
    "CLOSING CLOSED UNKNOWN NEW-SYN-REC BOUND".split()
)
# Warnings ss writes on stderr that end up in a file saved with 2>&1.
# stderr lines ss prints on some systems that say nothing about the command's result
SS_NOISE = ("Failed to find cgroup2 mount",)

# Port names ss prints without -n, for hosts whose /etc/services lacks them.
_FALLBACK_SERVICES = {
    "ssh": 22, "smtp": 25, "domain": 53, "bootps": 67, "bootpc": 68, "http": 80, "ntp": 123,
    "https": 443, "submission": 587, "imaps": 993, "pop3s": 995, "mysql": 3306,
    "postgresql": 5432, "mdns": 5353, "http-alt": 8080, "dhcpv6-client": 546,
    "dhcpv6-server": 547, "ipp": 631, "rpcbind": 111, "sunrpc": 111, "snmp": 161, "ldap": 389,
    "microsoft-ds": 445, "netbios-ns": 137, "netbios-dgm": 138, "netbios-ssn": 139,
    "domain-s": 853, "imap2": 143, "pop3": 110, "ftp": 21, "telnet": 23, "tproxy": 8081,
    "llmnr": 5355, "redis": 6379, "nfs": 2049, "syslog": 514, "isakmp": 500,
}

_LINE_RE = re.compile(
    r"\s*(?:([a-z][a-z0-9_]*)\s+)?"  # Netid (absent with -tln / -uln)
    r"([A-Z][A-Z0-9-]*)\s+"  # State
    r"(\d+)\s+(\d+)\s+"  # Recv-Q Send-Q
    r"(\S*:\S+)\s+(\S*:\S*)"  # Local Address:Port, Peer Address:Port
    r"(?:\s+(.*))?$"  # Process and -e details
)
_LOCAL_RE = re.compile(r"(?:\[([^\[\]]*)\]|([^\[\]]*?))(?:%([^:%\[\]]+))?:([^:\[\]]+)$")
_USERS_RE = re.compile(r'users:\(\("((?:[^"\\]|\\.)*)",(?:pid=)?(\d+),(?:fd=)?(\d+)\)')
# Searched in " " + details, so a key is always preceded by a space (and no regex alternation
# defeats the literal-prefix search: this is the hot path).
_UID_RE = re.compile(r" uid:(\d+)")
_V6ONLY_RE = re.compile(r" v6only:([01])")
_CGROUP_RE = re.compile(r" cgroup:(\S+)")
_KEYVAL_RE = re.compile(r"(?:^|\s)(?:[A-Za-z_][\w-]*:\S|<->)")
_UNIT_SUFFIXES = (".service", ".socket", ".scope")
_unit_cache: Dict[str, Optional[str]] = {}


def unit_from_cgroup(path: str) -> Optional[str]:
    """The systemd unit of a cgroup path: its last component ending in .service/.socket/.scope.

    ``/system.slice/ssh.service`` -> ``ssh.service``; ``/`` or ``unreachable:1`` -> None.
    """
    hit = _unit_cache.get(path, False)
    if hit is not False:
        return hit  # type: ignore[return-value]
    unit = None
    for part in reversed(path.split("/")):
        if part.endswith(_UNIT_SUFFIXES):
            unit = part
            break
    if len(_unit_cache) < 4096:
        _unit_cache[path] = unit
    return unit


def _fail(source: Optional[str], lineno: int, line: str, reason: str) -> InputError:
    where = f"{source}: line {lineno}" if source else f"ss output line {lineno}"
    shown = line.strip()
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InputError(f"{where}: {reason}: {shown!r} ({HINT})")


def _diagnose(line: str) -> str:
    """Why a non-blank, non-header line is not a socket line (slow path, for the message)."""
    tokens = line.split()
    if tokens[0] in _STATES or tokens[0] in ("tcp", "udp"):
        rest = tokens[1:] if tokens[0] in ("tcp", "udp") else tokens
        if tokens[0] in ("tcp", "udp") and (not rest or rest[0] not in _STATES):
            return f"unknown socket state {rest[0]!r}" if rest else "too few columns"
        if len(rest) < 5:
            return "too few columns"
        if not (rest[1].isdigit() and rest[2].isdigit()):
            return "Recv-Q/Send-Q are not numbers"
        return "local and peer columns must be ADDRESS:PORT"
    return "not a line of ss output"


def _is_header(line: str) -> bool:
    tokens = line.split(None, 2)
    return len(tokens) > 1 and tokens[0] in ("Netid", "State") and tokens[1] in ("State", "Recv-Q")


def parse_ss(text: str, source: Optional[str] = None) -> List[ListeningSocket]:
    """Listening TCP and bound UDP sockets from saved ``ss`` output.

    ``source`` (a file name) only improves error messages. Raises InputError naming the line for
    anything that is not ss output; blank lines, headers and non-TCP/UDP netids are skipped, and
    so are TCP sockets not in LISTEN state and UDP sockets not in UNCONN state. Rows for the same
    socket (protocol, family, address, port, interface) are merged, keeping the richest details.
    """
    # (lineno, line, protocol, local, extra) of each socket row, in order.
    rows: List[List] = []
    old_style = False
    new_style = False
    prev_was_socket = False
    match = _LINE_RE.match
    for lineno, line in enumerate(text.splitlines(), 1):
        m = match(line)
        if m is None:
            if not line or line.isspace():
                prev_was_socket = False
                continue
            stripped = line.strip()
            if _is_header(stripped):
                prev_was_socket = False
                continue
            if stripped.startswith(SS_NOISE) or stripped.split(None, 1)[0] in _OTHER_NETIDS:
                prev_was_socket = False
                continue
            if line[:1].isspace() and prev_was_socket and _KEYVAL_RE.search(stripped):
                # ss wraps the details onto an indented line on a narrow terminal.
                rows[-1][4] = rows[-1][4] + " " + stripped
                continue
            raise _fail(source, lineno, line, _diagnose(stripped))
        netid, state, _rq, _sq, local, peer, extra = m.groups()
        prev_was_socket = False
        if netid is None:
            if state == "LISTEN":
                protocol = "tcp"
            elif state == "UNCONN":
                protocol = "udp"
            elif state in _STATES:
                continue
            else:
                raise _fail(source, lineno, line, f"unknown socket state {state!r}")
        elif netid == "tcp" or netid == "udp":
            protocol = netid
            if state != ("LISTEN" if netid == "tcp" else "UNCONN"):
                if state in _STATES:
                    continue
                raise _fail(source, lineno, line, f"unknown socket state {state!r}")
        elif netid in _OTHER_NETIDS:
            continue
        else:
            raise _fail(source, lineno, line, f"unknown Netid {netid!r}")
        if not new_style and (
            local[0] == "[" or peer[0] == "[" or local.startswith("0.0.0.0")
            or peer.startswith("0.0.0.0")
        ):
            new_style = True
        if not old_style and local[0] != "[" and local.count(":") >= 2:
            old_style = True
        rows.append([lineno, line, protocol, local, " " + extra if extra else ""])
        prev_was_socket = True

    star_is_ipv4 = old_style and not new_style
    return merge_same_sockets(
        _build(lineno, line, protocol, local, extra, source, star_is_ipv4, new_style)
        for lineno, line, protocol, local, extra in rows
    )


_addr_cache: Dict[str, Tuple[str, str]] = {}


def _normalize(host: str) -> Optional[Tuple[str, str]]:
    """(family, canonical address) or None when ``host`` is not a numeric address.

    Addresses are written the way ``inet_ntop`` writes them (RFC 5952 style for IPv6, IPv4-mapped
    ones as ``::ffff:192.0.2.1``) whatever form ss used."""
    hit = _addr_cache.get(host)
    if hit is not None:
        return hit
    try:
        if ":" in host:
            value = (IPV6, inet_ntop(AF_INET6, inet_pton(AF_INET6, host)))
        else:
            value = (IPV4, inet_ntop(AF_INET, inet_pton(AF_INET, host)))
    except (OSError, ValueError):
        return None
    if len(_addr_cache) < 4096:
        _addr_cache[host] = value
    return value


def _port(name: str, protocol: str) -> Optional[int]:
    """The port number of ss's port column, None for an unknown service name. Numbers come back
    unchecked (the caller names an out-of-range one); ss prints port 0 as "*"."""
    if name.isdigit() and name.isascii():
        return int(name)
    if name == "*":
        return 0
    try:
        return getservbyname(name, protocol)
    except OSError:
        return _FALLBACK_SERVICES.get(name)


def _build(
    lineno: int,
    line: str,
    protocol: str,
    local: str,
    extra: str,
    source: Optional[str],
    star_is_ipv4: bool,
    new_style: bool,
) -> ListeningSocket:
    m = _LOCAL_RE.match(local)
    if m is None:
        raise _fail(source, lineno, line, f"cannot read local address {local!r}")
    bracketed, plain, interface, port_text = m.groups()
    host = plain if bracketed is None else bracketed
    if "%" in host:  # a scope id inside the address: [fe80::1%eth0]
        host, _, scope = host.partition("%")
        interface = interface or scope or None
    port = _port(port_text, protocol)
    if port is None:
        raise _fail(
            source, lineno, line,
            f"unknown port {port_text!r} (save ss output with -n for numeric ports)",
        )
    if not 0 < port <= 65535:
        # a listening TCP socket or a bound UDP one always has a port: the kernel picks one on
        # listen() or bind() to port 0, so port 0 here means edited or damaged output
        if port:
            reason = f"port {port_text} is out of range (1-65535)"
        else:
            shown = "'*' (port 0)" if port_text == "*" else port_text
            reason = f"port {shown}: a listening or bound socket never has port 0"
        raise _fail(source, lineno, line, reason)

    v6m = _V6ONLY_RE.search(extra) if extra else None
    v6only: Optional[bool] = (v6m.group(1) == "1") if v6m else None

    if host == "*":
        if v6only is not None:
            family, address = IPV6, "::"
        elif star_is_ipv4 or (not new_style and " ino:" in extra):
            family, address = IPV4, "0.0.0.0"
        else:
            family, address, v6only = IPV6, "::", False
    else:
        norm = _normalize(host)
        if norm is None:
            raise _fail(
                source, lineno, line,
                f"{host!r} is not a numeric IP address (save ss output with -n, without -r)",
            )
        family, address = norm
        if family == IPV4:
            v6only = None  # only AF_INET6 sockets have the flag
        elif v6only is None and bracketed is not None and address == "::":
            v6only = True  # new ss brackets the unspecified address only for v6only sockets

    process = pid = uid = unit = None
    if extra:
        if "users:" in extra:
            um = _USERS_RE.search(extra)
            if um:
                process = um.group(1).replace('\\"', '"')
                pid = int(um.group(2))
        um = _UID_RE.search(extra)
        if um:
            uid = int(um.group(1))
        elif " ino:" in extra:
            uid = 0  # ss -e prints uid: only when it is not 0
        um = _CGROUP_RE.search(extra)
        if um:
            unit = unit_from_cgroup(um.group(1))
    return ListeningSocket(
        protocol=protocol,
        family=family,
        address=address,
        port=port,
        v6only=v6only,
        interface=interface,
        process=process,
        pid=pid,
        unit=unit,
        uid=uid,
    )
