"""Collect the facts of the live host (the current network namespace) into a HostSnapshot.

What is read, and from where:

* listening sockets: ``ss -H -tulnpe`` (v6only comes from ``-e``, process names from ``-p``);
* addresses and interface names: ``ip -j addr show`` (``ip -o addr show`` on old iproute2);
* IPv6 state: ``/sys/module/ipv6/parameters/disable``, ``/proc/sys/net/ipv6/conf/*/disable_ipv6``
  and whether any address other than loopback and link-local exists;
* rulesets: ``iptables-save`` and ``ip6tables-save`` (whichever backend they use, told apart by
  their ``--version`` text), plus the other backend's dump when tables are loaded there too
  (``iptables-legacy-save`` when ``/proc/net/ip_tables_names`` lists tables, ``iptables-nft-save``
  when the main tool is the legacy one);
* host name, kernel release and the collection time (UTC).

Nothing here raises for a fact it cannot read: each one is recorded as one sentence in
``HostSnapshot.missing``. Only when nothing at all could be collected is CollectionError raised.
Every command runs through :func:`run_command` (argument list, timeout, ``LC_ALL=C``).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Tuple

from twinwall.errors import CollectionError, InputError
from twinwall.model import IPV4, IPV6, SYSCTLS, HostSnapshot, InterfaceAddress, Ipv6State, RulesetText
from twinwall.sources.sockets import SS_NOISE, parse_ss

__all__ = [
    "CommandResult",
    "run_command",
    "collect_host",
    "collect_sockets",
    "collect_addresses",
    "ipv6_state",
    "read_sysctls",
    "collect_iptables_rulesets",
    "collect_nft_ruleset",
    "iptables_backend",
]

DEFAULT_TIMEOUT = 30.0
RULES_TIMEOUT = 120.0  # iptables-save of a kube-proxy sized ruleset takes seconds
# Non-root users often lack the sbin directories in PATH; the tools live there.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin")
_NEED_ROOT = "Permission denied (you need root to read the ruleset)"


@dataclass
class CommandResult:
    """What one command did. ``error`` is set when it could not run or did not finish."""

    argv: List[str]
    returncode: Optional[int]
    stdout: str
    stderr: str
    error: Optional[str] = None  # "not installed", "timed out after 30 s", "Permission denied"

    @property
    def ok(self) -> bool:
        return self.error is None and self.returncode == 0

    @property
    def not_installed(self) -> bool:
        return self.error == "not installed"

    def reason(self) -> str:
        """One line saying why the command failed (for ``missing``)."""
        if self.error:
            return self.error
        for line in self.stderr.splitlines():
            line = line.strip()
            if line and not line.startswith(SS_NOISE):
                return f"{line} (exit status {self.returncode})"
        return f"exit status {self.returncode}"

    def needs_root(self) -> bool:
        """Whether the failure is (or, run by another user, most likely is) a lack of privilege."""
        text = f"{self.error or ''} {self.stderr}"
        denied = "Permission denied" in text or "must be root" in text or "Operation not permitted" in text
        return denied or os.geteuid() != 0


def _search_path() -> str:
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    for extra in _EXTRA_PATH:
        if extra not in parts:
            parts.append(extra)
    return os.pathsep.join(parts)


def which(tool: str) -> Optional[str]:
    """Full path of ``tool`` on PATH or in the usual sbin directories, or None."""
    return shutil.which(tool, path=_search_path())


def run_command(argv: List[str], timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
    """Run one command (argument list, no shell) with LC_ALL=C and a timeout; never raises."""
    argv = list(argv)
    exe = which(argv[0]) if os.sep not in argv[0] else argv[0]
    if exe is None:
        return CommandResult(argv, None, "", "", error="not installed")
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env["PATH"] = _search_path()
    try:
        proc = subprocess.run(
            [exe] + argv[1:],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return CommandResult(argv, None, "", "", error="not installed")
    except PermissionError as exc:
        return CommandResult(argv, None, "", "", error=f"Permission denied ({exc.strerror})")
    except subprocess.TimeoutExpired:
        return CommandResult(argv, None, "", "", error=f"timed out after {timeout:g} s")
    except OSError as exc:
        return CommandResult(argv, None, "", "", error=exc.strerror or str(exc))
    return CommandResult(
        argv,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


Runner = Callable[..., CommandResult]


def _read_text(path: str) -> Tuple[Optional[str], Optional[str]]:
    """(content, None) or (None, reason)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(), None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None, "not present"
        return None, exc.strerror or str(exc)


# --------------------------------------------------------------------------------------------
# sockets


def collect_sockets(snap: HostSnapshot, run: Runner = run_command) -> None:
    """Fill ``snap.sockets`` from ``ss -H -tulnpe`` (``ss -tulnpe`` when -H is too new)."""
    argv = ["ss", "-H", "-tulnpe"]
    res = run(argv)
    if not res.not_installed and not res.ok and "invalid option" in res.stderr:
        argv = ["ss", "-tulnpe"]
        res = run(argv)
    cmd = " ".join(argv)
    if res.not_installed:
        snap.sockets_known = False
        snap.missing.append("ss: not installed (install iproute2): listening sockets are unknown")
        return
    if not res.ok:
        snap.sockets_known = False
        snap.missing.append(f"{cmd}: {res.reason()}: listening sockets are unknown")
        return
    try:
        snap.sockets = parse_ss(res.stdout, source=cmd)
    except InputError as exc:
        snap.sockets_known = False
        snap.missing.append(f"{cmd}: output not understood: {exc}")
        return
    snap.sockets_known = True
    if os.geteuid() != 0:
        snap.missing.append(
            "process names: not visible without root (ss -p shows only your own processes)"
        )


# --------------------------------------------------------------------------------------------
# addresses


# keyed by whatever the JSON's "family" holds (a string, or nothing when the key is missing)
_FAMILIES: Dict[object, str] = {"inet": IPV4, "inet6": IPV6}


def _scope(value: object) -> str:
    scope = str(value) if value is not None else "global"
    return "global" if scope in ("universe", "0") else scope


def _addresses_from_json(text: str) -> Tuple[List[str], List[InterfaceAddress]]:
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("not a list")
    interfaces: List[str] = []
    addresses: List[InterfaceAddress] = []
    for link in data:
        if not isinstance(link, dict) or not link.get("ifname"):
            continue  # iproute2 prints {} placeholders for filtered entries
        name = str(link["ifname"])
        if name not in interfaces:
            interfaces.append(name)
        for info in link.get("addr_info") or []:
            if not isinstance(info, dict) or "local" not in info:
                continue
            family = _FAMILIES.get(info.get("family"))
            if family is None:
                continue
            addresses.append(
                InterfaceAddress(
                    interface=name,
                    family=family,
                    address=str(ipaddress.ip_address(str(info["local"]).split("%")[0])),
                    prefixlen=int(info.get("prefixlen", 128 if family == IPV6 else 32)),
                    scope=_scope(info.get("scope")),
                )
            )
    return interfaces, addresses


def _addresses_from_oneline(addr_text: str, link_text: str) -> Tuple[List[str], List[InterfaceAddress]]:
    """``ip -o link show`` / ``ip -o addr show`` of iproute2 releases without ``-j``."""
    interfaces: List[str] = []
    for line in link_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2 and parts[1].strip():
            name = parts[1].strip().split("@")[0]
            if name not in interfaces:
                interfaces.append(name)
    addresses: List[InterfaceAddress] = []
    for line in addr_text.splitlines():
        tokens = line.split()
        if len(tokens) < 4 or tokens[2] not in _FAMILIES:
            continue
        name = tokens[1].split("@")[0]
        addr, _, plen = tokens[3].partition("/")
        family = _FAMILIES[tokens[2]]
        scope = "global"
        if "scope" in tokens:
            i = tokens.index("scope")
            if i + 1 < len(tokens):
                scope = _scope(tokens[i + 1])
        addresses.append(
            InterfaceAddress(
                interface=name,
                family=family,
                address=str(ipaddress.ip_address(addr)),
                prefixlen=int(plen) if plen.isdigit() else (128 if family == IPV6 else 32),
                scope=scope,
            )
        )
        if name not in interfaces:
            interfaces.append(name)
    return interfaces, addresses


def collect_addresses(snap: HostSnapshot, run: Runner = run_command) -> None:
    """Fill ``snap.addresses`` and ``snap.interfaces`` (every link, lo included)."""
    res = run(["ip", "-j", "addr", "show"])
    if res.not_installed:
        snap.missing.append("ip: not installed (install iproute2): addresses are unknown")
        return
    if res.ok:
        try:
            snap.interfaces, snap.addresses = _addresses_from_json(res.stdout)
            snap.addresses_known = True
            return
        except (ValueError, TypeError, KeyError):
            pass  # an iproute2 without JSON output: fall back to the one-line format below
    addr = run(["ip", "-o", "addr", "show"])
    link = run(["ip", "-o", "link", "show"])
    if not addr.ok:
        snap.missing.append(f"ip -o addr show: {addr.reason()}: addresses are unknown")
        return
    try:
        snap.interfaces, snap.addresses = _addresses_from_oneline(
            addr.stdout, link.stdout if link.ok else ""
        )
    except ValueError as exc:
        snap.missing.append(f"ip -o addr show: output not understood ({exc}): addresses are unknown")
        return
    snap.addresses_known = True


# --------------------------------------------------------------------------------------------
# IPv6 state


def _sysctl_name(conf: str) -> str:
    # sysctl writes a '.' inside an interface name as '/': eth0.100 -> net.ipv6.conf.eth0/100
    return f"net.ipv6.conf.{conf.replace('.', '/')}.disable_ipv6"


def ipv6_state(
    addresses: Optional[List[InterfaceAddress]],
    proc: str = "/proc",
    sys: str = "/sys",
) -> Ipv6State:
    """Whether IPv6 is usable, with each fact read as evidence (the CIS audit's logic).

    Disabled when the module parameter ``ipv6.disable`` is 1, when both
    ``net.ipv6.conf.all.disable_ipv6`` and ``net.ipv6.conf.default.disable_ipv6`` are 1, or when
    the kernel has no ``/proc/sys/net/ipv6``. ``addresses`` None means they are unknown.
    """
    evidence: List[str] = []
    disabled = False
    known = False

    param_path = os.path.join(sys, "module/ipv6/parameters/disable")
    text, why = _read_text(param_path)
    if text is not None:
        value = text.strip()
        known = True
        evidence.append(f"ipv6.disable = {value} ({param_path})")
        if value == "1":
            disabled = True
    else:
        evidence.append(f"{param_path}: {why}")

    conf_dir = os.path.join(proc, "sys/net/ipv6/conf")
    if not os.path.isdir(os.path.join(proc, "sys/net/ipv6")):
        evidence.append(f"{os.path.join(proc, 'sys/net/ipv6')}: not present (no IPv6 in this kernel or namespace)")
        return Ipv6State(enabled=False, evidence=evidence)
    try:
        names = os.listdir(conf_dir)
    except OSError as exc:
        names = []
        evidence.append(f"{conf_dir}: {exc.strerror or exc}")
    ordered = [n for n in ("all", "default") if n in names] + sorted(
        n for n in names if n not in ("all", "default")
    )
    values = {}
    for name in ordered:
        text, why = _read_text(os.path.join(conf_dir, name, "disable_ipv6"))
        if text is None:
            evidence.append(f"{_sysctl_name(name)}: {why}")
            continue
        values[name] = text.strip()
        known = True
        evidence.append(f"{_sysctl_name(name)} = {values[name]}")
    if values.get("all") == "1" and values.get("default") == "1":
        disabled = True

    if addresses is None:
        evidence.append("IPv6 addresses: unknown (ip addr could not be read)")
    else:
        usable = []
        for a in addresses:
            if a.family != IPV6:
                continue
            ip = ipaddress.ip_address(a.address)
            if not (ip.is_link_local or ip.is_loopback):
                usable.append(f"{a.address} ({a.interface})")
        if usable:
            evidence.append("IPv6 addresses other than loopback and link-local: " + ", ".join(usable))
        else:
            evidence.append("no IPv6 address other than loopback and link-local")

    if disabled:
        return Ipv6State(enabled=False, evidence=evidence)
    # IPv6 off on some interfaces only: the kernel drops IPv6 arriving there (no firewall involved)
    off = [n for n in ordered if n not in ("all", "default") and values.get(n) == "1"]
    return Ipv6State(enabled=True if known else None, evidence=evidence, disabled_interfaces=off)


# --------------------------------------------------------------------------------------------
# forwarding and address checks (sysctls)


def read_sysctls(proc: str = "/proc") -> Dict[str, str]:
    """The kernel settings of model.SYSCTLS, by sysctl name, from /proc/sys (this namespace's):
    what decides whether FORWARD rules matter (ip_forward, forwarding), whether spoofed sources
    are dropped before the rules (rp_filter) and whether 127/8 may arrive from elsewhere
    (route_localnet). Settings that cannot be read are left out."""
    out: Dict[str, str] = {}
    for name in SYSCTLS:
        head, _, tail = name.partition(".*.")
        if not tail:
            paths = [(name, os.path.join(proc, "sys", *name.split(".")))]
        else:
            conf_dir = os.path.join(proc, "sys", *head.split("."))
            try:
                confs = sorted(os.listdir(conf_dir))
            except OSError:
                continue
            paths = [(f"{head}.{c.replace('.', '/')}.{tail}", os.path.join(conf_dir, c, tail)) for c in confs]
        for key, path in paths:
            text, _ = _read_text(path)
            if text is not None:
                out[key] = text.strip()
    return out


# --------------------------------------------------------------------------------------------
# rulesets

# family -> (save tool, main tool, /proc names file, legacy save tool, nft save tool)
_IPTABLES = {
    IPV4: ("iptables-save", "iptables", "ip_tables_names", "iptables-legacy-save", "iptables-nft-save"),
    IPV6: ("ip6tables-save", "ip6tables", "ip6_tables_names", "ip6tables-legacy-save", "ip6tables-nft-save"),
}


_OLD_IPTABLES_RE = re.compile(r"^\S*tables\S* v1\.[0-7]\.", re.M)


def iptables_backend(version_text: str) -> str:
    """"nft", "legacy" or "unknown" from an ``iptables --version`` line.

    iptables >= 1.8 names its variant; older releases had only the legacy (x_tables) one.
    """
    if "(nf_tables)" in version_text:
        return "nft"
    if "(legacy)" in version_text or _OLD_IPTABLES_RE.search(version_text):
        return "legacy"
    return "unknown"


def _detect_backend(save: str, tool: str, run: Runner) -> str:
    for argv in ([save, "--version"], [tool, "--version"]):
        res = run(argv)
        if res.returncode is not None:
            backend = iptables_backend(res.stdout + res.stderr)
            if backend != "unknown":
                return backend
    return "unknown"


def _has_tables(text: str) -> bool:
    return any(line.startswith("*") for line in text.splitlines())


def collect_iptables_rulesets(
    snap: HostSnapshot, run: Runner = run_command, proc: str = "/proc"
) -> None:
    """Append the iptables-save / ip6tables-save dumps (and the other backend's, when loaded)."""
    for family in (IPV4, IPV6):
        save, tool, names_file, legacy_save, nft_save = _IPTABLES[family]
        res = run([save], timeout=RULES_TIMEOUT)
        backend = "unknown"
        if res.not_installed:
            snap.missing.append(f"{save}: not installed (install iptables): the {family} ruleset is unknown")
        else:
            backend = _detect_backend(save, tool, run)
            if res.ok:
                snap.rulesets.append(
                    RulesetText(family=family, format="iptables-save", backend=backend,
                                source=save, text=res.stdout)
                )
            elif res.needs_root():
                snap.missing.append(f"{save}: {_NEED_ROOT}")
            else:
                snap.missing.append(f"{save}: {res.reason()}: the {family} ruleset is unknown")

        if backend != "legacy":
            _collect_other_backend_legacy(snap, family, names_file, legacy_save, run, proc)
        else:
            _collect_other_backend_nft(snap, family, nft_save, run)


def _collect_other_backend_legacy(
    snap: HostSnapshot, family: str, names_file: str, legacy_save: str, run: Runner, proc: str
) -> None:
    """Legacy (x_tables) tables loaded next to the nft ones: a packet must pass both."""
    path = os.path.join(proc, "net", names_file)
    text, why = _read_text(path)
    if text is None and why == "not present":
        return  # ip(6)_tables module not loaded: no legacy tables
    names = text.split() if text is not None else None
    if names == []:
        return
    if which(legacy_save) is None:
        if names:
            snap.missing.append(
                f"legacy {family} tables are loaded ({', '.join(names)} in {path}) but "
                f"{legacy_save} is not installed: their rules are unknown"
            )
        return
    res = run([legacy_save], timeout=RULES_TIMEOUT)
    if res.ok:
        if names or _has_tables(res.stdout):
            snap.rulesets.append(
                RulesetText(family=family, format="iptables-save", backend="legacy",
                            source=legacy_save, text=res.stdout)
            )
    elif res.needs_root():
        snap.missing.append(
            f"{legacy_save}: Permission denied (you need root to read the legacy ruleset"
            + (")" if names else " and to tell whether one is loaded)")
        )
    else:
        snap.missing.append(f"{legacy_save}: {res.reason()}: the legacy {family} ruleset is unknown")


def _collect_other_backend_nft(snap: HostSnapshot, family: str, nft_save: str, run: Runner) -> None:
    """iptables-nft tables loaded while the main iptables is the legacy one."""
    if which(nft_save) is None:
        return
    res = run([nft_save], timeout=RULES_TIMEOUT)
    if res.ok:
        if _has_tables(res.stdout):
            snap.rulesets.append(
                RulesetText(family=family, format="iptables-save", backend="nft",
                            source=nft_save, text=res.stdout)
            )
    elif res.needs_root():
        snap.missing.append(f"{nft_save}: {_NEED_ROOT}")
    else:
        snap.missing.append(f"{nft_save}: {res.reason()}: the nft-side {family} ruleset is unknown")


NFT_SOURCE = "nft -j list ruleset"
_NFT_FAMILY = {IPV4: "ip", IPV6: "ip6"}
_IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")


def collect_nft_ruleset(snap: HostSnapshot, run: Runner = run_command) -> Optional[RulesetText]:
    """Native nftables tables, from ``nft -j list ruleset``; run after the iptables dumps.

    Every nf_tables table shows up in ``nft -j``, iptables-nft's own included, and the
    nft-backend ``iptables-save`` prints the iptables-nft ones as well. Which dump is
    authoritative for each table is decided here (see :func:`nft_authority`) and recorded in
    ``snap.table_sources``, so that every table is evaluated exactly once:

    * a table holding xt expressions (iptables-nft matches and targets, which ``nft -j`` prints
      without their parameters) is read from ``iptables-save`` (the nft-backend dump already in
      the snapshot) and left out of the ``nft -j`` dump; when no such dump shows it, its rules
      are unknown and ``missing`` says so;
    * an ip/ip6 table that ``iptables-save`` printed and whose rules use only what iptables-nft
      itself writes (e.g. only ``-p tcp --dport 22 -j DROP``) is read from ``iptables-save`` too
      (explanations then quote the rules as the admin wrote them);
    * a table ``iptables-save`` printed but that holds rules it cannot show (sets, maps, fib, ct
      ... added with nft: iptables-nft-save 1.8.9 prints ``ip saddr @s drop`` as a bare
      ``-j DROP``) is read from ``nft -j`` and left out of the ``iptables-save`` text;
    * every other table (inet, netdev, native ip/ip6) is read from ``nft -j``; legacy x_tables
      tables are not nf_tables tables: they come from the legacy dumps.

    Returns the ``nft -j`` dump with only the tables it is authoritative for (verbatim when that
    is all of them); None when nft cannot be run (recorded in ``missing``), or when no table is
    left for it and iptables dumps of both families were read (they then say everything).
    """
    argv = ["nft", "-j", "list", "ruleset"]
    res = run(argv, timeout=RULES_TIMEOUT)
    if res.not_installed:
        if os.path.isdir("/sys/module/nf_tables"):
            snap.missing.append(
                "nft: not installed (install nftables): nf_tables is loaded, native nftables tables "
                "(if any) are unknown"
            )
        return None
    if not res.ok:
        if res.needs_root():
            snap.missing.append(f"{NFT_SOURCE}: {_NEED_ROOT}")
        else:
            snap.missing.append(f"{NFT_SOURCE}: {res.reason()}: native nftables tables are unknown")
        return None
    try:
        doc = json.loads(res.stdout)
        items = doc["nftables"]
        if not isinstance(items, list):
            raise TypeError("not a list")
    except (ValueError, KeyError, TypeError) as exc:
        snap.missing.append(f"{NFT_SOURCE}: output not understood ({exc}): native nftables tables are unknown")
        return None
    keep = nft_authority(snap, items)
    left = items if keep is None else keep
    covered = {r.family for r in snap.rulesets if r.format == "iptables-save"}
    if not any(isinstance(o, dict) and "table" in o for o in left) and covered >= {IPV4, IPV6}:
        return None  # no native table: the iptables dumps already say everything
    text = res.stdout if keep is None else json.dumps({"nftables": keep}) + "\n"
    out = RulesetText(family="inet", format="nft-json", backend="nft", source=NFT_SOURCE, text=text)
    inet = list(dict.fromkeys(
        o["rule"].get("table") for o in left
        if isinstance(o, dict) and isinstance(o.get("rule"), dict) and o["rule"].get("family") == "inet"))
    if inet:
        out.netlink = _collect_nft_netlink(snap, run, [t for t in inet if isinstance(t, str)])
    return out


NETLINK_SOURCE = "nft --debug=netlink list table inet"


def _collect_nft_netlink(snap: HostSnapshot, run: Runner, tables: List[str]) -> Optional[str]:
    """The netlink form of the inet tables' rules: nft 1.0.6 does not print some ``meta nfproto``
    tests (``meta nfproto ipv6 tcp dport 3000 reject with tcp reset`` lists as ``tcp dport 3000
    reject with tcp reset``), the netlink form does. Listed table by table, the inet tables with
    rules only (a host's kube-proxy or blocklist ip tables would otherwise be dumped again for
    nothing); only the rule blocks are kept (not the set elements, not the listing nft prints
    after them)."""
    kept: List[str] = []
    for table in tables:
        res = run(["nft", "--debug=netlink", "list", "table", "inet", table], timeout=RULES_TIMEOUT)
        if not res.ok:
            snap.missing.append(f"{NETLINK_SOURCE} {table}: {res.reason()}: inet rules nft prints without "
                                "their meta nfproto test are uncertain")
            return None
        kept.extend(netlink_rule_blocks(res.stdout).splitlines())
    return "\n".join(kept) + ("\n" if kept else "")


def netlink_rule_blocks(text: str) -> str:
    """The inet rule blocks of an ``nft --debug=netlink list ...`` output (not the set
    elements, not the ordinary listing nft prints after them)."""
    kept: List[str] = []
    keep = False
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            if line.startswith("table "):
                break  # the ordinary listing follows the netlink blocks
            keep = line.startswith("inet ") and "@" not in line
        if keep and line.strip():
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def _table_names(text: str) -> List[str]:
    return [line[1:].strip() for line in text.splitlines() if line.startswith("*")]


# The expressions iptables-nft itself writes besides xt ones (ip/ip6tables-nft-save translates
# them back faithfully). A rule with anything else (sets, maps, fib, ct, limit...) was added with
# nft, and iptables-nft-save cannot show it: 1.8.9 prints "ip saddr @s drop" as a bare "-j DROP".
_IPT_META = ("iifname", "oifname", "iif", "oif", "l4proto", "protocol", "nfproto", "mark", "pkttype")
_IPT_PAYLOAD = ("ip", "ip6", "tcp", "udp", "udplite", "sctp", "dccp", "th")
_IPT_STATEMENTS = ("counter", "accept", "drop", "return", "jump", "goto", "xt", "continue")
# iptables-nft (1.8.x) writes `-m limit --limit R/UNIT --limit-burst B` as a native limit
# expression, not an xt match (every ufw host has such rules), and reads it back; an inverted
# (`over`) or byte-rate limit can only come from nft
_IPT_LIMIT_KEYS = frozenset(("rate", "burst", "per"))


def _iptables_value(v) -> bool:
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return not (isinstance(v, str) and v.startswith("@"))
    if isinstance(v, dict) and len(v) == 1:
        key, body = next(iter(v.items()))
        if key == "prefix":
            return True
        if key == "range" and isinstance(body, list):
            return all(_iptables_value(x) for x in body)
    return False


def _iptables_expr(e) -> bool:
    """Whether iptables-nft writes (and its save tool reads back) this expression."""
    if not isinstance(e, dict) or len(e) != 1:
        return False
    key, body = next(iter(e.items()))
    if key in _IPT_STATEMENTS:
        return True
    if key == "limit":
        return isinstance(body, dict) and set(body) <= _IPT_LIMIT_KEYS
    if key != "match" or not isinstance(body, dict):
        return False
    left = body.get("left")
    if not isinstance(left, dict) or len(left) != 1:
        return False
    kind, sel = next(iter(left.items()))
    right = body.get("right")
    if kind == "&" and isinstance(sel, list) and len(sel) == 2:
        # `--tcp-flags MASK COMP` / `--syn`: iptables-nft writes a masked tcp flags payload
        # (`tcp flags & (fin|syn|rst|ack) != syn`), with flag names as mask and value
        inner, mask = sel

        def flags(v) -> bool:
            return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))

        return (isinstance(inner, dict) and inner.get("payload", {}).get("protocol") == "tcp"
                and inner["payload"].get("field") == "flags" and flags(mask) and flags(right))
    if kind == "meta":
        ok = isinstance(sel, dict) and sel.get("key") in _IPT_META
    elif kind == "payload":
        ok = isinstance(sel, dict) and sel.get("protocol") in _IPT_PAYLOAD
    else:
        ok = False
    return ok and _iptables_value(right)


def nft_authority(snap: HostSnapshot, items: List) -> Optional[List]:
    """Decide, per nf_tables table, whether nft -j or iptables-save is authoritative.

    Fills ``snap.table_sources`` (and ``missing`` for tables no dump can show fully), removes the
    tables nft -j is authoritative for from the nft-backend iptables-save texts, and returns the
    nft -j items to keep (None: all of them)."""
    printed: dict = {"ip": {}, "ip6": {}}  # nft family -> table name -> nft-backend dump
    for dump in snap.rulesets:
        if dump.format != "iptables-save" or dump.family not in _NFT_FAMILY:
            continue
        fam = _NFT_FAMILY[dump.family]
        if dump.backend == "legacy":
            for name in _table_names(dump.text):
                snap.table_sources.append({
                    "table": f"{fam} {name}", "source": dump.source,
                    "reason": "legacy x_tables table (not an nf_tables table: nft does not show it)",
                })
            continue
        if dump.backend == "nft":
            for name in _table_names(dump.text):
                printed[fam].setdefault(name, dump)

    xt_tables = set()
    native = set()  # tables with rules iptables-nft-save cannot show
    tables: List[Tuple[str, str]] = []
    for obj in items:
        if not isinstance(obj, dict):
            continue
        body = obj.get("table")
        if isinstance(body, dict):
            tables.append((str(body.get("family")), str(body.get("name"))))
            continue
        rule = obj.get("rule")
        if not isinstance(rule, dict):
            continue
        key = (str(rule.get("family")), str(rule.get("table")))
        if key[0] not in ("ip", "ip6") or (key in xt_tables and key in native):
            continue
        exprs = rule.get("expr") or ()
        if any(isinstance(e, dict) and "xt" in e for e in exprs):
            xt_tables.add(key)
        if key not in native and not all(_iptables_expr(e) for e in exprs):
            native.add(key)

    excluded = set()
    for fam, name in tables:
        label = f"{fam} {name}"
        if fam not in ("ip", "ip6", "inet", "netdev"):
            snap.table_sources.append({
                "table": label, "source": "",
                "reason": f"{fam} table: not audited ({fam} tables do not filter IP packets at the ip/ip6 hooks)",
            })
            continue
        dump = printed.get(fam, {}).get(name)
        key = (fam, name)
        if key in xt_tables:
            excluded.add(key)
            if dump is None:
                snap.table_sources.append({
                    "table": label, "source": "",
                    "reason": "holds iptables-nft (xt) expressions but no iptables-nft-save dump shows it",
                })
                snap.missing.append(
                    f"table {label}: holds iptables-nft (xt) expressions that nft -j prints without "
                    "their parameters, and no iptables-nft-save dump shows it: its rules are unknown"
                )
                continue
            snap.table_sources.append({
                "table": label, "source": dump.source,
                "reason": "iptables-nft table: it holds xt matches/targets, which nft -j prints "
                          "without their parameters",
            })
            if key in native:
                snap.missing.append(
                    f"table {label}: iptables-nft rules (read from {dump.source}) mixed with native "
                    "nftables rules (sets, maps, fib, ct...) that iptables-nft-save cannot show: "
                    "those rules may be shown wrongly"
                )
            continue
        if dump is not None and key not in native:
            excluded.add(key)
            snap.table_sources.append({
                "table": label, "source": dump.source,
                "reason": "iptables-nft table (iptables-nft-save shows every rule of it): read "
                          "from there so it is counted once",
            })
            continue
        if dump is not None:
            # iptables-nft-save misprints rules it cannot express: nft -j is exact for them
            dump.text = _strip_table(dump.text, name)
            why = (f"nf_tables table with rules iptables-nft-save cannot show (sets, maps, ct...): "
                   f"read from nft -j and left out of {dump.source}")
        elif fam in ("ip", "ip6") and name in _IPTABLES_TABLES:
            why = "nf_tables table with an iptables table name, not shown by iptables-nft-save"
        else:
            why = "native nftables table"
        snap.table_sources.append({"table": label, "source": NFT_SOURCE, "reason": why})

    if not excluded:
        return None
    keep = []
    for obj in items:
        body = next(iter(obj.values()), None) if isinstance(obj, dict) and len(obj) == 1 else None
        if isinstance(body, dict) and "family" in body:
            table_name = body.get("name") if "table" in obj else body.get("table")
            if (str(body.get("family")), str(table_name)) in excluded:
                continue
        keep.append(obj)
    return keep


def _strip_table(text: str, name: str) -> str:
    """An iptables-save text without table ``name`` (its ``*name`` ... ``COMMIT`` block)."""
    out: List[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        if line.startswith("*"):
            skipping = line[1:].strip() == name
            if skipping:
                out.append(f"# twinwall: table {name} left out: {NFT_SOURCE} is authoritative for it\n")
                continue
        if skipping:
            if line.strip() == "COMMIT":
                skipping = False
            continue
        out.append(line)
    return "".join(out)


# --------------------------------------------------------------------------------------------


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def collect_ipsets(snap: HostSnapshot, run: Runner = run_command) -> None:
    """``ipset save``: the sets ``-m set`` rules match against (nothing when ipset is not
    installed; a failure is noted in ``missing``)."""
    if which("ipset") is None:
        return
    res = run(["ipset", "save"])
    if res.ok:
        snap.ipsets = res.stdout
    else:
        snap.missing.append(f"ipset save: {res.reason()} (-m set matches stay undecidable)")


def collect_host(include_rules: bool = True) -> HostSnapshot:
    """Everything readable about the live host (this network namespace).

    Facts that cannot be read are listed in ``missing``, one sentence each; CollectionError only
    when nothing at all could be collected.
    """
    snap = HostSnapshot(
        hostname=socket.gethostname(),
        collected_at=_utc_now(),
        kernel=os.uname().release,
    )
    collect_sockets(snap)
    collect_addresses(snap)
    snap.ipv6 = ipv6_state(snap.addresses if snap.addresses_known else None)
    snap.sysctls = read_sysctls()
    if include_rules:
        collect_iptables_rulesets(snap)
        nft = collect_nft_ruleset(snap)
        if nft is not None:
            snap.rulesets.append(nft)
        collect_ipsets(snap)
    if (
        not snap.sockets_known
        and not snap.addresses_known
        and not snap.rulesets
        and snap.ipv6.enabled is None
    ):
        raise CollectionError("could not collect anything about this host: " + "; ".join(snap.missing))
    return snap
