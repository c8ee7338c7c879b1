"""twinwall explain"""

from __future__ import annotations

import argparse
import sys
from typing import List

from twinwall.commands.inputs import add_input_arguments, snapshot_from_args, unreadable_rulesets
from twinwall.errors import InputError

DESCRIPTION = """\
Show how a new connection to one port is decided: every rule it matches on its way through
the tables and chains (jumps, returns, policies), for IPv4 and IPv6 side by side, and the final
verdict for each group of sources (with the source ports and interfaces it depends on, and the
port a redirect sends it to)."""

EPILOG = """\
examples:
  sudo twinwall explain tcp/22
  twinwall explain udp/123 --family ipv6 --ip6tables v6.rules
  twinwall explain tcp/8080 --from 198.51.100.7 --sport 3000 --iptables v4.rules
  twinwall explain tcp/443 --format json

exit codes: 0 the families agree (or one family was asked about), 1 IPv4 and IPv6 decide the
question differently (one is open, restricted or filtered where the other is not), 2 error"""

SCHEMA = "twinwall.explain/1"
_REACH = ("open", "restricted", "filtered")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", metavar="PROTO/PORT", help="e.g. tcp/22 or udp/53")
    p.add_argument("--family", choices=("ipv4", "ipv6", "both"), default="both",
                   help="the family (or families) whose walk is shown (default: both, side by side)")
    p.add_argument("--from", dest="source", metavar="ADDR", help="a source address or prefix (default: any remote source)")
    p.add_argument("--sport", metavar="PORT", type=_port, help="the client's source port (default: any)")
    p.add_argument("--iface", metavar="NAME", help="the interface the packet arrives on (default: any but lo)")
    p.add_argument("--to", dest="dest", metavar="ADDR", help="the destination address (default: any of the host's)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    add_input_arguments(p)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def parse_service(text: str):
    proto, sep, port = text.partition("/")
    proto = proto.lower()
    if not sep or proto not in ("tcp", "udp") or not port.isdigit():
        raise InputError(f"service must look like tcp/22 or udp/53, not {text!r}")
    if not 0 < int(port) <= 65535:
        raise InputError(f"{text!r}: the port must be 1-65535")
    return proto, int(port)


def run(args: argparse.Namespace) -> int:
    from twinwall.analysis.explain import explain
    from twinwall.report.json_out import write_json

    proto, port = parse_service(args.service)
    snapshot = snapshot_from_args(args)
    families: List[str] = ["ipv4", "ipv6"] if args.family == "both" else [args.family]
    results = {}
    for family in families:
        source = args.source
        if source and (":" in source) != (family == "ipv6"):
            if args.family != "both":
                raise InputError(f"--from {source} is not an {family} address")
            continue
        dest = args.dest
        if dest and (":" in dest) != (family == "ipv6"):
            continue
        results[family] = explain(snapshot, family, proto, port, source, args.iface, dest, args.sport)
    statuses = {r.status for r in results.values() if r.status in _REACH}
    differ = len(results) == 2 and len(statuses) == 2
    if args.format == "json":
        write_json({"schema": SCHEMA, "protocol": proto, "port": port,
                    "query": {"from": args.source, "sport": args.sport, "iface": args.iface, "to": args.dest},
                    "families": {f: r.to_json() for f, r in results.items()}, "families_differ": differ})
    else:
        for r in results.values():
            sys.stdout.write(r.text() + "\n")
    unreadable = unreadable_rulesets(snapshot, args, "explain")
    if unreadable:
        print(f"twinwall: {unreadable}", file=sys.stderr)
        return 2
    return 1 if differ else 0
