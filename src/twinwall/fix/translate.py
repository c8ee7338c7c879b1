"""What an address, an ICMP type or a whole iptables rule of one family means in the other.

Addresses are translated by role (the whole space, loopback, link-local, multicast) and by the
admin's ``--map V4=V6`` prefixes; a prefix with neither is refused with that reason, never
guessed and never dropped (ferm's ``domain (ip ip6)`` dropped a negated IPv4-only set from the
IPv6 rule and opened SSH to everyone). ICMP and ``--reject-with`` go through twinwall.twins: a
rule is never translated into ``ip6tables -p icmp``, which the tool accepts and never matches.
"""

from __future__ import annotations

import ipaddress
import shlex
from typing import List, Sequence, Tuple, Union

from twinwall.errors import InputError
from twinwall.fix.model import Refused
from twinwall.model import IPV6
from twinwall.twins import ICMP4_TO_6, ICMP4_TYPE, ICMP6_TO_4, ICMP6_TYPE, REJECT4_TO_6, REJECT6_TO_4

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# (IPv4 role, IPv6 role): the same job in each family
ROLES: Tuple[Tuple[str, str, str], ...] = (
    ("any", "0.0.0.0/0", "::/0"),
    ("loopback", "127.0.0.0/8", "::1/128"),
    ("link-local", "169.254.0.0/16", "fe80::/10"),
    ("multicast", "224.0.0.0/4", "ff00::/8"),
)


class AddressMap:
    """Prefix translations: the roles above plus the admin's ``--map`` pairs (either direction)."""

    def __init__(self, pairs: Sequence[Tuple[str, str]] = ()):
        self.pairs: List[Tuple[Network, Network]] = []
        for v4, v6 in pairs:
            self.pairs.append((ipaddress.ip_network(v4, strict=False), ipaddress.ip_network(v6, strict=False)))

    @classmethod
    def parse(cls, texts: Sequence[str]) -> "AddressMap":
        """``--map 192.0.2.0/24=2001:db8:1::/64`` values (the IPv4 side first)."""
        pairs = []
        for text in texts:
            left, sep, right = text.partition("=")
            try:
                a, b = ipaddress.ip_network(left.strip(), strict=False), ipaddress.ip_network(right.strip(), strict=False)
            except ValueError:
                raise InputError(f"--map {text!r}: give V4PREFIX=V6PREFIX, e.g. 192.0.2.0/24=2001:db8:1::/64") from None
            if not sep:
                raise InputError(f"--map {text!r}: give V4PREFIX=V6PREFIX, e.g. 192.0.2.0/24=2001:db8:1::/64")
            if a.version == 6 and b.version == 4:
                a, b = b, a
            if a.version != 4 or b.version != 6:
                raise InputError(f"--map {text!r}: one IPv4 and one IPv6 prefix")
            if 32 - a.prefixlen > 128 - b.prefixlen:
                raise InputError(f"--map {text!r}: the IPv6 prefix is too small to hold every address of the IPv4 one")
            pairs.append((str(a), str(b)))
        return cls(pairs)

    def translate(self, cidr: str, to_family: str) -> str:
        """The CIDR of ``to_family`` with the same role; Refused when none is known."""
        net = ipaddress.ip_network(cidr, strict=False)
        want = 6 if to_family == IPV6 else 4
        if net.version == want:
            return str(net)
        for _name, r4, r6 in ROLES:
            src, dst = (r4, r6) if net.version == 4 else (r6, r4)
            if str(net) == src:
                return dst
        for p4, p6 in self.pairs:
            src_net, dst_net = (p4, p6) if net.version == 4 else (p6, p4)
            if net == src_net:
                return str(dst_net)
            if net.subnet_of(src_net):  # type: ignore[arg-type]
                # the host part carried over: 192.0.2.5 in 192.0.2.0/24=2001:db8:1::/64 is 2001:db8:1::5
                offset = int(net.network_address) - int(src_net.network_address)
                host_bits = net.max_prefixlen - net.prefixlen
                if host_bits > dst_net.max_prefixlen - dst_net.prefixlen:
                    break
                base = int(dst_net.network_address) + offset
                return str(ipaddress.ip_network((base, dst_net.max_prefixlen - host_bits)))
        fam = "IPv6" if want == 6 else "IPv4"
        raise Refused(f"no {fam} twin known for {net}: name one with --map "
                      + (f"{net}=2001:db8:.../64" if net.version == 4 else f"192.0.2.0/24={net}"))


def icmp_twin(name: str, to_family: str) -> str:
    """An ICMP type name (or number) of one family as the other's; Refused when it has none."""
    table, numbers = (ICMP4_TO_6, ICMP4_TYPE) if to_family == IPV6 else (ICMP6_TO_4, ICMP6_TYPE)
    if name.isdigit():
        name = next((n for n, v in numbers.items() if str(v) == name), name)
    if name in table and table[name] is not None:
        return table[name]  # type: ignore[return-value]
    raise Refused(f"ICMP type {name} has no twin in {'ICMPv6' if to_family == IPV6 else 'ICMP'}")


def reject_twin(value: str, to_family: str) -> str:
    table = REJECT4_TO_6 if to_family == IPV6 else REJECT6_TO_4
    if value in table:
        return table[value]
    if value in (REJECT6_TO_4 if to_family == IPV6 else REJECT4_TO_6):
        return value  # already the family's own
    raise Refused(f"--reject-with {value} has no twin")


_ADDRESS_OPTIONS = ("-s", "--source", "-d", "--destination")
# options whose value names something only one family has
_FAMILY_ONLY = {"--to-destination", "--to-source", "--to", "--match-set", "--set", "--src-range", "--dst-range"}


def translate_iptables_args(args: Sequence[str], from_family: str, to_family: str, amap: AddressMap) -> List[str]:
    """An iptables rule's arguments (as iptables-save prints them, after ``-A CHAIN``) written for
    the other family: addresses by role or map, ICMP via twins, ``ttl`` as ``hl``."""
    out: List[str] = []
    i = 0
    a = list(args)
    while i < len(a):
        tok = a[i]
        nxt = a[i + 1] if i + 1 < len(a) else None
        if tok in _ADDRESS_OPTIONS and nxt is not None:
            out += [tok, ",".join(amap.translate(c, to_family) for c in nxt.split(","))]
            i += 2
            continue
        if tok in _FAMILY_ONLY:
            raise Refused(f"{tok} names {from_family} addresses or sets: write the {to_family} rule by hand")
        if tok == "-p" and nxt is not None:
            out += ["-p", _proto_twin(nxt, to_family)]
            i += 2
            continue
        if tok == "-m" and nxt in ("icmp", "icmp6"):
            out += ["-m", "icmp6" if to_family == IPV6 else "icmp"]
            i += 2
            continue
        if tok == "-m" and nxt in ("ttl", "hl"):
            out += ["-m", "hl" if to_family == IPV6 else "ttl"]
            i += 2
            continue
        if tok in ("--icmp-type", "--icmpv6-type") and nxt is not None:
            opt = "--icmpv6-type" if to_family == IPV6 else "--icmp-type"
            out += [opt, icmp_twin(nxt.split("/")[0], to_family)]
            i += 2
            continue
        if tok in ("--ttl-eq", "--ttl-gt", "--ttl-lt", "--hl-eq", "--hl-gt", "--hl-lt") and nxt is not None:
            suffix = tok.rsplit("-", 1)[1]
            out += [("--hl-" if to_family == IPV6 else "--ttl-") + suffix, nxt]
            i += 2
            continue
        if tok == "--reject-with" and nxt is not None:
            out += [tok, reject_twin(nxt, to_family)]
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _proto_twin(proto: str, to_family: str) -> str:
    icmps = ("icmp", "ipv6-icmp", "icmpv6", "1", "58")
    if proto in icmps:
        return "ipv6-icmp" if to_family == IPV6 else "icmp"
    return proto


def split_rule(line: str) -> Tuple[str, List[str]]:
    """``-A CHAIN args...`` -> (CHAIN, args)."""
    toks = shlex.split(line)
    if len(toks) < 2 or toks[0] not in ("-A", "-I"):
        raise Refused(f"not an iptables rule line: {line}")
    return toks[1], toks[2:]


def join_args(args: Sequence[str]) -> str:
    """Arguments as one iptables-save line (double quotes, as iptables-save writes them)."""
    return " ".join(f'"{a}"' if (" " in a or not a) and not a.startswith('"') else a for a in args)


# nft's reject codes of one family -> the other's (``reject with icmp X`` / ``icmpv6 X``)
NFT_REJECT4_TO_6 = {"port-unreachable": "port-unreachable", "net-unreachable": "no-route",
                    "host-unreachable": "addr-unreachable", "prot-unreachable": "port-unreachable",
                    "net-prohibited": "admin-prohibited", "host-prohibited": "admin-prohibited",
                    "admin-prohibited": "admin-prohibited"}
NFT_REJECT6_TO_4 = {"port-unreachable": "port-unreachable", "no-route": "net-unreachable",
                    "addr-unreachable": "host-unreachable", "admin-prohibited": "admin-prohibited"}
# words of an nft rule that name one family's addresses, sets or chains: not translated here
_NFT_REFUSED = ("{", "@", "jump", "goto", "map", "vmap", "dnat", "snat", "masquerade", "redirect", "fib",
                "ip6 nexthdr", "ip protocol", "ip6 hoplimit", "ip ttl")


def translate_nft_rule(text: str, from_family: str, to_family: str, amap: AddressMap) -> str:
    """A native nft rule's matches and verdict (as nft prints it, ``# handle`` aside) written for
    the other family, without its ``meta nfproto``: addresses by role or map, ICMP via twins, the
    reject code twinned. Refused for what names one family's sets, chains or header fields."""
    body = text.split(" # handle ")[0].strip()
    for word in _NFT_REFUSED:
        if f" {word} " in f" {body} " or (word in "{@" and word in body):
            raise Refused(f"nft rule '{body}': {word!r} is not twinned automatically: write the {to_family} rule by hand")
    toks = body.split()
    mine, theirs = ("ip", "ip6") if to_family == IPV6 else ("ip6", "ip")
    icmp_from, icmp_to = ("icmp", "icmpv6") if to_family == IPV6 else ("icmpv6", "icmp")
    out: List[str] = []
    i = 0
    while i < len(toks):
        tok, nxt = toks[i], (toks[i + 1] if i + 1 < len(toks) else None)
        after = toks[i + 2] if i + 2 < len(toks) else None
        if tok == "meta" and nxt == "nfproto":
            i += 3  # the family pin: the owner writes the new one
            continue
        if tok == mine and nxt in ("saddr", "daddr") and after is not None:
            out += [theirs, nxt, amap.translate(after, to_family)]
            i += 3
            continue
        if tok == mine or tok == theirs:
            raise Refused(f"nft rule '{body}': {tok} {nxt} is not twinned automatically")
        if tok == icmp_from and nxt == "type" and after is not None:
            out += [icmp_to, "type", icmp_twin(after, to_family)]
            i += 3
            continue
        if tok == "l4proto" and nxt == icmp_from:
            out += ["l4proto", icmp_to]
            i += 2
            continue
        if tok == "with" and nxt == icmp_from and after is not None:
            code = toks[i + 3] if after == "type" and i + 3 < len(toks) else after
            table = NFT_REJECT4_TO_6 if to_family == IPV6 else NFT_REJECT6_TO_4
            if code not in table:
                raise Refused(f"nft rule '{body}': reject code {code} has no twin")
            out += ["with", icmp_to, "type", table[code]]
            i += 4 if after == "type" else 3
            continue
        out.append(tok)
        i += 1
    return " ".join(out)
