"""``twinwall scan``: probe hosts over IPv4 and IPv6 and compare with the audit."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from twinwall.errors import InputError
from twinwall.report.output import add_format_arguments, emit, emit_json
from twinwall.report.registry import SCAN
from twinwall.report.tty import use_colour

DESCRIPTION = """\
Probe the given hosts from here, over IPv4 and over IPv6, and show each port's state for both
families side by side: open / closed / filtered (UDP: open|filtered when nothing answers),
classified as nmap's connect scan (-sT) and UDP scan (-sU) do. Ports that behave differently
over the two families are family gaps. With --snapshot, each result is also compared with the
audit's prediction for that host and every disagreement is listed.

Only the hosts given are probed: no ranges, no CIDR blocks. A name is probed on all of its A and
AAAA addresses; addresses joined by commas (192.0.2.1,2001:db8::1) are one host; --snapshot adds
all of the host's global addresses."""

EPILOG = """\
ports: --ports takes N, N-M, top (100 common TCP ports; with --udp also common UDP ports),
  from-snapshot (the snapshot's listening ports) and comma lists of those, each optionally
  prefixed with tcp/ or udp/ (e.g. 22,80,8000-8100 or tcp/22,udp/53). Unprefixed items are TCP,
  and also UDP with --udp. Default: from-snapshot with --snapshot, else top.

TCP is scanned with connect(): open = connected, closed = refused (RST or ICMP port
unreachable, as nmap -sT reports it), filtered = no answer or another ICMP unreachable.
UDP probes carry a request for DNS (53), NTP (123), NetBIOS (137), SNMP (161), SSDP (1900) and
mDNS (5353), an empty datagram elsewhere: a reply = open, ICMP port unreachable = closed,
silence = open|filtered.

--syn is not implemented: twinwall always uses connect() scans (no raw sockets needed); giving
--syn exits with an error.

exit codes: 0 no family gap and no disagreement, 1 gaps or disagreements, 2 error."""


DEFAULT_TIMEOUT = 1.0
DEFAULT_MIN_TIMEOUT = 0.1
MAX_TIMEOUT = 3600.0  # seconds: a longer wait per try is a typo, not a scan
MAX_RATE = 1_000_000.0  # probes per second: far beyond what connect() scans reach
MIN_RATE = 0.001  # one probe per 1000 s: slower than nmap -T0 (one per 300 s)


def _finite_float(text: str) -> float:
    """A float, refusing what float() takes but no option can use: "nan" (a nan timeout
    expires at once, every port filtered; a nan rate is no limit) and "inf" or "1e999" (an
    endless wait)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _timeout(text: str) -> float:
    value = _finite_float(text)
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and at most {MAX_TIMEOUT:g} (seconds)")
    return value


def _rate(text: str) -> float:
    value = _finite_float(text)
    if value != 0 and not MIN_RATE <= value <= MAX_RATE:
        raise argparse.ArgumentTypeError(
            f"must be 0 (no limit) or between {MIN_RATE:g} and {MAX_RATE:.0f} (probes per second)"
        )
    return value


def _int_range(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hosts", nargs="*", metavar="HOST",
                        help="IPv4/IPv6 address or host name (no ranges, no CIDR); join one "
                        "machine's addresses with commas: 192.0.2.1,2001:db8::1")
    parser.add_argument("--ports", "-p", metavar="SPEC",
                        help="ports to probe (see below); default: top, or from-snapshot")
    parser.add_argument("--snapshot", metavar="FILE",
                        help="host snapshot (twinwall collect -o FILE): adds the host's "
                        "addresses and compares the scan with the audit's prediction")
    parser.add_argument("--udp", "-u", action="store_true",
                        help="also probe UDP for ports given without a protocol prefix")
    parser.add_argument("--syn", action="store_true",
                        help="raw SYN scan: NOT IMPLEMENTED, exits with an error")
    # default None: resolve_timeouts() tells an option given from one left out
    parser.add_argument("--timeout", type=_timeout, default=None, metavar="S",
                        help="longest wait for an answer per try, at most 3600 (default 1.0, "
                        "or --min-timeout if higher); the wait adapts down to the measured "
                        "round-trip time, never below --min-timeout")
    parser.add_argument("--min-timeout", type=_timeout, default=None, metavar="S",
                        help="shortest adaptive wait per try (default 0.1, or --timeout if "
                        "lower)")
    parser.add_argument("--fixed-timeout", action="store_true",
                        help="always wait --timeout and keep --concurrency probes in flight: do "
                        "not adapt to the round-trip time and the answers")
    parser.add_argument("--retries", type=_int_range(0, 10), default=1, metavar="N",
                        help="extra tries for probes nothing answered (default 1)")
    parser.add_argument("--concurrency", type=_int_range(1, 5000), default=500, metavar="N",
                        help="probes in flight at most (default 500): the pace adapts below it, "
                        "starting at 10 and growing while answers come back, halving when "
                        "probes go unanswered (as nmap does)")
    parser.add_argument("--rate", type=_rate, default=20000.0, metavar="PPS",
                        help="probes sent per second at most, 0.001 to 1000000 (default 20000; "
                        "0 = no limit)")
    add_format_arguments(parser, SCAN)
    parser.add_argument("--family", choices=("ipv4", "ipv6", "both"), default="both",
                        help="address families to probe (default both)")
    parser.add_argument("--all", action="store_true", dest="show_all",
                        help="table: also list ports closed or filtered alike over both families")


def resolve_timeouts(timeout: Optional[float], min_timeout: Optional[float]) -> Tuple[float, float]:
    """(--timeout, --min-timeout) with the defaults filled in. Both given with the minimum above
    the maximum is an error; one given alone moves the other's default out of its way (the
    rule of nmap's --max-rtt-timeout / --min-rtt-timeout), so --timeout 0.05 and --min-timeout 2
    each do what they say."""
    if timeout is not None and min_timeout is not None and min_timeout > timeout:
        raise InputError(f"--min-timeout {min_timeout:g} is greater than --timeout {timeout:g}")
    if timeout is None:
        timeout = max(DEFAULT_TIMEOUT, min_timeout or 0.0)
    if min_timeout is None:
        min_timeout = min(DEFAULT_MIN_TIMEOUT, timeout)
    return timeout, min_timeout


def load_snapshot(path: str):
    """Read a snapshot file into a HostSnapshot (InputError with one line when unusable)."""
    from twinwall.sources.snapshot import read_snapshot

    return read_snapshot(path)


def audit_prediction(snapshot) -> Dict[str, Any]:
    """The services of the audit's JSON report for a snapshot: all the scan compares with
    (imported lazily: the audit is heavy)."""
    from twinwall.analysis.audit import audit_snapshot

    report = audit_snapshot(snapshot, keep_text=False, compare_egress=False)
    return {"services": [s.to_json() for s in report.services]}


def run(args: argparse.Namespace) -> int:
    from twinwall.scan import compare, engine, ports, render, targets as targets_mod

    if args.syn:
        raise InputError("--syn (raw SYN scan) is not implemented; drop --syn to use connect()")
    args.timeout, args.min_timeout = resolve_timeouts(args.timeout, args.min_timeout)

    snapshot = load_snapshot(args.snapshot) if args.snapshot else None
    snap_ports = ports.snapshot_ports(snapshot) if snapshot is not None else None
    spec = args.ports or ("from-snapshot" if snapshot is not None else "top")
    probes = ports.parse_port_spec(spec, udp=args.udp, snapshot_ports=snap_ports)

    targets = targets_mod.build_targets(args.hosts, args.family, snapshot)
    targets_mod.check_routes(targets)
    addresses = [a for t in targets for a in t.addresses]
    for a in addresses:
        if not a.reachable:
            print(
                f"twinwall: warning: not scanning {a.address}: {a.error or 'no route'}",
                file=sys.stderr,
            )
    if not any(a.reachable for a in addresses):
        raise InputError("no route to any address to scan")

    audit_json = audit_prediction(snapshot) if snapshot is not None else None

    concurrency = engine.raise_fd_limit(args.concurrency)
    options = engine.ScanOptions(
        timeout=args.timeout,
        min_timeout=args.min_timeout,
        retries=args.retries,
        concurrency=concurrency,
        rate=args.rate,
        adaptive=not args.fixed_timeout,
    )
    jobs = engine.make_jobs(probes, addresses)
    progress = render.Progress(len(jobs))
    started = time.monotonic()
    try:
        results = engine.run_scan(jobs, options, progress)
    finally:
        progress.finish()
    elapsed = time.monotonic() - started
    results.extend(engine.unreachable_results(probes, addresses))

    rows = compare.build_rows(targets, probes, results)
    disagreements: Optional[List[Dict[str, Any]]] = None
    if audit_json is not None:
        disagreements = compare.join_audit(
            rows, audit_json, sockets_known=bool(getattr(snapshot, "sockets_known", True))
        )

    if args.format == "json":
        doc = render.to_json(
            targets,
            rows,
            disagreements,
            {
                "ports": spec,
                "udp": args.udp,
                "family": args.family,
                "timeout": args.timeout,
                "min_timeout": args.min_timeout,
                "adaptive_timeout": not args.fixed_timeout,
                "retries": args.retries,
                "concurrency": concurrency,
                "rate": args.rate,
                "probes": len(jobs),
            },
            elapsed,
            args.snapshot,
        )
        emit_json(doc, args.output)
    else:
        emit(
            render.render_table(
                targets, rows, disagreements, elapsed,
                colour=args.output is None and use_colour(sys.stdout), show_all=args.show_all,
            ),
            args.output,
        )
    sys.stdout.flush()
    gaps = any(r.gap for r in rows)
    return 1 if gaps or disagreements else 0
