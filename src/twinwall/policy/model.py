"""A policy file (TOML) -> a typed ``Policy``.

The file says what a host accepts once, for both families::

    [defaults]
    input = "drop"            # or {ipv4 = "drop", ipv6 = "accept"}
    log_dropped = true
    # families = ["ipv4"]     # the families the file governs (default both): the other one is
    #                         # neither compiled, proved nor applied (the host keeps its rules)
    [groups]
    office = ["192.0.2.0/24", "2001:db8:1::/64"]   # each family takes its own members
    [[rule]]
    direction = "in"
    proto = "tcp"
    ports = [22]
    from = "office"
    action = "accept"

Every error names the file, the line and the key of the bad entry (Python's tomllib reports
no positions for values, so the lines of ``[[rule]]`` blocks and their keys are found here by
reading the text the way TOML lays it out: a table header, then its ``key = value`` lines).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twinwall.errors import InputError
from twinwall.twins import ICMP4_TO_6, ICMP4_TYPE, ICMP6_TO_4, ICMP6_TYPE

IPV4, IPV6 = "ipv4", "ipv6"
FAMILIES = (IPV4, IPV6)
FAMILY_LABEL = {IPV4: "IPv4", IPV6: "IPv6"}
# the file's direction -> the netfilter hook (and iptables chain, upper-cased)
HOOK_OF = {"in": "input", "out": "output", "forward": "forward"}
HOOKS = ("input", "forward", "output")
ACTIONS = ("accept", "drop", "reject")
# protocols a rule can name besides tcp/udp/icmp/any (the numbers both families share)
OTHER_PROTOCOLS = {"sctp": 132, "dccp": 33, "udplite": 136, "gre": 47, "esp": 50, "ah": 51}
PORT_PROTOCOLS = ("tcp", "udp", "sctp", "dccp", "udplite")

# [defaults] switches for the rules every compiled ruleset starts with (see generators.common)
BASELINE_SWITCHES = {
    "loopback": "accept everything on the loopback interface (first rule of INPUT and OUTPUT)",
    "spoofed_loopback": "drop loopback sources (127.0.0.0/8, ::1) arriving on other interfaces",
    "essential_icmp": "RFC 4890 ICMPv6 (neighbour discovery with hop limit 255, packet too big, "
    "MLD from fe80::/10, errors) and the ICMP errors that are their IPv4 twins, before any "
    "conntrack-state rule",
    "established": "accept packets of established and related connections",
    "drop_invalid": "drop packets conntrack marks INVALID",
}

_RULE_KEYS = (
    "direction", "proto", "ports", "source_ports", "from", "to", "not_from", "not_to",
    "in_interface", "out_interface", "not_in_interface", "not_out_interface", "interface",
    "icmp_types", "hop_limit", "uid", "action", "reject_with", "family", "log", "comment",
)


@dataclass(frozen=True)
class Members:
    """Addresses a rule names, per family (CIDR strings as given, normalised)."""

    ipv4: Tuple[str, ...] = ()
    ipv6: Tuple[str, ...] = ()
    names: Tuple[str, ...] = ()  # what the file said (group names and CIDRs), for messages

    def of(self, family: str) -> Tuple[str, ...]:
        return self.ipv4 if family == IPV4 else self.ipv6

    def describe(self) -> str:
        return ", ".join(self.names)


@dataclass
class Rule:
    number: int  # 1-based position among the file's [[rule]] entries
    line: int  # the line of its [[rule]] header
    direction: str
    action: str
    proto: str = "any"  # tcp | udp | icmp | any | sctp... | a protocol number
    ports: Tuple[Tuple[int, int], ...] = ()
    source_ports: Tuple[Tuple[int, int], ...] = ()
    sources: Optional[Members] = None
    destinations: Optional[Members] = None
    not_sources: Optional[Members] = None
    not_destinations: Optional[Members] = None
    in_interfaces: Tuple[str, ...] = ()
    out_interfaces: Tuple[str, ...] = ()
    not_in_interfaces: Tuple[str, ...] = ()
    not_out_interfaces: Tuple[str, ...] = ()
    icmp_types: Tuple[str, ...] = ()
    hop_limit: Optional[int] = None
    uid: Optional[str] = None  # a user name, a number or "lo-hi"
    reject_with: str = ""
    family: str = "both"
    log: bool = False
    comment: str = ""
    key_lines: Dict[str, int] = field(default_factory=dict)

    @property
    def hook(self) -> str:
        return HOOK_OF[self.direction]

    def where(self, key: str = "") -> str:
        return f"line {self.key_lines.get(key, self.line)}"

    def label(self) -> str:
        return f"rule #{self.number} (line {self.line})"

    def families(self) -> Tuple[str, ...]:
        return FAMILIES if self.family == "both" else (self.family,)


@dataclass
class Defaults:
    # (hook, family) -> accept | drop | reject
    policy: Dict[Tuple[str, str], str] = field(default_factory=dict)
    # the families the file governs; a family outside it is left as the host has it
    families: Tuple[str, ...] = FAMILIES
    log_dropped: bool = False
    loopback: bool = True
    spoofed_loopback: bool = True
    essential_icmp: bool = True
    established: bool = True
    drop_invalid: bool = True

    def of(self, hook: str, family: str) -> str:
        return self.policy.get((hook, family), "accept" if hook == "output" else "drop")


@dataclass
class Policy:
    path: str
    defaults: Defaults
    groups: Dict[str, Members]
    rules: List[Rule]
    table: str = "twinwall"  # the nft table's name

    @property
    def families(self) -> Tuple[str, ...]:
        """The families the file governs (``[defaults] families``; both unless it says)."""
        return self.defaults.families

    def outside(self) -> Tuple[str, ...]:
        """The families the file leaves alone: not compiled, proved or applied."""
        return tuple(f for f in FAMILIES if f not in self.defaults.families)

    def rule_families(self, rule: Rule) -> Tuple[str, ...]:
        """The governed families a rule exists in (``both`` means the file's families)."""
        return tuple(f for f in rule.families() if f in self.defaults.families)


# ---------------------------------------------------------------------------------------------
# reading


def load_policy(path: str) -> Policy:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise InputError(f"policy file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"policy file is a directory: {path}") from None
    except PermissionError:
        raise InputError(f"policy file not readable (permission denied): {path}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_policy(text, path)


def parse_policy(text: str, path: str = "policy.toml") -> Policy:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ImportError:
            raise InputError("reading a policy file needs Python 3.11 (tomllib) or the tomli package") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    lines = _Lines(text)
    reader = _Reader(path, lines)
    for key in data:
        if key not in ("defaults", "groups", "rule", "table"):
            raise reader.error(lines.top_key(key), key, f"unknown section {key!r} (known: [defaults], [groups], [[rule]], table)")
    table = data.get("table", "twinwall")
    if not isinstance(table, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,30}", table):
        raise reader.error(lines.top_key("table"), "table", "table must be an nft table name (letters, digits, _ and -)")
    groups = reader.groups(data.get("groups", {}))
    defaults = reader.defaults(data.get("defaults", {}))
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise reader.error(lines.top_key("rule"), "rule", "rules are [[rule]] tables")
    rules = [reader.rule(i + 1, r, groups, defaults.families) for i, r in enumerate(raw_rules)]
    return Policy(path, defaults, groups, rules, table)


def families_text(families: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{f}"' for f in families) + "]"


class _Lines:
    """Where tables and keys sit in the TOML text."""

    _HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*(?:\"([^\"]+)\"|'([^']+)'|([A-Za-z0-9_-]+))\s*=")

    def __init__(self, text: str):
        self.blocks: Dict[Tuple[str, int], Tuple[int, Dict[str, int]]] = {}
        self.top: Dict[str, int] = {}
        counts: Dict[str, int] = {}
        current: Optional[Tuple[str, int]] = None
        for n, line in enumerate(text.splitlines(), 1):
            h = self._HEADER.match(line)
            if h and not self._KEY.match(line):
                name = h.group(2).strip().strip("\"'")
                idx = counts.get(name, 0) + 1 if h.group(1) else 1
                counts[name] = idx
                current = (name, idx)
                self.blocks[current] = (n, {})
                self.top.setdefault(name, n)
                continue
            k = self._KEY.match(line)
            if k:
                key = k.group(1) or k.group(2) or k.group(3)
                if current is None:
                    self.top.setdefault(key, n)
                else:
                    self.blocks[current][1].setdefault(key, n)

    def block(self, name: str, idx: int = 1) -> Tuple[int, Dict[str, int]]:
        return self.blocks.get((name, idx), (self.top.get(name, 1), {}))

    def top_key(self, key: str) -> int:
        return self.top.get(key, 1)


class _Reader:
    def __init__(self, path: str, lines: _Lines):
        self.path = path
        self.lines = lines

    def error(self, line: int, key: str, message: str) -> InputError:
        return InputError(f"{self.path}:{line}: {key}: {message}")

    # -- [groups] -------------------------------------------------------------------------

    def groups(self, raw: Any) -> Dict[str, Members]:
        head, keys = self.lines.block("groups")
        if not isinstance(raw, dict):
            raise self.error(head, "groups", "[groups] must be a table of name = [addresses]")
        out: Dict[str, Members] = {}
        for name, value in raw.items():
            line = keys.get(name, head)
            where = f"groups.{name}"
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
                raise self.error(line, where, "a group name starts with a letter (letters, digits, _ and -)")
            items = value if isinstance(value, list) else [value]
            v4: List[str] = []
            v6: List[str] = []
            for item in items:
                if not isinstance(item, str):
                    raise self.error(line, where, f"members are address strings, not {item!r}")
                if item in out:  # a group may take another group's members
                    v4.extend(out[item].ipv4)
                    v6.extend(out[item].ipv6)
                    continue
                net = self._network(item, line, where)
                (v4 if net.version == 4 else v6).append(str(net))
            out[name] = Members(tuple(dict.fromkeys(v4)), tuple(dict.fromkeys(v6)), (name,))
        return out

    def _network(self, item: str, line: int, where: str):
        try:
            return ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise self.error(line, where, f"{item!r} is neither a group name nor an address or CIDR") from None

    # -- [defaults] -----------------------------------------------------------------------

    def defaults(self, raw: Any) -> Defaults:
        head, keys = self.lines.block("defaults")
        if not isinstance(raw, dict):
            raise self.error(head, "defaults", "[defaults] must be a table")
        d = Defaults()
        if "families" in raw:  # first: the per-family defaults below may only name these
            d.families = self._families(raw["families"], keys.get("families", head))
        for key, value in raw.items():
            line = keys.get(key, head)
            where = f"defaults.{key}"
            if key == "families":
                continue
            if key in ("input", "forward", "output"):
                per = value if isinstance(value, dict) else {f: value for f in d.families}
                for fam, action in per.items():
                    if fam not in FAMILIES:
                        raise self.error(line, where, f"families are ipv4 and ipv6, not {fam!r}")
                    if fam not in d.families:
                        raise self.error(line, where, f"{fam} is outside this file ([defaults] families = "
                                         f"{families_text(d.families)}): add it there or leave it out here")
                    if action not in ACTIONS:
                        raise self.error(line, where, f"must be one of {', '.join(ACTIONS)}, not {action!r}")
                    d.policy[(key, fam)] = action
            elif key == "log_dropped" or key in BASELINE_SWITCHES:
                if not isinstance(value, bool):
                    raise self.error(line, where, "must be true or false")
                setattr(d, key, value)
            else:
                known = ", ".join(["families", "input", "forward", "output", "log_dropped"] + list(BASELINE_SWITCHES))
                raise self.error(line, where, f"unknown key (known: {known})")
        return d

    def _families(self, value: Any, line: int) -> Tuple[str, ...]:
        where = "defaults.families"
        if not isinstance(value, list) or not value:
            raise self.error(line, where, 'must be a non-empty list: ["ipv4"], ["ipv6"] or ["ipv4", "ipv6"]')
        for fam in value:
            if fam not in FAMILIES:
                raise self.error(line, where, f"families are ipv4 and ipv6, not {fam!r}")
        if len(set(value)) != len(value):
            raise self.error(line, where, "a family is named twice")
        return tuple(f for f in FAMILIES if f in value)

    # -- [[rule]] -------------------------------------------------------------------------

    def rule(self, number: int, raw: Any, groups: Dict[str, Members], families: Sequence[str] = FAMILIES) -> Rule:
        head, keys = self.lines.block("rule", number)

        def err(key: str, message: str) -> InputError:
            return self.error(keys.get(key, head), f"[[rule]] #{number} {key}" if key else f"[[rule]] #{number}", message)

        if not isinstance(raw, dict):
            raise err("", "a rule is a table of keys")
        for key in raw:
            if key not in _RULE_KEYS:
                raise err(key, f"unknown key (known: {', '.join(_RULE_KEYS)})")
        direction = raw.get("direction")
        if not isinstance(direction, str) or direction not in HOOK_OF:
            raise err("direction", f"must be in, out or forward, not {direction!r}" if direction is not None
                      else "missing (in, out or forward)")
        action = raw.get("action")
        if action not in ACTIONS:
            raise err("action", f"must be one of {', '.join(ACTIONS)}, not {action!r}" if action is not None
                      else "missing (accept, drop or reject)")
        rule = Rule(number, head, direction, action, key_lines=dict(keys))
        rule.family = raw.get("family", "both")
        if rule.family not in ("both",) + FAMILIES:
            raise err("family", f"must be ipv4, ipv6 or both, not {rule.family!r}")
        if rule.family in FAMILIES and rule.family not in families:
            raise err("family", f"{rule.family} is outside this file ([defaults] families = "
                      f"{families_text(families)}): the rule would never be compiled")
        proto = raw.get("proto", "any")
        if isinstance(proto, int) and not isinstance(proto, bool) and 0 <= proto <= 255:
            proto = str(proto)
        if not isinstance(proto, str) or not (proto in ("tcp", "udp", "icmp", "any") or proto in OTHER_PROTOCOLS
                                              or (proto.isdigit() and int(proto) <= 255)):
            raise err("proto", f"must be tcp, udp, icmp, any, {', '.join(OTHER_PROTOCOLS)} or a number, not {proto!r}")
        if proto in ("1", "58"):
            raise err("proto", "write proto = \"icmp\": it is ICMP over IPv4 and ICMPv6 over IPv6")
        if proto in ("6", "17"):
            proto = "tcp" if proto == "6" else "udp"
        rule.proto = proto
        for key, attr in (("ports", "ports"), ("source_ports", "source_ports")):
            if key in raw:
                if proto not in PORT_PROTOCOLS:
                    raise err(key, f"ports need proto tcp, udp, sctp, dccp or udplite (this rule says proto = {proto!r})")
                setattr(rule, attr, self._ports(raw[key], lambda m, k=key: err(k, m)))
        for key, attr in (("from", "sources"), ("to", "destinations"), ("not_from", "not_sources"),
                          ("not_to", "not_destinations")):
            if key in raw:
                negated, members = self._members(raw[key], groups, lambda m, k=key: err(k, m))
                if negated:
                    attr = "not_" + attr if not attr.startswith("not_") else attr[4:]
                if getattr(rule, attr) is not None:
                    raise err(key, f"{key} given twice (once with '!')")
                setattr(rule, attr, members)
        self._interfaces(rule, raw, err)
        if "icmp_types" in raw:
            if proto != "icmp":
                raise err("icmp_types", "icmp_types need proto = \"icmp\"")
            rule.icmp_types = self._icmp_types(raw["icmp_types"], lambda m: err("icmp_types", m))
            if rule.family != "both":
                self._icmp_in_family(rule, lambda m: err("icmp_types", m))
        if "hop_limit" in raw:
            hl = raw["hop_limit"]
            if not isinstance(hl, int) or isinstance(hl, bool) or not 0 <= hl <= 255:
                raise err("hop_limit", "must be a number 0-255 (IPv6 hop limit, IPv4 TTL)")
            rule.hop_limit = hl
        if "uid" in raw:
            if direction != "out":
                raise err("uid", "the owner match works on locally generated packets only: uid needs direction = \"out\"")
            uid = raw["uid"]
            if isinstance(uid, int) and not isinstance(uid, bool) and uid >= 0:
                uid = str(uid)
            if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*\$?|\d+(-\d+)?", uid):
                raise err("uid", f"must be a user name, a number or a range \"1000-1999\", not {raw['uid']!r}")
            if "-" in uid and uid[0].isdigit():
                lo, hi = (int(x) for x in uid.split("-"))
                if lo > hi:
                    raise err("uid", f"range {uid!r} runs backwards")
            rule.uid = uid
        if "reject_with" in raw:
            if action != "reject":
                raise err("reject_with", "reject_with needs action = \"reject\"")
            rw = raw["reject_with"]
            if rw not in ("tcp-reset", "port-unreachable", "admin-prohibited", "host-unreachable", "net-unreachable"):
                raise err("reject_with", "must be tcp-reset, port-unreachable, admin-prohibited, host-unreachable or net-unreachable")
            if rw == "tcp-reset" and proto != "tcp":
                raise err("reject_with", "tcp-reset needs proto = \"tcp\"")
            rule.reject_with = rw
        for key in ("log",):
            if key in raw:
                if not isinstance(raw[key], bool):
                    raise err(key, "must be true or false")
                rule.log = raw[key]
        if "comment" in raw:
            if not isinstance(raw["comment"], str) or len(raw["comment"]) > 200 or any(c in raw["comment"] for c in "\"\n\\"):
                raise err("comment", "a comment is one line of at most 200 characters without quotes or backslashes")
            rule.comment = raw["comment"]
        return rule

    def _interfaces(self, rule: Rule, raw: Dict, err) -> None:
        for key in ("interface", "in_interface", "out_interface", "not_in_interface", "not_out_interface"):
            if key not in raw:
                continue
            value = raw[key]
            names = value if isinstance(value, list) else [value]
            for n in names:
                if not isinstance(n, str) or not re.fullmatch(r"!?[A-Za-z0-9_.:@-]{1,15}\+?", n):
                    raise err(key, f"{n!r} is not an interface name (up to 15 characters; a trailing + matches a prefix)")
            negated = [n[1:] for n in names if n.startswith("!")]
            plain = [n for n in names if not n.startswith("!")]
            if negated and plain:
                raise err(key, "give either names or '!'names, not both")
            if key == "interface":
                side = "in" if rule.direction == "in" else "out"
                if rule.direction == "forward":
                    raise err(key, "a forward rule says in_interface or out_interface")
            else:
                side = "in" if "in_" in key else "out"
            neg = key.startswith("not_") or bool(negated)
            if side == "in" and rule.direction == "out":
                raise err(key, "locally generated packets have no input interface: use out_interface")
            if side == "out" and rule.direction == "in":
                raise err(key, "packets to this host have no output interface: use in_interface")
            attr = ("not_" if neg else "") + side + "_interfaces"
            if getattr(rule, attr):
                raise err(key, "interfaces given twice")
            setattr(rule, attr, tuple(negated or plain))

    def _ports(self, value: Any, err) -> Tuple[Tuple[int, int], ...]:
        items = value if isinstance(value, list) else [value]
        out = []
        if not items:
            raise err("an empty port list matches nothing: leave ports out for every port")
        for item in items:
            if isinstance(item, bool):
                raise err(f"{item!r} is not a port")
            if isinstance(item, int):
                lo = hi = item
            elif isinstance(item, str) and re.fullmatch(r"\d+(-\d+)?", item.strip()):
                a, _, b = item.strip().partition("-")
                lo, hi = int(a), int(b or a)
            else:
                raise err(f"{item!r} is not a port or a range \"8000-8100\"")
            if not (0 <= lo <= hi <= 65535):
                raise err(f"{item!r}: ports are 0-65535, ranges low-high")
            out.append((lo, hi))
        return tuple(sorted(set(out)))

    def _members(self, value: Any, groups: Dict[str, Members], err) -> Tuple[bool, Members]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise err("an empty address list: leave the key out for any address")
        negated = None
        v4: List[str] = []
        v6: List[str] = []
        for item in items:
            if not isinstance(item, str):
                raise err(f"{item!r} is not a group name or an address")
            neg = item.startswith("!")
            if negated is not None and neg != negated:
                raise err("give either addresses or '!'addresses, not both (use from and not_from)")
            negated = neg
            name = item[1:].strip() if neg else item.strip()
            if name in groups:
                v4.extend(groups[name].ipv4)
                v6.extend(groups[name].ipv6)
                continue
            try:
                net = ipaddress.ip_network(name, strict=False)
            except ValueError:
                known = ", ".join(groups) or "none defined"
                raise err(f"{name!r} is neither a group (groups: {known}) nor an address or CIDR") from None
            (v4 if net.version == 4 else v6).append(str(net))
        names = tuple(i.lstrip("!").strip() for i in items)
        return bool(negated), Members(tuple(dict.fromkeys(v4)), tuple(dict.fromkeys(v6)), names)

    def _icmp_types(self, value: Any, err) -> Tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            if not isinstance(item, str) or item not in ICMP4_TYPE and item not in ICMP6_TYPE and item != "fragmentation-needed":
                names = sorted(set(ICMP4_TYPE) | set(ICMP6_TYPE) | {"fragmentation-needed"})
                raise err(f"unknown ICMP type {item!r} (known: {', '.join(names)})")
            out.append(item)
        return tuple(dict.fromkeys(out))

    def _icmp_in_family(self, rule: Rule, err) -> None:
        for name in rule.icmp_types:
            if icmp_type_in(name, rule.family) is None:
                raise err(f"{name!r} does not exist in {FAMILY_LABEL[rule.family]}")


def icmp_type_in(name: str, family: str) -> Optional[Tuple[str, int, Optional[int]]]:
    """The family's spelling, type number and code (None: every code) of an ICMP type name the
    file uses (either family's name; the twins table maps them), or None when it has no twin
    there (neighbour discovery in IPv4, timestamps in IPv6)."""
    if family == IPV4:
        if name == "fragmentation-needed" or name == "packet-too-big":
            return ("fragmentation-needed", 3, 4)
        v4 = name if name in ICMP4_TYPE else ICMP6_TO_4.get(name)
        return (v4, ICMP4_TYPE[v4], None) if v4 else None
    if name == "fragmentation-needed":
        return ("packet-too-big", ICMP6_TYPE["packet-too-big"], None)
    v6 = name if name in ICMP6_TYPE else ICMP4_TO_6.get(name)
    return (v6, ICMP6_TYPE[v6], None) if v6 else None


def ports_text(ports: Sequence[Tuple[int, int]], sep: str = "-") -> List[str]:
    return [str(lo) if lo == hi else f"{lo}{sep}{hi}" for lo, hi in ports]
