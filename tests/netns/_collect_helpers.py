"""Namespaces, listeners and commands for test_collect_netns.py (self-contained on purpose).

Everything runs inside namespaces created here (``tw-col-<random>``) and deleted afterwards,
whatever happens; processes are ended by their PID only.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO_SRC = Path(__file__).resolve().parent.parent.parent / "src"

# A listener: binds, listens (tcp), prints "ready", then waits for its stdin to close.
LISTENER = r"""
import socket, sys
proto, family, addr, port, v6only = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
af = socket.AF_INET6 if family == "6" else socket.AF_INET
s = socket.socket(af, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if af == socket.AF_INET6 and v6only != "-":
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
s.bind((addr, port))
if proto == "tcp":
    s.listen(16)
print("ready", flush=True)
sys.stdin.read()
"""


def run(cmd: Sequence[str], input: Optional[str] = None, check: bool = True,
        env: Optional[Dict[str, str]] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), input=input, capture_output=True, text=True,
                         timeout=timeout, env=env)
    if check and res.returncode != 0:
        raise AssertionError(f"failed (rc={res.returncode}): {' '.join(cmd)}\n{res.stderr}")
    return res


def nsexec(ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return run(["ip", "netns", "exec", ns] + list(cmd), **kw)


class Lab:
    """A server namespace with lo up and a veth link to a peer namespace.

    Server side: ``self.ns``, interface ``self.dev`` with 192.0.2.1/24 and 2001:db8:1::1/64.
    """

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.ns = f"tw-col-{tag}"
        self.peer = f"tw-colp-{tag}"
        self.dev = "twc0"
        self.listeners: List[subprocess.Popen] = []

    def __enter__(self) -> "Lab":
        try:
            run(["ip", "netns", "add", self.ns])
            run(["ip", "netns", "add", self.peer])
            nsexec(self.ns, "ip", "link", "set", "lo", "up")
            nsexec(self.peer, "ip", "link", "set", "lo", "up")
            nsexec(self.ns, "ip", "link", "add", self.dev, "type", "veth",
                   "peer", "name", "twc1", "netns", self.peer)
            nsexec(self.ns, "ip", "addr", "add", "192.0.2.1/24", "dev", self.dev)
            nsexec(self.ns, "ip", "addr", "add", "2001:db8:1::1/64", "dev", self.dev, "nodad")
            nsexec(self.peer, "ip", "addr", "add", "192.0.2.2/24", "dev", "twc1")
            nsexec(self.peer, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "twc1", "nodad")
            nsexec(self.ns, "ip", "link", "set", self.dev, "up")
            nsexec(self.peer, "ip", "link", "set", "twc1", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.listeners:
            if proc.poll() is None:
                proc.kill()  # by PID: the listener process itself (ip netns exec execs it)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self.listeners = []
        for ns in (self.ns, self.peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def listen(self, proto: str, addr: str, port: int, v6only: Optional[int] = None) -> int:
        """Start a real listener in the server namespace; returns its PID once it is bound."""
        family = "6" if ":" in addr else "4"
        cmd = ["ip", "netns", "exec", self.ns, sys.executable, "-c", LISTENER,
               proto, family, addr, str(port), "-" if v6only is None else str(v6only)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.listeners.append(proc)
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise AssertionError(f"listener {proto} {addr}:{port} failed: {proc.stderr.read()}")
        return proc.pid

    def restore(self, tool: str, text: str) -> None:
        nsexec(self.ns, tool, input=text)

    def twinwall(self, *args: str, env: Optional[Dict[str, str]] = None,
                 prefix: Sequence[str] = (), python: str = sys.executable,
                 check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", self.ns] + list(prefix) + [python, "-m", "twinwall"] + list(args)
        return run(cmd, env=env, check=check, timeout=120)

    def collect(self, path: Path, *extra: str) -> dict:
        res = self.twinwall("collect", "-o", str(path), *extra)
        assert res.stdout == "", "collect -o FILE must not write to stdout"
        assert res.stderr.startswith("twinwall: collected "), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        return json.loads(path.read_text())


def comm(pid: int) -> str:
    """The kernel's name of a process (what ss -p prints)."""
    return Path(f"/proc/{pid}/comm").read_text().strip()


def env_with_src() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
