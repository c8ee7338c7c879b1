"""The rollback that fires when nobody confirms: armed before anything changes, and out of
reach of what ends an admin's session.

* systemd is PID 1 and can reach this network namespace (the root one, or one named under
  /run/netns): a transient timer (``systemd-run --on-active``, ``AccuracySec=1s``) owned by PID
  1 runs the rollback; its service runs in PID 1's namespaces, so it enters this one with
  ``nsenter --net=PATH`` first.
* otherwise: a watchdog process, double-forked into a session of its own (no controlling
  terminal), SIGHUP ignored, stdio on a log in the transaction's directory. It inherits this
  network namespace (and keeps it alive), sleeps until the deadline and rolls back unless the
  transaction is no longer pending. Its PID is in the transaction's state.

iptables-apply's failure mode (its SIGHUP trap deletes the backup and exits with the new rules
loaded) cannot happen: nothing here runs in the admin's session once armed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from typing import List, Optional

import twinwall
from twinwall.apply import state

POLL = 0.2  # seconds between looks at the state file (the rollback fires within this of the deadline)


def _entry_argv(state_dir: str, txid: str, now: bool = False) -> List[str]:
    # the directory twinwall is imported from (a checkout, site-packages or twinwall.pyz)
    home = os.path.dirname(os.path.dirname(os.path.abspath(twinwall.__file__)))
    code = "import sys; sys.path.insert(0, sys.argv[1]); from twinwall.apply.watchdog import main; main(sys.argv[2:])"
    return [sys.executable, "-c", code, home, state_dir, txid] + (["--now"] if now else [])


def reachable_netns() -> Optional[str]:
    """A path PID 1 can open for this network namespace: "" for its own, a /run/netns entry
    for a named one, None when there is none (an anonymous namespace)."""
    try:
        mine = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    try:
        if os.stat("/proc/1/ns/net").st_ino == mine.st_ino:
            return ""
    except OSError:
        pass  # (PID 1's namespaces hidden from us: a named one may still be found below)
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return None
    for name in names:
        path = os.path.join("/run/netns", name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return path
    return None


def systemd_is_pid1() -> bool:
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "systemd"
    except OSError:
        return False


def arm(state_dir: str, txid: str, delay: float, log_path: str) -> str:
    """Start the rollback; returns how (``systemd:UNIT`` or ``watchdog:PID``)."""
    if os.environ.get("TWINWALL_ROLLBACK") != "watchdog" and systemd_is_pid1() and shutil.which("systemd-run"):
        netns = reachable_netns()
        if netns is not None:
            unit = f"twinwall-rollback-{txid}"
            argv = _entry_argv(state_dir, txid, now=True)
            if netns:
                argv = ["nsenter", f"--net={netns}", "--"] + argv
            res = subprocess.run(
                ["systemd-run", "--quiet", f"--unit={unit}", f"--on-active={max(1, int(round(delay)))}s",
                 "--timer-property=AccuracySec=1s", f"--description=twinwall rollback of transaction {txid}",
                 *argv], capture_output=True, text=True)
            if res.returncode == 0:
                return f"systemd:{unit}"
    return f"watchdog:{spawn(state_dir, txid, log_path)}"


def spawn(state_dir: str, txid: str, log_path: str) -> int:
    """Double fork a watchdog; returns its PID once it runs."""
    argv = _entry_argv(state_dir, txid)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked children
        try:
            os.close(read_end)
            os.setsid()  # a session of its own: no controlling terminal to hang up on it
            if os.fork() != 0:
                os._exit(0)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # (SIG_IGN survives the exec)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            null = os.open(os.devnull, os.O_RDONLY)
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.chdir("/")
            os.write(write_end, str(os.getpid()).encode())
            os.close(write_end)
            os.closerange(3, 1024)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as f:
        pid = f.read().decode()
    if not pid.isdigit():
        raise state.TransactionError("the rollback watchdog could not be started")
    return int(pid)


def is_our_watchdog(pid: int, txid: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return b"from twinwall.apply.watchdog import main" in b" ".join(args) and txid.encode() in args


def disarm(rollback_by: str, txid: str) -> None:
    """Stop a rollback that is no longer needed (the transaction is confirmed or done)."""
    how, _, what = rollback_by.partition(":")
    if how == "watchdog" and what.isdigit():
        pid = int(what)
        if pid != os.getpid() and is_our_watchdog(pid, txid):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
    elif how == "systemd" and what:
        subprocess.run(["systemctl", "stop", f"{what}.timer"], capture_output=True, text=True)


def alive(rollback_by: str, txid: str) -> bool:
    how, _, what = rollback_by.partition(":")
    if how == "watchdog" and what.isdigit():
        return is_our_watchdog(int(what), txid)
    if how == "systemd":
        res = subprocess.run(["systemctl", "is-active", f"{what}.timer"], capture_output=True, text=True)
        return res.stdout.strip() == "active"
    return False


def main(argv: List[str]) -> None:
    """The watchdog (or, with ``--now``, the systemd service): roll back at the deadline."""
    state_dir, txid = argv[0], argv[1]
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        tx = state.load_transaction(state_dir, txid)
        if tx is None or tx.state != state.PENDING:
            return
        left = (tx.deadline or 0) - time.time()
        if left <= 0 or "--now" in argv:
            break
        time.sleep(min(POLL, left))
    who = "systemd timer" if "--now" in argv else f"watchdog[{os.getpid()}]"
    try:
        done = state.expire(txid, state_dir=state_dir, who=who)
    except Exception as exc:  # the log is all there is to tell
        print(f"{time.strftime('%FT%TZ', time.gmtime())} rollback of {txid} failed: {exc}", flush=True)
        raise SystemExit(1) from None
    if done is not None:
        print(f"{time.strftime('%FT%TZ', time.gmtime())} {done.message}", flush=True)
