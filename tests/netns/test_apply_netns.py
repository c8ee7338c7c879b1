"""The apply transaction on real namespace hosts: rollback after kill -9 and after a hang-up,
the lockout guard on a real established connection, both-families-or-neither, confirm and
persistence under a throw-away root, one pending transaction, nft, front-ends' chains.

twinwall runs inside the server namespace (``apply_helper.py apply`` calls
``twinwall.apply.transaction.apply`` as ``twinwall fix --apply`` does; confirm, rollback and
transaction are the real commands). State and persistence go to the test's tmp directory; every
watchdog a test starts is killed by its PID at teardown.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import harness

HELPER = Path(__file__).resolve().parent / "apply_helper.py"

FILTER_HEAD = ":INPUT {policy} [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
BEFORE_V4 = "*filter\n" + FILTER_HEAD.format(policy="ACCEPT") + "-A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT\nCOMMIT\n"
BEFORE_V6 = "*filter\n" + FILTER_HEAD.format(policy="ACCEPT") + "-A INPUT -p tcp -m tcp --dport 8443 -j ACCEPT\nCOMMIT\n"


def keeping(family: str) -> str:
    """Policy DROP that still lets the admin in: loopback, established, tcp/22 (and for IPv6 the
    ICMPv6 neighbour discovery needs)."""
    icmp = "-A INPUT -p ipv6-icmp -j ACCEPT\n" if family == "ipv6" else ""
    return ("*filter\n" + FILTER_HEAD.format(policy="DROP") + "-A INPUT -i lo -j ACCEPT\n" + icmp +
            "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n")


def cutting(family: str) -> str:
    """Policy DROP with no accept for established traffic nor for tcp/22: the admin is out."""
    icmp = "-A INPUT -p ipv6-icmp -j ACCEPT\n" if family == "ipv6" else ""
    return "*filter\n" + FILTER_HEAD.format(policy="DROP") + "-A INPUT -i lo -j ACCEPT\n" + icmp + "COMMIT\n"


def candidate(v4: Optional[str], v6: Optional[str], **kw) -> Dict:
    return {"backend": kw.pop("backend", "iptables"), "variant": "", "ipv4": v4, "ipv6": v6, "nft": kw.pop("nft", None),
            "commands": [], "undo_commands": [], "summary": kw.pop("summary", "test candidate")}


def rules_only(text: str) -> List[str]:
    """An iptables-save / nft listing without comments and counters."""
    import re

    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        out.append(re.sub(r"\[\d+:\d+\]", "[0:0]", line))
    return out


class ApplyHost:
    def __init__(self, topo: harness.Topology, tmp: Path):
        self.topo = topo
        self.ns = topo.server
        self.state = tmp / "state"
        self.root = tmp / "root"
        self.tmp = tmp
        self.env = harness._twinwall_env()
        self.env.update(TWINWALL_STATE_DIR=str(self.state), TWINWALL_ROOT=str(self.root))
        self.env.pop("SSH_CONNECTION", None)
        self.procs: List[subprocess.Popen] = []
        self.n = 0

    # -- rules
    def saves(self) -> Dict[str, List[str]]:
        return {f: rules_only(harness.netns_exec(self.ns, tool).stdout)
                for f, tool in (("ipv4", "iptables-save"), ("ipv6", "ip6tables-save"))}

    def nft_ruleset(self) -> List[str]:
        return rules_only(harness.netns_exec(self.ns, "nft", "list", "ruleset").stdout)

    # -- twinwall
    def write(self, cand: Dict) -> str:
        self.n += 1
        path = self.tmp / f"candidate{self.n}.json"
        path.write_text(json.dumps(cand))
        return str(path)

    def apply(self, cand: Dict, *args: str, timeout: float = 60):
        res = harness.netns_exec(self.ns, sys.executable, str(HELPER), "apply", self.write(cand),
                                 "--timeout", str(timeout), *args, check=False, env=self.env, timeout=120)
        tx = None
        for line in res.stdout.splitlines():
            if line.startswith("TX "):
                tx = json.loads(line[3:])
        return res.returncode, tx, res.stderr

    def twinwall(self, *args: str):
        res = harness.netns_exec(self.ns, sys.executable, "-m", "twinwall", *args, check=False, env=self.env, timeout=120)
        return res.returncode, res.stdout, res.stderr

    def status(self) -> Dict:
        rc, out, err = self.twinwall("transaction", "--format", "json")
        assert rc in (0, 1), err
        return json.loads(out)["transaction"]

    def popen(self, argv: List[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, env=self.env, **kw)
        self.procs.append(p)
        return p

    def start_apply(self, cand: Dict, *args: str, **kw) -> subprocess.Popen:
        return self.popen(["ip", "netns", "exec", self.ns, sys.executable, str(HELPER), "apply",
                           self.write(cand), *args, "--wait"], **kw)

    def wait_until(self, predicate, limit: float, step: float = 0.05) -> Optional[float]:
        """The time at which predicate() first held, or None when it did not before ``limit``."""
        while time.time() < limit:
            if predicate():
                return time.time()
            time.sleep(step)
        return None

    # -- cleanup
    def watchdog_pids(self) -> List[int]:
        pids = []
        for path in self.state.glob("tx/*/transaction.json"):
            how, _, what = json.loads(path.read_text()).get("rollback_by", "").partition(":")
            if how == "watchdog" and what.isdigit():
                pids.append(int(what))
            elif how == "systemd":
                subprocess.run(["systemctl", "stop", f"{what}.timer", f"{what}.service"], capture_output=True)
        return pids

    def close(self) -> None:
        from twinwall.apply.watchdog import is_our_watchdog

        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        for path in self.state.glob("tx/*/transaction.json"):
            txid = path.parent.name
            for pid in self.watchdog_pids():
                if is_our_watchdog(pid, txid):
                    os.kill(pid, signal.SIGKILL)


def watchdog_alive(tx: Dict) -> bool:
    from twinwall.apply.watchdog import is_our_watchdog

    how, _, pid = tx["rollback_by"].partition(":")
    return how == "watchdog" and is_our_watchdog(int(pid), tx["id"])


@pytest.fixture
def host(tmp_path):
    with harness.Topology(("inside",)) as topo:
        h = ApplyHost(topo, tmp_path)
        try:
            yield h
        finally:
            h.close()


def _read_tx(stream_fd: int, limit: float = 60) -> Dict:
    """The TX line the helper prints once apply() returned (read from a pipe or a pty master)."""
    buf = b""
    end = time.time() + limit
    while time.time() < end:
        r, _, _ = select.select([stream_fd], [], [], 0.5)
        if not r:
            continue
        try:
            chunk = os.read(stream_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
        for line in buf.replace(b"\r", b"").split(b"\n")[:-1]:
            if line.startswith(b"TX "):
                return json.loads(line[3:])
    raise AssertionError(f"apply did not report a transaction: {buf.decode(errors='replace')}")


# --------------------------------------------------------------------------------------------
# rollback that survives the session


DELAYS: Dict[str, float] = {}


def test_rollback_fires_after_kill_9(host):
    harness.load_iptables(host.ns, BEFORE_V4, BEFORE_V6)
    before = host.saves()
    p = host.start_apply(candidate(keeping("ipv4"), keeping("ipv6")), "--timeout", "3", stdout=subprocess.PIPE)
    tx = _read_tx(p.stdout.fileno())
    assert tx["state"] == "pending" and tx["rollback_by"].startswith(("watchdog:", "systemd:"))
    assert host.saves() != before, "the candidate was not loaded"
    os.kill(p.pid, signal.SIGKILL)  # twinwall dies without a word
    p.wait(timeout=10)
    restored = host.wait_until(lambda: host.saves() == before, tx["deadline"] + 10)
    assert restored is not None, f"no rollback 10 s after the deadline: {host.saves()}"
    delay = restored - tx["deadline"]
    DELAYS["kill -9"] = delay
    print(f"rollback after kill -9: {delay:+.2f} s after the deadline")
    assert -0.3 < delay <= 2.0
    assert host.status()["state"] == "rolled-back"


def _start_under_pty(host: ApplyHost, argv: List[str]):
    master, slave = os.openpty()

    def controlling_terminal():  # a login session: its own session, the pty its terminal
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    p = host.popen(argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal)
    os.close(slave)
    return p, master


def _hang_up(p: subprocess.Popen, master: int) -> None:
    """What a dropped SSH session does: the terminal goes away, then the whole process group."""
    os.close(master)
    for sig in (signal.SIGHUP, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        time.sleep(0.2)
    p.wait(timeout=10)


def test_rollback_fires_after_terminal_hangup(host):
    harness.load_iptables(host.ns, BEFORE_V4, BEFORE_V6)
    before = host.saves()
    p, master = _start_under_pty(host, ["ip", "netns", "exec", host.ns, sys.executable, str(HELPER), "apply",
                                        host.write(candidate(keeping("ipv4"), keeping("ipv6"))), "--timeout", "3", "--wait"])
    tx = _read_tx(master)
    assert host.saves() != before
    _hang_up(p, master)
    restored = host.wait_until(lambda: host.saves() == before, tx["deadline"] + 10)
    assert restored is not None, "no rollback after the terminal hung up"
    delay = restored - tx["deadline"]
    DELAYS["hang-up"] = delay
    print(f"rollback after a terminal hang-up: {delay:+.2f} s after the deadline")
    assert -0.3 < delay <= 2.0


def test_iptables_apply_failure_mode_reproduced_and_twinwall_survives_it(host):
    """iptables-apply under the same hang-up keeps the new rules (its SIGHUP trap deletes the
    backup): the harness reproduces the failure mode twinwall's test above passes."""
    harness.load_iptables(host.ns, BEFORE_V4, None)
    before = host.saves()["ipv4"]
    rules = host.tmp / "new.v4"
    rules.write_text(keeping("ipv4"))
    p, master = _start_under_pty(host, ["ip", "netns", "exec", host.ns, "iptables-apply", "-t", "3", str(rules)])
    buf = b""
    end = time.time() + 30
    while b"connections" not in buf and time.time() < end:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                buf += os.read(master, 4096)
            except OSError:
                break
    assert b"connections" in buf, f"iptables-apply did not ask: {buf!r}"
    _hang_up(p, master)
    time.sleep(5)  # past its 3 s timeout
    assert host.saves()["ipv4"] != before, "iptables-apply rolled back after all: the reproduction is void"


# --------------------------------------------------------------------------------------------
# the admin's connection


def _echo_and_hold(host: ApplyHost, kind: str):
    """A real listener on port 22 in the server and a client session from "inside" (IPv4,
    IPv6, or IPv4 to a dual-stack socket: an IPv4-mapped peer)."""
    addr, v6only = {"ipv4": ("0.0.0.0", "0"), "ipv6": ("::", "1"), "mapped": ("::", "0")}[kind]
    echo = host.popen(["ip", "netns", "exec", host.ns, sys.executable, str(HELPER), "echo", addr, "22", v6only],
                      stdout=subprocess.PIPE, text=True)
    assert echo.stdout.readline().strip() == "READY"
    target = host.topo.server_address("inside", "ipv6" if kind == "ipv6" else "ipv4")
    hold = host.popen(["ip", "netns", "exec", host.topo.clients["inside"].ns, sys.executable, str(HELPER), "hold", target, "22"],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert hold.stdout.readline().startswith("CONNECTED")
    return hold


def _ping(hold: subprocess.Popen, word: str) -> str:
    hold.stdin.write(word + "\n")
    hold.stdin.flush()
    return hold.stdout.readline().strip()


@pytest.mark.parametrize("kind", ["ipv4", "ipv6", "mapped"])
def test_established_session_kept_and_lockout_refused(host, kind):
    family = "ipv6" if kind == "ipv6" else "ipv4"
    other = "ipv4" if family == "ipv6" else "ipv6"
    hold = _echo_and_hold(host, kind)
    assert _ping(hold, "one") == "ECHO one"
    client = host.topo.clients["inside"].link.client_address(family)

    rc, tx, err = host.apply(candidate(keeping("ipv4"), keeping("ipv6")))
    assert rc == 0, err
    assert any(client in c for c in tx["connections"]), tx["connections"]
    assert _ping(hold, "two") == "ECHO two", "the session stopped passing data under a candidate that keeps it"
    assert host.twinwall("rollback")[0] == 0
    assert _ping(hold, "three") == "ECHO three"

    before = host.saves()
    texts = {family: cutting(family), other: keeping(other)}
    rc, tx, err = host.apply(candidate(texts["ipv4"], texts["ipv6"]))
    assert rc == 2 and tx is None
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twinwall: the candidate would cut the admin's connection")
    assert client in lines[0] and f"({family};" in lines[0], lines[0]
    assert host.saves() == before, "a refused candidate changed the rules"
    assert _ping(hold, "four") == "ECHO four"

    rc, tx, err = host.apply(candidate(texts["ipv4"], texts["ipv6"]), "--allow-lockout")
    assert rc == 0, err
    assert _ping(hold, "five").startswith("LOST"), "the guard refused a candidate that does not cut the session"
    assert host.twinwall("rollback")[0] == 0


def test_ipv6_candidate_dropping_neighbour_discovery_is_refused(host):
    """Established and tcp/22 accepted but ICMPv6 dropped: conntrack leaves NDP untracked, the
    session dies when the neighbour entry goes stale. The guard asks analysis/ndp.py."""
    hold = _echo_and_hold(host, "ipv6")
    no_ndp = keeping("ipv6").replace("-A INPUT -p ipv6-icmp -j ACCEPT\n", "")
    rc, tx, err = host.apply(candidate(None, no_ndp))
    assert rc == 2 and "neighbour discovery" in err and "(ipv6;" in err, err
    assert _ping(hold, "ok") == "ECHO ok"


@pytest.mark.parametrize("how", ["sshd", "sudo"])
def test_admin_found_through_the_process_tree(host, how):
    """A session on port 2222 that nothing listens on any more: found only through the sshd
    ancestor's socket, or through SSH_CONNECTION of the shell above a sudo that dropped it."""
    path = host.write(candidate(keeping("ipv4"), keeping("ipv6")))  # accepts tcp/22, not 2222
    sess = host.popen(["ip", "netns", "exec", host.ns, sys.executable, str(HELPER), "session", "2222", how,
                       path, "--timeout", "30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert sess.stdout.readline().strip() == "READY"
    target = host.topo.server_address("inside", "ipv4")
    hold = host.popen(["ip", "netns", "exec", host.topo.clients["inside"].ns, sys.executable, str(HELPER), "hold", target, "2222"],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    assert hold.stdout.readline().startswith("CONNECTED")
    out = []
    while not (out and out[-1].startswith("RC ")):
        line = sess.stdout.readline()
        assert line, f"session ended: {out}"
        out.append(line.strip())
    assert out[-1] == "RC 2", out
    found_by = "socket of sshd[" if how == "sshd" else "SSH_CONNECTION of sh["
    assert any("would cut the admin's connection" in l and found_by in l and "2222" in l for l in out), out
    assert _ping(hold, "still") == "ECHO still"


def test_nft_candidate_that_cuts_the_session_is_refused(host):
    hold = _echo_and_hold(host, "ipv4")
    before = host.nft_ruleset()
    cut = "table inet twinwall {\n chain input {\n  type filter hook input priority 0; policy drop;\n  iif lo accept\n }\n}\n"
    rc, tx, err = host.apply(candidate(None, None, backend="nft", nft=cut))
    assert rc == 2 and "would cut the admin's connection" in err and "(ipv4;" in err, err
    assert host.nft_ruleset() == before
    keep = cut.replace("  iif lo accept\n", "  iif lo accept\n  ct state established,related accept\n  tcp dport 22 accept\n"
                       "  meta l4proto ipv6-icmp accept\n")
    rc, tx, err = host.apply(candidate(None, None, backend="nft", nft=keep))
    assert rc == 0, err
    assert _ping(hold, "still") == "ECHO still"


# --------------------------------------------------------------------------------------------
# both families or neither


def test_ipv6_failing_at_load_leaves_ipv4_as_it_was(host):
    harness.load_iptables(host.ns, BEFORE_V4, BEFORE_V6)
    before = host.saves()
    # passes ip6tables-restore --test; the kernel refuses it at commit (REJECT tcp-reset needs -p tcp)
    bad_v6 = keeping("ipv6").replace("COMMIT", "-A INPUT -j REJECT --reject-with tcp-reset\nCOMMIT")
    assert harness.netns_exec(host.ns, "ip6tables-restore", "--test", input=bad_v6, check=False).returncode == 0
    rc, tx, err = host.apply(candidate(keeping("ipv4"), bad_v6))
    assert rc == 2 and "loading the ipv6 candidate failed" in err, err
    assert host.saves() == before, "IPv4 (or IPv6) was left changed"
    st = host.status()
    assert st["state"] == "failed"
    assert host.wait_until(lambda: not watchdog_alive(st), time.time() + 10) is not None


def test_validation_failure_changes_nothing(host):
    harness.load_iptables(host.ns, BEFORE_V4, BEFORE_V6)
    before = host.saves()
    rc, tx, err = host.apply(candidate(keeping("ipv4"), keeping("ipv6").replace("--dport 22", "--dport 99999")))
    assert rc == 2 and "--test refuses the ipv6 candidate's table filter" in err, err
    assert host.saves() == before and host.status() is None
    # iptables-nft-restore --test lets a jump to a missing chain through; the load then fails
    # and both families are put back
    rc, tx, err = host.apply(candidate(keeping("ipv4"), keeping("ipv6").replace("COMMIT", "-A INPUT -j NOSUCHCHAIN\nCOMMIT")))
    assert rc == 2 and "NOSUCHCHAIN" in err and "ipv4 and ipv6 put back" in err, err
    assert host.saves() == before


# --------------------------------------------------------------------------------------------
# confirm, persistence, one at a time, idempotence


def test_confirm_persists_under_the_root_and_stops_the_rollback(host):
    harness.load_iptables(host.ns, BEFORE_V4, BEFORE_V6)
    old = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 7 -j ACCEPT\nCOMMIT\n*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    (host.root / "etc/iptables").mkdir(parents=True)
    (host.root / "etc/iptables/rules.v4").write_text(old)
    rc, tx, err = host.apply(candidate(keeping("ipv4"), keeping("ipv6")), timeout=3)
    assert rc == 0, err
    applied = host.saves()
    assert not (host.root / "etc/iptables/rules.v6").exists(), "persisted before the confirm"
    rc, out, err = host.twinwall("confirm", tx["id"])
    assert rc == 0, err
    v4 = (host.root / "etc/iptables/rules.v4").read_text()
    assert "--dport 22 -j ACCEPT" in v4 and ":INPUT DROP" in v4 and "*raw" in v4 and "dport 7 " not in v4
    assert (host.root / "etc/iptables/rules.v4.bak").read_text() == old
    assert "--dport 22 -j ACCEPT" in (host.root / "etc/iptables/rules.v6").read_text()
    assert harness.netns_exec(host.ns, "iptables-restore", "--test", input=v4, check=False).returncode == 0
    assert host.wait_until(lambda: not watchdog_alive(tx), time.time() + 10) is not None
    time.sleep(max(0.0, tx["deadline"] + 2.5 - time.time()))
    assert host.saves() == applied, "a confirmed transaction was rolled back"
    st = host.status()
    assert st["state"] == "confirmed" and len(st["persisted"]) == 2
    assert host.twinwall("rollback")[0] == 2  # nothing pending


def test_rhel_layout_persists_to_sysconfig(host):
    (host.root / "etc/sysconfig").mkdir(parents=True)
    rc, tx, err = host.apply(candidate(keeping("ipv4"), keeping("ipv6")))
    assert rc == 0, err
    assert host.twinwall("confirm")[0] == 0
    assert ":INPUT DROP" in (host.root / "etc/sysconfig/iptables").read_text()
    assert ":INPUT DROP" in (host.root / "etc/sysconfig/ip6tables").read_text()


def test_one_pending_at_a_time_and_rollback_restores(host):
    harness.load_iptables(host.ns, BEFORE_V4, BEFORE_V6)
    before = host.saves()
    rc, tx, err = host.apply(candidate(keeping("ipv4"), keeping("ipv6")))
    assert rc == 0, err
    rc2, tx2, err2 = host.apply(candidate(keeping("ipv4").replace("22", "2222"), None))
    assert rc2 == 2 and tx["id"] in err2 and "pending" in err2, err2
    rc, out, _ = host.twinwall("transaction")
    assert rc == 1 and tx["id"] in out and "pending" in out
    rc, out, err = host.twinwall("rollback")
    assert rc == 0, err
    assert host.saves() == before
    assert host.status()["state"] == "rolled-back"
    assert host.wait_until(lambda: not watchdog_alive(tx), time.time() + 10) is not None
    rc, tx3, err = host.apply(candidate(keeping("ipv4"), None))
    assert rc == 0, err


def test_applying_the_loaded_ruleset_again_changes_nothing(host):
    rc, tx, err = host.apply(candidate(keeping("ipv4"), keeping("ipv6")))
    assert rc == 0 and tx["changed"]
    assert host.twinwall("confirm")[0] == 0
    # the same rules, written differently (iptables-save prints "-m tcp" and reorders nothing else)
    rc, again, err = host.apply(candidate(keeping("ipv4").replace("-m tcp ", ""), keeping("ipv6")))
    assert rc == 0, err
    assert again["changed"] is False and again["rollback_by"] == "" and not again["backups"]
    assert "already loaded" in again["message"]


def test_nft_round_trip(host):
    harness.load_nft(host.ns, "table inet keep {\n chain input {\n  type filter hook input priority 10; policy accept;\n"
                     "  tcp dport 8080 accept\n }\n}\ntable inet twinwall {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
                     "  tcp dport 7 drop\n }\n}\n")
    before = host.nft_ruleset()
    script = ("add table inet twinwall\nflush table inet twinwall\ntable inet twinwall {\n chain input {\n"
              "  type filter hook input priority 0; policy accept;\n  tcp dport 9999 drop\n }\n}\n")
    rc, tx, err = host.apply(candidate(None, None, backend="nft", nft=script))
    assert rc == 0, err
    after = host.nft_ruleset()
    assert any("9999" in l for l in after) and not any("dport 7 " in l for l in after)
    assert host.twinwall("rollback")[0] == 0
    assert host.nft_ruleset() == before
    rc, tx, err = host.apply(candidate(None, None, backend="nft", nft=script))
    assert rc == 0, err
    assert host.twinwall("confirm")[0] == 0
    conf = (host.root / "etc/nftables.conf").read_text()
    assert "9999" in conf and conf.count("# BEGIN twinwall") == 1
    rc, again, err = host.apply(candidate(None, None, backend="nft", nft=script))
    assert rc == 0 and again["changed"] is False, (err, again)


# --------------------------------------------------------------------------------------------
# front-ends' chains


DOCKER_V4 = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 203.0.113.2:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:ufw-user-input - [0:0]
-A INPUT -j ufw-user-input
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A DOCKER -d 203.0.113.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-USER -j RETURN
-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""


def _chains_hash(lines: List[str], prefixes=("DOCKER", "ufw-")) -> str:
    picked = [l for l in lines if any(l.startswith(f":{p}") or l.startswith(f"-A {p}") for p in prefixes)]
    assert picked
    return hashlib.sha256("\n".join(picked).encode()).hexdigest()


def test_docker_and_ufw_chains_unchanged_and_not_persisted(host):
    harness.load_iptables(host.ns, DOCKER_V4, None)
    before = host.saves()["ipv4"]
    # the plan saw the host before the container started: its DOCKER and ufw chains are stale
    filt = DOCKER_V4.split("*filter\n")[1]
    stale = ("*filter\n" + filt.replace("-A DOCKER -d 203.0.113.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT\n", "")
             .replace("-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT\n", "")
             .replace("-A INPUT -j ufw-user-input\n", "-A INPUT -j ufw-user-input\n-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT\n"))
    rc, tx, err = host.apply(candidate(stale, None))
    assert rc == 0, err
    after = host.saves()["ipv4"]
    assert "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT" in after
    assert _chains_hash(after) == _chains_hash(before), "Docker's or ufw's chains were changed"
    # a container starts while the transaction is pending: the rollback must not take it away
    started = "-A DOCKER -d 203.0.113.3/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 81 -j ACCEPT"
    harness.netns_exec(host.ns, "iptables", *started.split())
    assert host.twinwall("rollback")[0] == 0
    back = host.saves()["ipv4"]
    assert started in back and "-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT" not in back
    assert [l for l in back if l != started] == before
    harness.netns_exec(host.ns, "iptables", "-D", *started.split()[1:])
    rc, tx, err = host.apply(candidate(stale, None))
    assert rc == 0, err
    assert host.twinwall("confirm")[0] == 0
    persisted = (host.root / "etc/iptables/rules.v4").read_text()
    assert ":DOCKER " not in persisted and "-j DOCKER\n" not in persisted and "--to-destination" not in persisted
    assert ":DOCKER-USER" in persisted and "-A FORWARD -j DOCKER-USER" in persisted
    # a candidate that would delete Docker's chains is refused
    gone = "*filter\n" + FILTER_HEAD.format(policy="ACCEPT") + "COMMIT\n"
    rc, tx, err = host.apply(candidate(gone, None))
    assert rc == 2 and "docker" in err and "DOCKER" in err, err
    assert _chains_hash(host.saves()["ipv4"]) == _chains_hash(before)


# --------------------------------------------------------------------------------------------
# a front-end's commands


def test_commands_backend_applies_undoes_and_rolls_back(host):
    """A front-end's own commands (ufw, firewall-cmd work the same way): real iptables commands
    here, with their undo; a failing command undoes the ones that ran."""
    harness.load_iptables(host.ns, BEFORE_V4, BEFORE_V6)
    before = host.saves()
    rule = ["INPUT", "-p", "tcp", "-m", "tcp", "--dport", "5555", "-j", "ACCEPT"]
    cand = candidate(None, None, backend="commands")
    cand.update(commands=[["iptables", "-I", *rule], ["ip6tables", "-I", *rule]],
                undo_commands=[["iptables", "-D", *rule], ["ip6tables", "-D", *rule]])
    rc, tx, err = host.apply(cand, timeout=3)
    assert rc == 0, err
    assert all("-A INPUT -p tcp -m tcp --dport 5555 -j ACCEPT" in host.saves()[f] for f in ("ipv4", "ipv6"))
    restored = host.wait_until(lambda: host.saves() == before, tx["deadline"] + 10)
    assert restored is not None and restored - tx["deadline"] <= 2.0
    broken = dict(cand, commands=[["iptables", "-I", *rule], ["ip6tables", "-I", "NOSUCHCHAIN", "-j", "ACCEPT"]])
    rc, tx, err = host.apply(broken)
    assert rc == 2 and "NOSUCHCHAIN" in err and "the undo commands ran" in err, err
    assert host.saves() == before


def test_legacy_variant_uses_the_legacy_binaries(host):
    def legacy():
        return {f: rules_only(harness.netns_exec(host.ns, tool).stdout)
                for f, tool in (("ipv4", "iptables-legacy-save"), ("ipv6", "ip6tables-legacy-save"))}

    harness.netns_exec(host.ns, "iptables-legacy-restore", input=BEFORE_V4)
    harness.netns_exec(host.ns, "ip6tables-legacy-restore", input=BEFORE_V6)
    before, nft_before = legacy(), host.saves()
    cand = dict(candidate(keeping("ipv4"), keeping("ipv6")), variant="legacy")
    rc, tx, err = host.apply(cand)
    assert rc == 0, err
    assert any("--dport 22" in l for l in legacy()["ipv4"]) and host.saves() == nft_before
    assert host.twinwall("rollback")[0] == 0
    assert legacy() == before


def test_the_systemd_timer_could_enter_this_namespace(host):
    """A rollback run by PID 1 must act on the namespace the apply changed: the path recorded
    for `nsenter --net=` is this namespace's /run/netns entry."""
    res = harness.netns_exec(host.ns, sys.executable, "-c", "from twinwall.apply.watchdog import reachable_netns; "
                             "print(reachable_netns())", env=host.env)
    assert res.stdout.strip() == f"/run/netns/{host.ns}"


def test_guard_checks_only_the_families_the_candidate_changes(host):
    """IPv4's live rules pass the session through a match twinwall cannot decide (a rate limit):
    an IPv6-only change does not touch it and is applied; an IPv4 candidate keeping that rule
    cannot prove the session survives and is refused."""
    limited = ("*filter\n" + FILTER_HEAD.format(policy="DROP") +
               "-A INPUT -p tcp -m limit --limit 1000/sec --limit-burst 1000 -j ACCEPT\nCOMMIT\n")
    harness.load_iptables(host.ns, limited, None)
    hold = _echo_and_hold(host, "ipv4")
    assert _ping(hold, "one") == "ECHO one"
    rc, tx, err = host.apply(candidate(None, keeping("ipv6")))
    assert rc == 0, err
    assert host.twinwall("confirm")[0] == 0
    rc, tx, err = host.apply(candidate(limited.replace("--limit-burst 1000", "--limit-burst 900"), None))
    assert rc == 2 and "limit" in err and "(ipv4;" in err, (err, tx)


def test_nft_flush_ruleset_candidate_rolls_back_the_whole_ruleset(host):
    harness.load_nft(host.ns, "table ip keep {\n set blocked {\n  type ipv4_addr\n  elements = { 203.0.113.9 }\n }\n"
                     " chain input {\n  type filter hook input priority 10; policy accept;\n  ip saddr @blocked drop\n }\n}\n")
    before = host.nft_ruleset()
    script = "flush ruleset\ntable inet only {\n chain input {\n  type filter hook input priority 0; policy accept;\n  tcp dport 9 drop\n }\n}\n"
    rc, tx, err = host.apply(candidate(None, None, backend="nft", nft=script), timeout=3)
    assert rc == 0, err
    assert not any("blocked" in l for l in host.nft_ruleset())
    restored = host.wait_until(lambda: host.nft_ruleset() == before, tx["deadline"] + 10)
    assert restored is not None and restored - tx["deadline"] <= 2.0, host.nft_ruleset()
