"""`twinwall fix --apply` end to end for the owners that are not plain iptables: native nft
(table inet twinwall), ufw and firewalld.

Each: a namespace host with the owner's real tool, a finding, the plan applied as one guarded
transaction (an established session from the inside client standing in for the admin's SSH
session keeps passing data), real clients from both client namespaces agreeing with the audit
of the applied rules, then a rollback that restores the ruleset exactly - at least once by the
watchdog after ``kill -9`` of the twinwall that applied - and a confirm that persists under a
throw-away root only then. ufw and firewalld run in a mount namespace of the test's own (their
/etc copies bind-mounted there; firewalld on a private D-Bus), so the machine's files, daemons
and buses are never used; the machine's own files are hashed before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest

import harness
from harness import IPV4, IPV6, ListenerSpec, Topology
import test_fix_apply_netns
from test_fix_apply_netns import HELPER, Host, ping
from test_fix_netns import agree, finding_ids

from twinwall.fix.owners.firewalld import BUS_CONF

CI = os.environ.get("CI") == "true"
host = test_fix_apply_netns.host  # the fixture: a Host on a fresh topology


def _require(reason: Optional[str]) -> None:
    if reason:
        if CI:
            pytest.fail(reason)
        pytest.skip(reason)


def _digest(paths: Sequence[str]) -> Dict[str, str]:
    out = {}
    for top in paths:
        for root, _, files in os.walk(top):
            for name in sorted(files):
                p = os.path.join(root, name)
                if os.path.isfile(p):
                    out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


class PrivateHost(Host):
    """A Host whose twinwall runs in a mount namespace of the test's own (a holder process in
    the server's network namespace keeps it; ``nsenter`` enters both), with ``binds`` (copy ->
    path) mounted over the machine's paths and /run a tmpfs there."""

    def __init__(self, topo: Topology, tmp: Path, binds: Dict[str, str]):
        super().__init__(topo, tmp)
        script = "set -e; " + "".join(f'mount --bind "{src}" "{dst}"; ' for src, dst in binds.items())
        script += "mount -t tmpfs tw-run /run; echo READY; exec sleep 86400"
        self.holder = self._popen(["ip", "netns", "exec", topo.server, "unshare", "--mount", "--propagation", "private",
                                   "--", "sh", "-c", script], stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None and self.holder.stdout.readline().strip() == "READY"
        self.enter = ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--"]

    def run(self, *argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        res = subprocess.run(self.enter + list(argv), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: rc {res.returncode}: {res.stderr}")
        return res

    def twinwall(self, *args: str):
        res = self.run(sys.executable, "-m", "twinwall", *args, check=False)
        return res.returncode, res.stdout, res.stderr

    def start(self, *argv: str, **kw) -> subprocess.Popen:
        return self._popen(self.enter + list(argv), **kw)


def ruleset(host: Host) -> str:
    return harness.netns_exec(host.topo.server, "nft", "list", "ruleset").stdout


def chains(text: str) -> Dict[str, str]:
    """``table T chain C`` -> its text (sha256), from an ``nft list ruleset``."""
    out: Dict[str, str] = {}
    table = ""
    for block in re.split(r"\n(?=\s*(?:table|chain|set|map) )", text):
        head = block.strip().split("{")[0].strip()
        if head.startswith("table "):
            table = head
            block = block.split("{", 1)[1]
            head = block.strip().split("{")[0].strip()
        if head.startswith(("chain ", "set ", "map ")):
            out[f"{table} {head}"] = hashlib.sha256(block.strip().encode()).hexdigest()
    return out


def fix_json(host: Host, *args: str) -> Dict:
    rc, out, err = host.twinwall("fix", "--format", "json", *args)
    assert rc in (0, 1), err
    return json.loads(out)


def apply_and_kill_9(host: Host, plan: Dict, timeout: float, apply_argv: Sequence[str]) -> Dict:
    """The plan's candidate applied by a twinwall that is then killed with -9 (helper apply
    waits for a confirm as twinwall does); returns the transaction."""
    path = host.tmp / "candidate.json"
    path.write_text(json.dumps(plan["candidate"]))
    p = host._popen([*apply_argv, sys.executable, str(HELPER), "apply", str(path), "--timeout", str(timeout), "--wait"],
                    stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("TX "), line
    tx = json.loads(line[3:])
    assert tx["state"] == "pending" and tx["rollback_by"].startswith("watchdog:"), tx
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    return tx


def wait_rolled_back(host: Host, tx: Dict, restored) -> float:
    end = tx["deadline"] + 10
    while time.time() < end:
        if restored():
            return time.time() - tx["deadline"]
        time.sleep(0.1)
    raise AssertionError("no rollback 10 s after the deadline")


def status_json(host: Host) -> Dict:
    rc, out, err = host.twinwall("transaction", "--format", "json")
    assert rc in (0, 1), err
    return json.loads(out)["transaction"]


# ---------------------------------------------------------------------------------------------
# firewalld

FIREWALLD = "/usr/sbin/firewalld"


def _firewalld_missing() -> Optional[str]:
    for path in (FIREWALLD, "/etc/firewalld"):
        if not os.path.exists(path):
            return f"firewalld is not installed ({path} missing: apt-get install firewalld)"
    for tool in ("firewall-cmd", "dbus-daemon", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is needed for a private firewalld"
    return None


class FirewalldHost(PrivateHost):
    """Debian's firewalld in the server's namespace, in the test's mount namespace: a copy of
    /etc/firewalld mounted over it, its own dbus-daemon (socket under the test's directory)."""

    def __init__(self, topo: Topology, tmp: Path):
        self.conf = tmp / "etc-firewalld"
        shutil.copytree("/etc/firewalld", self.conf, symlinks=True)
        super().__init__(topo, tmp, {str(self.conf): "/etc/firewalld"})
        bus = tmp / "bus"
        (tmp / "bus.conf").write_text(BUS_CONF.format(socket=bus))
        self.env["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={bus}"
        self.start("dbus-daemon", "--nofork", f"--config-file={tmp / 'bus.conf'}", stderr=subprocess.DEVNULL)
        self._until(bus.exists, "the private dbus-daemon did not start")
        self.start("/usr/bin/python3", FIREWALLD, "--nofork", "--nopid", "--log-target", "file", "--log-file",
                   str(tmp / "firewalld.log"), stderr=subprocess.DEVNULL)
        self._until(lambda: self.run("firewall-cmd", "--state", check=False).returncode == 0,
                    "firewalld did not come up (see firewalld.log)")

    def _until(self, ready, what: str, limit: float = 60) -> None:
        end = time.time() + limit
        while not ready():
            assert time.time() < end, what
            time.sleep(0.1)

    def cmd(self, *args: str) -> str:
        return self.run("firewall-cmd", *args).stdout


@pytest.fixture
def firewalld_host(topology: Topology, tmp_path: Path):
    _require(_firewalld_missing())
    h = FirewalldHost(topology, tmp_path)
    try:
        yield h
    finally:
        h.close()  # firewalld, its bus and the holder: by their own handles


def test_firewalld_gap_mirrored_applied_rolled_back_and_confirmed(firewalld_host: FirewalldHost) -> None:
    host, topo = firewalld_host, firewalld_host.topo
    machine = _digest(["/etc/firewalld"])
    # the zone's permanent configuration: 8080 for IPv4 only from 192.0.2.0/24, for IPv6 from all
    host.cmd("--permanent", "--add-rich-rule=rule family=ipv4 source address=192.0.2.0/24 port port=8080 protocol=tcp accept")
    host.cmd("--permanent", "--add-rich-rule=rule family=ipv6 port port=8080 protocol=tcp accept")
    host.cmd("--reload")
    topo.start_listeners([ListenerSpec("tcp", "::", 8080, v6only=False)])
    hold = host.session(IPV6)  # the admin's session to [::]:22 (ssh is in the public zone)
    before_rules = ruleset(host)
    audit = json.loads(host.twinwall("audit", "--format", "json")[1])
    assert ("TW-FAMILY-GAP", IPV6) in finding_ids(audit)
    agree(topo, audit, [("tcp", 8080)])
    args = ("--finding", "TW-FAMILY-GAP:ipv6", "--map", "192.0.2.0/24=2001:db8:a::/64")
    plan = fix_json(host, *args)
    assert not plan["refused"], plan["refused"]
    assert {c["owner"] for c in plan["changes"]} == {"firewalld"}
    cmds = plan["candidate"]["commands"]
    assert len(cmds) == 1 and cmds[0][0] == "firewall-cmd" and all('family="ipv6"' in a for a in cmds[0][1:]), cmds
    assert ruleset(host) == before_rules, "twinwall fix without --apply changed firewalld"

    # applied by a twinwall killed with -9: the watchdog rolls back, exactly
    tx = apply_and_kill_9(host, plan, 8, host.enter)
    applied = ruleset(host)
    assert applied != before_rules
    changed = {k for k in set(chains(applied)) | set(chains(before_rules))
               if chains(applied).get(k) != chains(before_rules).get(k)}
    assert changed == {"table inet firewalld chain filter_IN_public_pre"}, changed
    assert ping(hold, "applied") == "ECHO applied"
    after = json.loads(host.twinwall("audit", "--format", "json")[1])
    st = agree(topo, after, [("tcp", 8080)])
    assert st[("tcp", 8080, IPV6)] == "restricted" and st[("tcp", 8080, IPV4)] == "restricted"
    delay = wait_rolled_back(host, tx, lambda: ruleset(host) == before_rules)
    print(f"firewalld rollback by the watchdog: {delay:+.2f} s after the deadline")
    assert delay <= 2.0 and status_json(host)["state"] == "rolled-back"

    # applied and confirmed: made permanent (the test's copy of /etc/firewalld) only then
    rc, out, err = host.twinwall("fix", *args, "--apply", "--confirm-timeout", "120")
    assert rc == 1, err
    assert "2001:db8:a::/64" not in (host.conf / "zones/public.xml").read_text()
    assert ping(hold, "pending") == "ECHO pending"
    rc, out, err = host.twinwall("confirm")
    assert rc == 0, err
    assert "2001:db8:a::/64" in (host.conf / "zones/public.xml").read_text()
    host.cmd("--reload")  # what a reboot loads
    after = json.loads(host.twinwall("audit", "--format", "json")[1])
    st = agree(topo, after, [("tcp", 8080)])
    assert st[("tcp", 8080, IPV6)] == "restricted"
    assert ("TW-FAMILY-GAP", IPV6) not in finding_ids(after)
    assert ping(hold, "confirmed") == "ECHO confirmed"
    assert fix_json(host, *args)["changes"] == []
    # a runtime-only change: what the permanent configuration loads is not what is live
    host.cmd("--remove-rich-rule=rule family=ipv4 source address=192.0.2.0/24 port port=8080 protocol=tcp accept")
    plan = fix_json(host, "--finding", "TW-FAMILY-GAP", "--map", "192.0.2.0/24=2001:db8:a::/64")
    assert not plan["changes"] and any("permanent configuration" in r["reason"] for r in plan["refused"]), plan
    assert _digest(["/etc/firewalld"]) == machine, "the machine's own /etc/firewalld changed"


# ---------------------------------------------------------------------------------------------
# native nft: table inet twinwall, one nft -f for both families

NFT_RULES = """table inet filter {
    chain input {
        type filter hook input priority filter; policy drop;
        iifname "lo" accept
        ct state established,related accept
        meta l4proto { icmp, ipv6-icmp } accept
        tcp dport 22 accept
        ip saddr 192.0.2.0/24 tcp dport 8080 accept
        meta nfproto ipv4 tcp dport 8080 reject with icmpx admin-prohibited
        meta nfproto ipv6 tcp dport 8080 accept
    }
}
"""


def test_nft_gap_mirrored_in_table_twinwall(host: Host) -> None:
    topo = host.topo
    topo.load_nft(NFT_RULES)
    topo.start_listeners([ListenerSpec("tcp", "::", 8080, v6only=False)])
    hold = host.session(IPV6)
    before = ruleset(host)
    audit = json.loads(host.twinwall("audit", "--format", "json")[1])
    assert ("TW-FAMILY-GAP", IPV6) in finding_ids(audit)
    args = ("--finding", "TW-FAMILY-GAP:ipv6", "--map", "192.0.2.0/24=2001:db8:a::/64")
    plan = fix_json(host, *args)
    assert not plan["refused"], plan["refused"]
    assert {c["owner"] for c in plan["changes"]} == {"nft"} and plan["candidate"]["backend"] == "nft"
    assert plan["candidate"]["nft"].startswith("table inet twinwall {")
    # IPv4 rejects the others as admin-prohibited: so does the twin (not the default port-unreachable)
    assert any("dport 8080" in l and l.endswith("reject with icmpv6 type admin-prohibited")
               for l in plan["candidate"]["nft"].splitlines()), plan["candidate"]["nft"]

    # applied by a twinwall killed with -9: the watchdog's rollback gives back nft list ruleset exactly
    tx = apply_and_kill_9(host, plan, 6, ["ip", "netns", "exec", topo.server])
    applied = ruleset(host)
    assert "table inet twinwall" in applied
    assert chains(applied).items() >= chains(before).items(), "table inet filter changed"
    assert ping(hold, "applied") == "ECHO applied"
    after = json.loads(host.twinwall("audit", "--format", "json")[1])
    st = agree(topo, after, [("tcp", 8080)])
    assert st[("tcp", 8080, IPV6)] == "restricted" and st[("tcp", 8080, IPV4)] == "restricted"
    delay = wait_rolled_back(host, tx, lambda: ruleset(host) == before)
    print(f"nft rollback by the watchdog after kill -9: {delay:+.2f} s after the deadline")
    assert delay <= 2.0 and status_json(host)["state"] == "rolled-back"
    conf = host.tmp / "root/etc/nftables.conf"
    assert not conf.exists(), "persisted before a confirm"

    # applied and confirmed: nftables.conf (under the throw-away root) only now
    rc, out, err = host.twinwall("fix", *args, "--apply", "--confirm-timeout", "120")
    assert rc == 1, err
    assert not conf.exists()
    assert host.twinwall("confirm")[0] == 0
    text = conf.read_text()
    assert "table inet twinwall" in text and "2001:db8:a::/64" in text
    harness.netns_exec(topo.server, "nft", "-c", "-f", str(conf))
    after = json.loads(host.twinwall("audit", "--format", "json")[1])
    agree(topo, after, [("tcp", 8080)])
    assert ("TW-FAMILY-GAP", IPV6) not in finding_ids(after)
    assert ping(hold, "confirmed") == "ECHO confirmed"
    assert fix_json(host, *args)["changes"] == []


# ---------------------------------------------------------------------------------------------
# ufw: ufw commands, its files in the test's mount namespace


def test_ufw_gap_applied_rolled_back_exactly_and_confirmed(topology: Topology, tmp_path: Path) -> None:
    from test_ufw_netns import MACHINE_FILES, PrivateUfw, _skip_reason
    from test_ufw_netns import _digest as ufw_digest

    _require(_skip_reason())
    machine = ufw_digest(MACHINE_FILES)
    with PrivateUfw(topology.server, ipv6=True) as copies:
        assert copies.tmp is not None
        host = PrivateHost(topology, tmp_path, {str(copies.tmp / "etc-ufw"): "/etc/ufw",
                                                 str(copies.tmp / "default-ufw"): "/etc/default/ufw",
                                                 str(copies.tmp / "lib-ufw"): "/lib/ufw"})
        try:
            _ufw_story(host, copies.tmp / "etc-ufw")
        finally:
            host.close()
    assert ufw_digest(MACHINE_FILES) == machine, "the machine's own ufw files changed"


def _ufw_story(host: PrivateHost, etc: Path) -> None:
    topo = host.topo
    for cmd in (("--force", "enable"), ("allow", "22/tcp"),
                ("allow", "from", "192.0.2.0/24", "to", "any", "port", "8080", "proto", "tcp"),
                ("allow", "proto", "tcp", "from", "::/0", "to", "any", "port", "8080"),
                ("allow", "443/tcp"),  # (after 8080: its IPv6 rule must be put back in the middle)
                ("reload",)):  # (what a boot loads: the rules files whole, user-limit chains too)
        host.run("ufw", *cmd)
    topo.start_listeners([ListenerSpec("tcp", "::", 8080, v6only=False)])
    hold = host.session(IPV6)
    before = host.saves()
    files = {n: (etc / n).read_text() for n in ("user.rules", "user6.rules")}
    audit = json.loads(host.twinwall("audit", "--format", "json")[1])
    assert ("TW-FAMILY-GAP", IPV6) in finding_ids(audit)
    args = ("--finding", "TW-FAMILY-GAP:ipv6", "--map", "192.0.2.0/24=2001:db8:a::/64")
    plan = fix_json(host, *args)
    assert not plan["refused"], plan["refused"]
    cand = plan["candidate"]
    assert cand["commands"] and all(c[0] == "ufw" for c in cand["commands"])
    assert any(c[1] == "insert" for c in cand["undo_commands"]), cand["undo_commands"]

    rc, out, err = host.twinwall("fix", *args, "--apply", "--confirm-timeout", "6")
    assert rc == 1, err
    tx = status_json(host)
    applied = host.saves()
    assert ping(hold, "applied") == "ECHO applied"
    for fam in (IPV4, IPV6):  # ufw's own chains but the user-input one: as they were
        user = "ufw-user-input" if fam == IPV4 else "ufw6-user-input"
        keep = [l for l in before[fam] if user not in l]
        assert [l for l in applied[fam] if user not in l] == keep, fam
    # ufw rewrote its files as the commands ran: a boot before the confirm must load the old
    # rules, so the files are as they were and the new ones wait aside
    assert {n: (etc / n).read_text() for n in files} == files, "a reboot before confirm would keep the change"
    assert "2001:db8:a::/64" in (etc / "user6.rules.twinwall-pending").read_text()
    after = json.loads(host.twinwall("audit", "--format", "json")[1])
    st = agree(topo, after, [("tcp", 8080)])
    assert st[("tcp", 8080, IPV6)] == "restricted" and st[("tcp", 8080, IPV4)] == "restricted"
    delay = wait_rolled_back(host, tx, lambda: host.saves() == before)
    print(f"ufw rollback by the watchdog: {delay:+.2f} s after the deadline")
    assert delay <= 2.0 and status_json(host)["state"] == "rolled-back"
    assert {n: (etc / n).read_text() for n in files} == files, "ufw's rules files are not as they were"

    rc, out, err = host.twinwall("fix", *args, "--apply", "--confirm-timeout", "120")
    assert rc == 1, err
    assert "2001:db8:a::/64" not in (etc / "user6.rules").read_text()
    assert host.twinwall("confirm")[0] == 0
    assert "2001:db8:a::/64" in (etc / "user6.rules").read_text()
    assert not list(etc.glob("*.twinwall-pending")), "the confirmed files were not put in place"
    after = json.loads(host.twinwall("audit", "--format", "json")[1])
    agree(topo, after, [("tcp", 8080)])
    assert ("TW-FAMILY-GAP", IPV6) not in finding_ids(after)
    assert ping(hold, "confirmed") == "ECHO confirmed"


# ---------------------------------------------------------------------------------------------
# the systemd timer: a real systemd as PID 1 of a PID namespace of the test's own

SYSTEMD = "/lib/systemd/systemd"

# $1: the test's directory, $2: the named network namespace twinwall will change (bound into the
# container's /run/netns), then the directories twinwall runs from (bound read-only). The container's root is an overlay over / whose upper layer is a
# tmpfs of this mount namespace (nothing the container writes reaches the machine's files);
# /dev holds a few bound nodes, /sys and /proc/sys are read-only, and every unit some target
# wants is masked: PID 1 starts nothing but itself (no udev, tmpfiles, modules, sysctl).
_CONTAINER = r'''
set -e
T=$1
mount -t tmpfs tw-sd "$T/ovl"
mkdir -p "$T/ovl/upper" "$T/ovl/work" "$T/ovl/merged"
M=$T/ovl/merged
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/ovl/upper,workdir=$T/ovl/work" "$M"
mount -t proc proc "$M/proc"
mount --bind "$M/proc/sys" "$M/proc/sys"; mount -o remount,bind,ro "$M/proc/sys"
mount -t tmpfs -o mode=755 tw-dev "$M/dev"
for n in null zero full random urandom tty; do touch "$M/dev/$n"; mount --bind "/dev/$n" "$M/dev/$n"; done
mount -t sysfs -o ro sysfs "$M/sys"
mount -t cgroup2 cgroup2 "$M/sys/fs/cgroup"
mount -t tmpfs tw-run "$M/run"
mount -t tmpfs tw-tmp "$M/tmp"
mkdir -p "$M/run/netns"; touch "$M/run/netns/$2"; mount --bind "/run/netns/$2" "$M/run/netns/$2"
shift 2
for p in "$@"; do  # twinwall's checkout and its Python, wherever they are (read-only)
  mkdir -p "$M$p"; mount --rbind "$p" "$M$p"; mount -o remount,bind,ro "$M$p"
done
for w in "$M"/lib/systemd/system/*.wants/* "$M"/etc/systemd/system/*.wants/*; do
  [ -e "$w" ] || [ -L "$w" ] || continue
  ln -sf /dev/null "$M/etc/systemd/system/${w##*/}"
done
rm -rf "$M"/etc/systemd/system/*.wants
printf '[Unit]\nDescription=twinwall test: PID 1 alone\nDefaultDependencies=no\n' > "$M/etc/systemd/system/tw-idle.target"
echo READY
exec chroot "$M" /usr/bin/env container=twinwall-test /lib/systemd/systemd --system --unit=tw-idle.target --log-target=null
'''


def _cgroup2_root() -> Optional[str]:
    for line in open("/proc/self/mountinfo", encoding="utf-8"):
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            return left.split()[4]
    return None


def _systemd_missing() -> Optional[str]:
    if not os.path.exists(SYSTEMD):
        return f"{SYSTEMD} is not installed"
    for tool in ("systemd-run", "systemctl", "nsenter", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is needed for the systemd container"
    if "overlay" not in open("/proc/filesystems", encoding="utf-8").read():
        return "overlayfs is needed for the systemd container's throw-away root"
    if _cgroup2_root() is None:
        return "a cgroup2 hierarchy is needed for systemd as PID 1 of a container"
    return None


class SystemdContainer:
    """systemd as PID 1 of a new PID, mount, cgroup and UTS namespace, in network namespace
    ``pid1_ns``, in a cgroup of the test's own; ``run`` enters all of its namespaces."""

    def __init__(self, tmp: Path, pid1_ns: str, bound_ns: str):
        (tmp / "ovl").mkdir()
        self.cgroup = Path(_cgroup2_root() or "") / f"tw-sd-{pid1_ns}"
        self.cgroup.mkdir()
        self.proc = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"', "sh", str(self.cgroup),
             "ip", "netns", "exec", pid1_ns, "unshare", "--pid", "--fork", "--mount", "--cgroup", "--uts",
             "--propagation", "private", "--", "sh", "-c", _CONTAINER, "sh", str(tmp), bound_ns,
             *sorted({str(Path(__file__).resolve().parents[2]), os.path.realpath(sys.prefix)})],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid1: Optional[int] = None
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "READY", f"the container did not start: {line} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        end = time.time() + 30
        while self.pid1 is None and time.time() < end:
            self.pid1 = next((int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == self.proc.pid), None)
            time.sleep(0.05)
        assert self.pid1 is not None
        while self.run("systemctl", "is-system-running", check=False).stdout.strip() not in ("running", "degraded"):
            assert time.time() < end, "systemd did not come up as PID 1 of the container"
            time.sleep(0.1)

    def run(self, *argv: str, check: bool = True, env: Optional[Dict[str, str]] = None,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        res = subprocess.run(["nsenter", f"--target={self.pid1}", "--all", "--root", "--wd", "--", *argv],
                             capture_output=True, text=True, timeout=120, env=env, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: rc {res.returncode}: {res.stderr}")
        return res

    def close(self) -> None:
        if self.pid1 is not None:
            os.kill(self.pid1, signal.SIGKILL)  # the PID namespace (and all in it) ends with its init
        self.proc.wait(timeout=30)
        # a cgroup stays busy until the kernel has reaped its last task: retry for a few seconds
        end = time.time() + 10
        while self.cgroup.exists():
            try:
                for d in sorted((p for p in self.cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    d.rmdir()
                self.cgroup.rmdir()
            except OSError:
                if time.time() > end:
                    raise
                time.sleep(0.1)


def _ppid(pid: int) -> Optional[int]:
    try:
        return int(open(f"/proc/{pid}/stat", encoding="utf-8").read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


TIMER_BEFORE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""


def test_systemd_timer_rolls_back_in_the_named_netns_the_apply_changed(topology: Topology, tmp_path: Path) -> None:
    _require(_systemd_missing())
    host = Host(topology, tmp_path)
    harness.load_iptables(topology.server, TIMER_BEFORE)
    before = host.saves()
    pid1_ns = f"tw-sd-{os.urandom(3).hex()}"
    harness._run(["ip", "netns", "add", pid1_ns])
    container = None
    try:
        container = SystemdContainer(tmp_path, pid1_ns, topology.server)
        assert container.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
        cand = {"backend": "iptables", "ipv4": TIMER_BEFORE.replace("-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n",
                                                                     "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
                                                                     "-A INPUT -p tcp -m tcp --dport 8080 -j DROP\n"),
                "summary": "systemd timer trial"}
        container.run("sh", "-c", "cat > /tmp/candidate.json", input=json.dumps(cand))
        env = dict(harness._twinwall_env(), TWINWALL_STATE_DIR="/var/lib/twinwall-test")
        env.pop("TWINWALL_ROLLBACK", None)
        # twinwall in the test's named namespace, PID 1 in another: the timer's service must enter it
        res = container.run("ip", "netns", "exec", topology.server, sys.executable, str(HELPER), "apply",
                            "/tmp/candidate.json", "--timeout", "4", env=env)
        tx = json.loads(next(l for l in res.stdout.splitlines() if l.startswith("TX "))[3:])
        assert tx["rollback_by"].startswith("systemd:twinwall-rollback-"), tx
        assert host.saves() != before
        timers = container.run("systemctl", "list-timers", "--all", "--no-legend").stdout
        assert tx["rollback_by"].split(":", 1)[1] + ".timer" in timers
        delay = wait_rolled_back(host, tx, lambda: host.saves() == before)
        print(f"rollback by the systemd timer: {delay:+.2f} s after the deadline")
        assert delay <= 2.0
        state = json.loads(container.run("cat", f"/var/lib/twinwall-test/tx/{tx['id']}/transaction.json").stdout)
        assert state["state"] == "rolled-back" and "systemd timer" in state["message"], state
    finally:
        if container is not None:
            container.close()
        subprocess.run(["ip", "netns", "del", pid1_ns], capture_output=True, timeout=30)
        host.close()
