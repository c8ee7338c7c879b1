"""The new-user trial's namespace host (tests/netns/test_trial_hosts.py): the differential's
topology and probe machinery (diffhost.py) with one hand-built host per case instead of a random
ruleset.

Per case: a fresh :class:`diffhost.DiffHost` (two clients on separate links, the differential's
listeners: TCP and UDP on 0.0.0.0, ::, v6only and dual-stack, specific addresses, loopback), the
case's own set-up (real ufw, real firewalld, iptables-restore, nft -f, sysctls, a container
namespace), then at the same time: real probes from both clients (TCP connect, UDP exchange,
several source addresses and ports, no static neighbour entries) and ``twinwall collect`` in the
host namespace followed by ``twinwall audit --snapshot FILE --format json`` there too - what a new
user runs. Every (socket, family) status of the audit's JSON is held against what the probes saw
(:func:`diffhost.status_contradiction`), every probe's exact packet against twinwall's walk
(:func:`diffhost.predict`), and every port the case publishes through NAT (DNAT to a container,
REDIRECT or DNAT to the host itself) against its audit row.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import diffhost  # noqa: E402
import harness  # noqa: E402
from diffhost import CLIENTS, IPV4, IPV6, Probe, SeedResult, socket_families, status_contradiction  # noqa: E402
from harness import Listener, ListenerSpec, ip_batch, netns_exec  # noqa: E402

from twinwall.fix.owners.firewalld import BUS_CONF  # noqa: E402
from twinwall.analysis.address_sets import inline_address_sets  # noqa: E402
from twinwall.sources.snapshot import snapshot_from_json  # noqa: E402

NAT_TIMEOUT = 2.0  # probes through DNAT to a container meet ARP/NDP on one more link


@dataclass(frozen=True)
class NatPort:
    """A port the case publishes through nat PREROUTING (nothing listens on it in the host)."""

    proto: str
    port: int
    families: Tuple[str, ...] = (IPV4, IPV6)


@dataclass
class Case:
    name: str
    setup: Callable[["TrialHost"], None]
    nat_ports: Tuple[NatPort, ...] = ()
    note: str = ""  # how the rules were made, for the report


@dataclass
class TrialResult(SeedResult):
    compared: Dict[str, int] = field(default_factory=dict)  # status -> (socket, family) compared


class TrialHost(diffhost.DiffHost):
    """A DiffHost whose namespaces start with ``tw-`` (PrivateUfw refuses others) and which can
    give a case a container, a private firewalld and clean-up steps of its own."""

    def __init__(self) -> None:
        super().__init__(prefix="tw")
        self.cleanups: List[Callable[[], None]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="tw-trial-"))

    def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                fn()
            except (OSError, subprocess.SubprocessError, harness.HarnessError) as exc:
                print(f"warning: trial clean-up: {exc}", file=sys.stderr)
        self.cleanups.clear()
        super().close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- what cases use ---------------------------------------------------------------------

    def restore(self, v4: Optional[str] = None, v6: Optional[str] = None, legacy: bool = False) -> None:
        tool = ("iptables-legacy-restore", "ip6tables-legacy-restore") if legacy else ("iptables-restore", "ip6tables-restore")
        if v4 is not None:
            netns_exec(self.server, tool[0], input=v4)
        if v6 is not None:
            netns_exec(self.server, tool[1], input=v6)

    def nft(self, text: str) -> None:
        netns_exec(self.server, "nft", "-f", "-", input=text)

    def sysctl(self, **values: object) -> None:
        harness.sysctl_set(self.server, {k.replace("__", "."): v for k, v in values.items()})

    def commands(self, *cmds: Sequence[str]) -> None:
        for cmd in cmds:
            netns_exec(self.server, *cmd)

    def container(self, v4_net: str, v6_net: str, listeners: Sequence[ListenerSpec]) -> Tuple[str, str]:
        """A namespace behind a ``docker0`` bridge in the host (addresses .1 bridge, .2 container
        of each network), with listeners; forwarding on in the host. Returns the container's
        (IPv4, IPv6) addresses."""
        import ipaddress

        n4, n6 = ipaddress.ip_network(v4_net), ipaddress.ip_network(v6_net)
        b4, c4, b6, c6 = n4.network_address + 1, n4.network_address + 2, n6.network_address + 1, n6.network_address + 2
        ns = f"tw-ctr-{self.server[-4:]}"
        harness._run(["ip", "netns", "add", ns])
        self.cleanups.append(lambda: subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30))
        ip_batch(self.server, [
            "link add docker0 type bridge",
            f"addr add {b4}/{n4.prefixlen} dev docker0",
            f"addr add {b6}/{n6.prefixlen} dev docker0 nodad",
            f"link add vethtw0 type veth peer name eth0 netns {ns}",
            "link set vethtw0 master docker0", "link set vethtw0 up", "link set docker0 up"])
        harness.sysctl_set(ns, {"net.ipv6.conf.all.accept_ra": 0, "net.ipv6.conf.default.accept_ra": 0})
        ip_batch(ns, ["link set lo up", f"addr add {c4}/{n4.prefixlen} dev eth0",
                      f"addr add {c6}/{n6.prefixlen} dev eth0 nodad", "link set eth0 up",
                      f"route add default via {b4} dev eth0", f"route add ::/0 via {b6} dev eth0"])
        listener = Listener(ns, listeners, name="tw-trial-ctr")
        listener.start()
        self.cleanups.append(listener.stop)
        return str(c4), str(c6)

    def firewalld(self, *cmds: Sequence[str]) -> None:
        """Debian's firewalld (/usr/sbin/firewalld, nftables back-end) run in the host namespace
        on a private D-Bus system bus (its own dbus-daemon, a socket under the case's temporary
        directory), with a copy of /etc/firewalld as its system configuration and runtime-only
        changes (firewall-cmd without --permanent): nothing of the machine's is read as live
        state or written. ``cmds`` are firewall-cmd argument lists. Both daemons are stopped by
        their PIDs at clean-up (firewalld removes its tables on exit: CleanupOnExit)."""
        conf = self.tmp / "firewalld-etc"
        shutil.copytree("/etc/firewalld", conf, symlinks=True)
        bus = self.tmp / "bus"
        (self.tmp / "bus.conf").write_text(_BUS_CONF.format(socket=bus))
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={bus}")
        dbus = subprocess.Popen(["ip", "netns", "exec", self.server, "dbus-daemon", "--nofork",
                                 f"--config-file={self.tmp / 'bus.conf'}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.cleanups.append(lambda: _stop(dbus))
        _wait(lambda: bus.exists(), 10, "the private dbus-daemon did not start")
        fwd = subprocess.Popen(["ip", "netns", "exec", self.server, "/usr/bin/python3", "/usr/sbin/firewalld",
                                "--nofork", "--nopid", "--system-config", str(conf), "--log-target", "file",
                                "--log-file", str(self.tmp / "firewalld.log")],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.cleanups.append(lambda: _stop(fwd))

        def running() -> bool:
            res = netns_exec(self.server, "firewall-cmd", "--state", check=False, env=env, timeout=20)
            return res.returncode == 0

        _wait(running, 60, "firewalld did not come up (see firewalld.log)")
        for cmd in cmds:
            netns_exec(self.server, "firewall-cmd", *cmd, env=env, timeout=30)

    # -- the trial ----------------------------------------------------------------------------

    def audit(self) -> Tuple[dict, object]:
        """``twinwall collect -o FILE`` then ``twinwall audit --snapshot FILE --format json``,
        both run in the host namespace; (the audit's JSON, the snapshot)."""
        path = self.tmp / "host.json"
        env = harness._twinwall_env()
        netns_exec(self.server, sys.executable, "-m", "twinwall", "collect", "-o", str(path), env=env, timeout=120)
        res = netns_exec(self.server, sys.executable, "-m", "twinwall", "audit", "--snapshot", str(path),
                         "--format", "json", env=env, timeout=120, check=False)
        if res.returncode not in (0, 1):
            raise AssertionError(f"twinwall audit exited {res.returncode}: {res.stderr.strip()}")
        return (inline_address_sets(json.loads(res.stdout)),
                snapshot_from_json(json.loads(path.read_text()), str(path)))

    def run_case(self, case: Case, seed: int = 0) -> TrialResult:
        case.setup(self)
        self.forget_connections()
        probes = diffhost.plan_probes(seed)
        nat = _nat_probes(case, seed)
        done: Dict[str, object] = {}

        def collect() -> None:
            try:
                done["audit"] = self.audit()
            except BaseException as exc:  # re-raised in the caller's thread
                done["error"] = exc

        t = threading.Thread(target=collect)
        t.start()
        observed = self._probe(probes, diffhost.PROBE_TIMEOUT)
        nat_seen = self._probe(nat, NAT_TIMEOUT)
        t.join()
        if "error" in done:
            raise done["error"]  # type: ignore[misc]
        report, snapshot = done["audit"]  # type: ignore[misc]
        out = TrialResult(seed, diffhost.rulegen.GeneratedRuleset(seed, case.name))
        out.probes = len(probes) + len(nat)
        self._compare_probes(out, snapshot, probes, observed)
        own = {a.address for a in snapshot.addresses}
        self._compare_statuses(out, report, probes, observed, nat, nat_seen, case, snapshot.ipv6.disabled_interfaces, own)
        return out

    def _compare_probes(self, out: TrialResult, snapshot, probes: List[Probe], observed: List[str]) -> None:
        """Each probe's exact packet through twinwall's walk (a disagreement is probed again,
        slowly, before it counts)."""
        predicted = diffhost.predict(snapshot, probes)
        doubtful = [i for i, p in enumerate(probes) if predicted[i][0] is not None and predicted[i][0] != (observed[i] == "open")]
        if doubtful:
            self.forget_connections()
            for i, r in zip(doubtful, self._probe([probes[i] for i in doubtful], diffhost.RECHECK_TIMEOUT)):
                observed[i] = r
        self._moved = [predicted[i][2] for i in range(len(probes))]
        for i, p in enumerate(probes):
            reach, why, _ = predicted[i]
            if reach is not None and reach != (observed[i] == "open"):
                out.disagreements.append(diffhost.Disagreement(
                    out.seed, "probe", f"{p.socket} {p.family}: {p}", observed[i],
                    ("reachable" if reach else "not reachable") + f" ({why})"))

    def _compare_statuses(self, out: TrialResult, report: dict, probes, observed, nat, nat_seen, case: Case,
                          v6_off: Sequence[str], own: set) -> None:
        """Statuses speak of the clients that can reach the host over the family at all: IPv6
        arriving on an interface with disable_ipv6=1 is the interface's state, not the
        firewall's (README: `disabled` only when it is off on every interface; the probes that
        arrive there are held against the per-probe walk instead), at the addresses the host
        has (disabling IPv6 on an interface takes its addresses away: probes to them are not
        the socket's business)."""
        rows = report["services"]

        def check(label: str, row: Optional[dict], family: str, mine) -> None:
            if row is None:
                out.disagreements.append(diffhost.Disagreement(out.seed, "status", label, "listening", "no audit row"))
                return
            v = row[family]
            if v["uncertain"]:
                out.skipped.append(f"{label} {family}: uncertain {v['uncertain']}")
                return
            out.verdicts += 1
            out.compared[v["status"]] = out.compared.get(v["status"], 0) + 1
            if v["status"] == "not-bound" and _published(row):
                # a family the NAT rules do not publish the port in: nothing may get through
                reached = [p for p, r in mine if r == "open"]
                problem = f"not-bound, but reached: {', '.join(map(str, reached[:3]))}" if reached else None
            else:
                problem = status_contradiction(SimpleNamespace(**v), mine) or _unadmitted(v, mine) or _not_everywhere(v, mine)
            if problem:
                out.disagreements.append(diffhost.Disagreement(
                    out.seed, "status", f"{label} {family}", problem,
                    f"{v['status']} (allowed={v.get('allowed')}) {v.get('reason')} by "
                    f"{[d.get('rule') or d.get('policy') for d in v['decided_by']][:5]}"))

        for spec in diffhost.LISTENERS:
            row = next((r for r in rows if r["protocol"] == spec.proto and r["address"] == spec.address
                        and r["port"] == spec.port and not _published(r)), None)
            for family in socket_families(spec):
                mine = [(p, observed[i]) for i, p in enumerate(probes)
                        if p.socket == spec and p.family == family and not self._moved[i]
                        and not (family == IPV6 and p.client.server_if in v6_off) and p.dst in own]
                check(str(spec), row, family, mine)
        for np in case.nat_ports:
            row = next((r for r in rows if r["protocol"] == np.proto and r["port"] == np.port and _published(r)), None)
            for family in np.families:
                mine = [(p, nat_seen[i]) for i, p in enumerate(nat)
                        if p.proto == np.proto and p.port == np.port and p.family == family
                        and not (family == IPV6 and p.client.server_if in v6_off) and p.dst in own]
                check(f"{np.proto} NAT :{np.port}", row, family, mine)


def _unadmitted(v: dict, probes: Sequence[Tuple[Probe, str]]) -> Optional[str]:
    """A restricted verdict's ``allowed`` combinations say exactly who gets through: a client
    (source address and port, arriving interface) inside one must reach the socket, through at
    least one of the host's addresses (status_contradiction checks only the other direction)."""
    if v["status"] != "restricted":
        return None
    reached = {(p.client.name, p.src, p.sport) for p, r in probes if r == "open"}
    bad = [p for p, r in probes if r != "open" and (p.client.name, p.src, p.sport) not in reached
           and any(_in_combination(c, p) for c in v.get("allowed") or ())]
    return f"restricted, but turned away inside the allowed: {', '.join(map(str, bad[:3]))}" if bad else None


def _not_everywhere(v: dict, probes: Sequence[Tuple[Probe, str]]) -> Optional[str]:
    """open: no address the socket listens on turns every client away (status_contradiction
    accepts a socket that some address drops for everyone). Which client gets in at which
    address may depend on its interface (the strong host model): not checked here."""
    if v["status"] != "open":
        return None
    shut = sorted({p.dst for p, _ in probes} - {p.dst for p, r in probes if r == "open"})
    return f"open, but every client is turned away at {', '.join(shut)}" if shut else None


def _in_combination(c: dict, p: Probe) -> bool:
    import ipaddress

    src = ipaddress.ip_address(p.src)
    if not any(src in ipaddress.ip_network(n, strict=False) for n in c["sources"] if "/" in n or ":" in n or "." in n):
        return False
    ifs = c["interfaces"]
    if "*" not in ifs and not any(i == p.client.server_if or (i.endswith("+") and p.client.server_if.startswith(i[:-1]))
                                  for i in ifs):
        return False
    ports = c["source_ports"]
    if "*" in ports:
        return True
    return any(diffhost._in_ranges(t, p.sport) for t in ports)


def _published(row: dict) -> bool:
    """A row the audit made for a port NAT publishes (DNAT elsewhere, or to the host itself)."""
    return bool(row.get("process")) and ("dnat" in row["process"] or "this host" in row["process"]) and row.get("pid") is None


_NAT_SOCKET = ListenerSpec("tcp", "::", 0)  # placeholder: NAT probes are matched by port


def _nat_probes(case: Case, seed: int) -> List[Probe]:
    rng = random.Random(f"nat-{seed}")
    out: List[Probe] = []
    seen = set()
    for np in case.nat_ports:
        for family in np.families:
            for client in CLIENTS:
                srcs = list(client.v4 if family == IPV4 else client.v6)
                pairs = {(srcs[0], diffhost.SOURCE_PORTS[2])}
                while len(pairs) < 3:
                    pairs.add((rng.choice(srcs), rng.choice(diffhost.SOURCE_PORTS[1:])))
                dsts = [a for c in CLIENTS for a in (c.server_v4 if family == IPV4 else c.server_v6)]
                for dst in dsts:
                    for src, sport in sorted(pairs):
                        key = (np.proto, src, sport, dst, np.port)
                        if key not in seen:
                            seen.add(key)
                            out.append(Probe(client, family, np.proto, src, sport, dst, np.port, _NAT_SOCKET))
    return out


# firewalld's private system bus: the configuration twinwall's own scratch firewalld uses
_BUS_CONF = BUS_CONF


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process this module started, by its PID (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise harness.HarnessError(what)
        time.sleep(0.1)


def firewalld_unavailable() -> Optional[str]:
    for path in ("/usr/sbin/firewalld", "/usr/bin/firewall-cmd", "/etc/firewalld"):
        if not os.path.exists(path):
            return f"firewalld is not installed ({path} missing: apt-get install firewalld)"
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon is needed for firewalld's private bus (apt-get install dbus)"
    return None
