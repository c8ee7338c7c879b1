"""Where a command's host facts come from: the live host, a snapshot file, or saved dumps.

Shared by audit, explain (and later diff): ``add_input_arguments`` declares the options,
``snapshot_from_args`` turns them into a ``HostSnapshot``.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Tuple

from twinwall.errors import InputError
from twinwall.model import IPV4, IPV6, HostSnapshot, InterfaceAddress, Ipv6State, RulesetText


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "input (default: the live host, as root)",
        "Give a snapshot from 'twinwall collect', or saved dumps for golden images and CI. "
        "Any dump may be omitted; a family without a ruleset is reported as unknown.",
    )
    g.add_argument("--snapshot", metavar="FILE", help="a snapshot written by 'twinwall collect'")
    g.add_argument("--iptables", metavar="FILE", help="saved 'iptables-save' output ('-': standard input, for any one dump)")
    g.add_argument("--ip6tables", metavar="FILE", help="saved 'ip6tables-save' output")
    g.add_argument(
        "--iptables-legacy", metavar="FILE", help="saved 'iptables-legacy-save' output, when legacy tables are loaded too"
    )
    g.add_argument("--ip6tables-legacy", metavar="FILE", help="saved 'ip6tables-legacy-save' output")
    g.add_argument("--nft", metavar="FILE", help="saved 'nft -j list ruleset' output")
    g.add_argument(
        "--nft-netlink",
        metavar="FILE",
        help="with --nft: saved 'nft --debug=netlink list ruleset' output of the same ruleset. nft "
        "(1.0.6) prints some inet rules without their 'meta nfproto' test (meta nfproto ipv6 tcp "
        "dport 3000 reject with tcp reset lists as tcp dport 3000 reject ...); the netlink form "
        "keeps it, so such a rule is applied to its own family only instead of being uncertain",
    )
    g.add_argument(
        "--sockets", metavar="FILE", help="saved 'ss -tuln' output (-p, -e and -H variants welcome; -e shows v6only)"
    )
    g.add_argument(
        "--address",
        metavar="ADDR",
        action="append",
        default=[],
        help="offline: an address of the audited host (repeat for each). Without it the host is "
        "assumed to have the addresses its sockets are bound to, the single addresses its INPUT "
        "rules name as destination ('-A INPUT -d 192.0.2.1/32 ...': INPUT sees only the host's "
        "packets; the first 64, listed in the report) and one unnamed address; a family no "
        "--address names keeps that assumption",
    )
    g.add_argument(
        "--ipv6-disabled", action="store_true", help="offline: treat IPv6 as disabled on the audited host"
    )


def read_text(path: str, what: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        raise InputError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{what} file is a directory: {path}") from None
    except PermissionError:
        raise InputError(f"{what} file not readable (permission denied): {path}") from None


def snapshot_from_args(args: argparse.Namespace) -> HostSnapshot:
    offline = [path for _, path in dump_options(args)]
    if args.snapshot:
        if any(offline):
            raise InputError("--snapshot cannot be combined with --iptables/--ip6tables/--nft/--nft-netlink/--sockets")
        from twinwall.sources.snapshot import read_snapshot

        return read_snapshot(args.snapshot)
    if any(offline):
        return offline_snapshot(args)
    from twinwall.sources.host import collect_host

    return collect_host()


def unreadable_rulesets(snapshot: HostSnapshot, args: argparse.Namespace, command: str) -> str:
    """Why no ruleset could be read, as the one-line hint a command ends with, or "" when a
    ruleset was read (or none was refused: a host without rules is a finding, not an error)."""
    if snapshot.rulesets or not any("Permission denied" in m for m in snapshot.missing):
        return ""
    if getattr(args, "snapshot", None):
        return (f"the snapshot {args.snapshot} holds no ruleset (collected without root?): "
                "collect it again as root (sudo twinwall collect -o FILE)")
    return f"no ruleset could be read: run as root (sudo twinwall {command})"


def offline_snapshot(args: argparse.Namespace) -> HostSnapshot:
    snap = HostSnapshot(hostname="", sockets_known=bool(args.sockets))
    stdin_users = [opt for opt, path in dump_options(args) if path == "-"]
    if len(stdin_users) > 1:
        raise InputError(f"only one input can be read from standard input ('-'): {', '.join(stdin_users)}")
    dumps = [
        (args.iptables, IPV4, args.iptables_legacy, "iptables-save"),
        (args.ip6tables, IPV6, args.ip6tables_legacy, "ip6tables-save"),
        (args.iptables_legacy, IPV4, None, "iptables-legacy-save"),
        (args.ip6tables_legacy, IPV6, None, "ip6tables-legacy-save"),
    ]
    for path, family, legacy_beside, what in dumps:
        if path:
            text = read_text(path, what)
            if not text or text.isspace():  # (not strip(): a copy of a 20 MB dump)
                # what a failed 'iptables-save > FILE' leaves behind; read as "no tables" it
                # would report every port open with no word of doubt
                name = "standard input" if path == "-" else path
                raise InputError(
                    f"{name} is empty: not {what} output, or {what} printed nothing because no tables are "
                    f"loaded; if none are, say so with a file holding a comment line such as '# no tables' "
                    f"(an empty file is also what a failed '{what} > FILE' leaves)"
                )
            backend = "legacy" if "legacy" in what else _plain_dump_backend(text, bool(legacy_beside))
            snap.rulesets.append(RulesetText(family, "iptables-save", backend, path, text))
    if args.nft_netlink and not args.nft:
        raise InputError("--nft-netlink FILE goes with --nft FILE: the netlink dump only completes "
                         "the 'nft -j list ruleset' output of the same ruleset")
    if args.nft:
        nft = RulesetText("inet", "nft-json", "nft", args.nft, read_text(args.nft, "nft -j"))
        if args.nft_netlink:
            nft.netlink = _netlink_dump(args.nft_netlink)
        snap.rulesets.append(nft)
    if args.sockets:
        from twinwall.sources.sockets import parse_ss

        snap.sockets = parse_ss(read_text(args.sockets, "ss"))
    for addr in args.address:
        snap.addresses.append(_interface_address(addr))
    if args.address:
        snap.addresses_known = True
        # a family --address does not name keeps the offline assumption (the sockets' own
        # addresses plus a stand-in), rather than becoming a family with no address at all
        from twinwall.analysis.context import OFFLINE_STAND_IN, offline_socket_addresses

        for family in (IPV4, IPV6):
            if not any(a.family == family for a in snap.addresses):
                for address in [OFFLINE_STAND_IN[family]] + offline_socket_addresses(snap, family):
                    snap.addresses.append(InterfaceAddress("?", family, address, 128 if family == IPV6 else 32))
    if args.ipv6_disabled:
        snap.ipv6 = Ipv6State(False, ["--ipv6-disabled given on the command line"])
    else:
        snap.ipv6 = Ipv6State(None, ["offline input: IPv6 state of the audited host unknown, assumed enabled"])
    return snap


def dump_options(args: argparse.Namespace) -> List[Tuple[str, Optional[str]]]:
    """(option, FILE or None) of each saved-dump input."""
    return [
        ("--iptables", args.iptables),
        ("--ip6tables", args.ip6tables),
        ("--iptables-legacy", args.iptables_legacy),
        ("--ip6tables-legacy", args.ip6tables_legacy),
        ("--nft", args.nft),
        ("--nft-netlink", getattr(args, "nft_netlink", None)),
        ("--sockets", args.sockets),
    ]


def _netlink_dump(path: str) -> str:
    """The inet rule blocks of a saved ``nft --debug=netlink list ruleset`` output."""
    from twinwall.sources.host import netlink_rule_blocks

    text = read_text(path, "nft --debug=netlink")
    name = "standard input" if path == "-" else path
    blocks = netlink_rule_blocks(text)
    if not blocks and text.strip() and not text.lstrip().startswith("table "):
        raise InputError(f"{name} is not 'nft --debug=netlink list ruleset' output: no rule block "
                         "('inet TABLE CHAIN' followed by '  [ ... ]' lines) in it")
    if not text.strip():
        raise InputError(f"{name} is empty: not 'nft --debug=netlink list ruleset' output (did the "
                         "command fail?)")
    return blocks


def _plain_dump_backend(text: str, legacy_beside: bool) -> str:
    """Which kernel side a plain iptables-save dump came from: its header says so when the nft
    variant wrote it ("# Generated by iptables-nft-save"); a dump given beside a legacy one is
    the other half, nf_tables (that is what the --iptables-legacy option is for)."""
    head = text[:4096]
    if "-nft-save" in head or "(nf_tables)" in head:
        return "nft"
    if "-legacy-save" in head or "(legacy)" in head:
        return "legacy"
    return "nft" if legacy_beside else "unknown"


def _interface_address(text: str) -> InterfaceAddress:
    import ipaddress

    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise InputError(f"--address {text!r} is not an IP address") from None
    if iface.ip.is_unspecified or iface.ip.is_multicast:
        raise InputError(f"--address {text!r} is not an address a host can have (unspecified or multicast)")
    family = IPV4 if iface.version == 4 else IPV6
    scope = "host" if iface.ip.is_loopback else ("link" if iface.ip.is_link_local else "global")
    return InterfaceAddress("?", family, str(iface.ip), iface.network.prefixlen, scope)
