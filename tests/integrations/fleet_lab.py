"""A small fleet on one machine: host namespaces behind a controller namespace, each host with
its own sshd, reached from the controller over SSH.

    with FleetLab(["h1", "h2", "h3"], ssh=True) as lab:
        lab.load_iptables("h1", v4, v6); lab.listen("h1", [ListenerSpec("tcp", "::", 8080)])
        lab.controller_exec("ansible-playbook", ...)

Layout: controller ``tw-fc-XXXX``; host N ``tw-fhN-XXXX`` linked to it by a veth pair,
198.51.100.(4N+1)/30 + 2001:db8:f:N::1/64 on the controller side, .(4N+2) and ::2 on the host's
``eth0`` (documentation addresses only). The machine's own network namespace is never touched.

sshd (``ssh=True``): one per host, ``sshd -D -f CONFIG`` with its host key, config, authorized
key and the client's known_hosts all under a temporary directory. It runs in a private mount and
UTS namespace (``unshare --mount --uts``): a tmpfs over /run gives it the privilege-separation
directory /run/sshd without creating it on the machine, and its own hostname names the host in
the snapshots. Key authentication as root only, no PAM, no password. Every process started here
is ended by its PID at teardown, every namespace deleted, the temporary directory removed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import harness
from harness import Listener, ListenerSpec, netns_exec

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

# the hosts' usual IPv4 firewall: default deny, loopback, replies, ssh ({extra}: more rules)
BASE_V4 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
{extra}COMMIT
"""
EMPTY = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"

# runs as `unshare --mount --uts --propagation private -- sh -c SCRIPT sh HOSTNAME CONFIG`
_PRIVATE_SSHD = ('set -e; mount -t tmpfs tw-sshd-run /run; mkdir -m 0755 /run/sshd; hostname "$1"; '
                 'exec "$3" -D -e -f "$2"')

SSHD_CONFIG = """\
Port 22
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
LogLevel ERROR
Subsystem sftp internal-sftp
"""


class FleetLab:
    def __init__(self, hosts: Sequence[str], ssh: bool = False) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag
        self.controller = f"tw-fc-{tag}"
        self.names = list(hosts)
        self.ns: Dict[str, str] = {h: f"tw-fh{i}-{tag}" for i, h in enumerate(self.names, 1)}
        self.ssh = ssh
        self.tmp = Path(tempfile.mkdtemp(prefix="twf-"))  # short: ssh control sockets live here
        self.processes: List[subprocess.Popen] = []
        self.listeners: List[Listener] = []
        self._created: List[str] = []

    # addresses ---------------------------------------------------------------------------
    def address(self, host: str, family: str = "ipv4", side: str = "host") -> str:
        n = self.names.index(host) + 1
        if family == "ipv4":
            return f"198.51.100.{4 * n + (2 if side == 'host' else 1)}"
        return f"2001:db8:f:{n}::{2 if side == 'host' else 1}"

    # lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "FleetLab":
        try:
            self._build()
            if self.ssh:
                self._start_sshds()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add_ns(self, name: str) -> None:
        harness._run(["ip", "netns", "add", name])
        self._created.append(name)
        harness.ip_batch(name, ["link set lo up"])

    def _build(self) -> None:
        self._add_ns(self.controller)
        for n, host in enumerate(self.names, 1):
            ns = self.ns[host]
            self._add_ns(ns)
            ctrl_if = f"twf{n}"
            harness.ip_batch(self.controller, [
                f"link add {ctrl_if} type veth peer name eth0 netns {ns}",
                f"addr add {self.address(host, 'ipv4', 'ctrl')}/30 dev {ctrl_if}",
                f"addr add {self.address(host, 'ipv6', 'ctrl')}/64 dev {ctrl_if} nodad",
                f"link set {ctrl_if} up",
            ])
            harness.ip_batch(ns, [
                f"addr add {self.address(host, 'ipv4')}/30 dev eth0",
                f"addr add {self.address(host, 'ipv6')}/64 dev eth0 nodad",
                "link set eth0 up",
            ])

    def close(self) -> None:
        for listener in self.listeners:
            try:
                listener.stop()
            except Exception:
                pass
        for proc in self.processes:  # by PID, the processes this lab started
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for name in self._created:
            # what the lab's processes left running in its namespaces (an sshd session, an ssh
            # client): started by this lab, ended by PID
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for name in reversed(self._created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self._created.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # hosts -------------------------------------------------------------------------------
    def load_iptables(self, host: str, v4: Optional[str] = None, v6: Optional[str] = None, legacy: bool = False) -> None:
        if not legacy:
            harness.load_iptables(self.ns[host], v4_text=v4, v6_text=v6)
            return
        for tool, text in (("iptables-legacy-restore", v4), ("ip6tables-legacy-restore", v6)):
            if text is not None:
                netns_exec(self.ns[host], tool, input=text)

    def load_nft(self, host: str, text: str) -> None:
        harness.load_nft(self.ns[host], text)

    def listen(self, host: str, specs: Sequence[ListenerSpec]) -> Listener:
        listener = Listener(self.ns[host], specs, name=f"tw-{host}")
        self.listeners.append(listener)
        return listener.start()

    def twinwall(self, host: str, *args: str):
        return harness.run_twinwall(self.ns[host], *args)

    # ssh ---------------------------------------------------------------------------------
    @property
    def client_key(self) -> Path:
        return self.tmp / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.tmp / "known_hosts"

    def _start_sshds(self) -> None:
        harness._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "twinwall-test", "-f", str(self.client_key)])
        authorized = self.tmp / "authorized_keys"
        shutil.copy(str(self.client_key) + ".pub", authorized)
        known = []
        for host in self.names:
            d = self.tmp / host
            d.mkdir()
            key = d / "host_key"
            harness._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
            known.append(f"{self.address(host)} {(d / 'host_key.pub').read_text().split(' ')[0]} "
                         f"{(d / 'host_key.pub').read_text().split(' ')[1]}")
            config = d / "sshd_config"
            config.write_text(SSHD_CONFIG.format(host_key=key, authorized_keys=authorized))
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[host], "unshare", "--mount", "--uts", "--propagation", "private",
                 "--", "sh", "-c", _PRIVATE_SSHD, "sh", host, str(config), SSHD],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self.processes.append(proc)
        self.known_hosts.write_text("\n".join(known) + "\n")
        for host, proc in zip(self.names, self.processes):
            self._wait_listening(host, proc)

    def _wait_listening(self, host: str, proc: subprocess.Popen, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise harness.HarnessError(f"sshd for {host} exited {proc.returncode}: {proc.stderr.read().strip()}")
            out = netns_exec(self.ns[host], "ss", "-Hltn", "sport", "=", ":22").stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise harness.HarnessError(f"sshd for {host} not listening after {timeout}s")

    def ssh_args(self) -> List[str]:
        return ["-F", "/dev/null", "-i", str(self.client_key), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]

    def controller_exec(self, *cmd: str, env: Optional[Dict[str, str]] = None, timeout: float = 300,
                        check: bool = False, input: Optional[str] = None) -> subprocess.CompletedProcess:
        return netns_exec(self.controller, *cmd, env=env, timeout=timeout, check=check, input=input)
