"""Network-namespace harness for twinwall's end-to-end tests (audit, scan, diff, nft tests).

Everything here runs inside namespaces the harness creates and deletes; the machine's own (root)
network namespace is never changed. Addresses come only from the documentation ranges
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32).

Typical use::

    from harness import Topology, ListenerSpec

    with Topology() as topo:                      # server + clients "inside" and "outside"
        topo.load_iptables(v4_text=V4, v6_text=V6)  # into the server namespace
        topo.start_listeners([ListenerSpec("tcp", "::", 22, v6only=False)])
        r = topo.probe("inside", topo.server_address("inside", "ipv6"), 22, "tcp")
        assert r.result == "open"
        report = topo.audit_json()                 # `twinwall audit --format json` in the server

Layout built by :class:`Topology` (default two clients)::

      client "inside"  (tw-inside-XXXX)              client "outside" (tw-outside-XXXX)
        eth0 192.0.2.10/24  2001:db8:a::10/64          eth0 198.51.100.10/24  2001:db8:b::10/64
         |   default routes via the server               |
        eth-a 192.0.2.1/24  2001:db8:a::1/64   ---   eth-b 198.51.100.1/24  2001:db8:b::1/64
                         server (tw-srv-XXXX)

Every client has its own veth link and subnet. Neighbours are resolved the way real hosts
resolve them (ARP, and for IPv6 neighbour discovery, which the firewall filters): no static
neighbour entries, so a ruleset that drops ICMPv6 neighbour discovery breaks IPv6 here as it does
on a real host (a static entry once hid exactly that from the tests).
ICMP error rate limits are switched off in the server so every REJECT / port-unreachable answer
arrives. IPv6 addresses use ``nodad`` so they are usable at once.

Module-level functions (``load_iptables``, ``load_nft``, ``probe``, ``probe_many``,
``run_twinwall``, ``audit_json``, ``netns_exec``) work on any namespace name; the
:class:`Topology` methods are shortcuts that default to the server namespace.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from twinwall.analysis.address_sets import AUDIT_SCHEMA, inline_address_sets

HERE = Path(__file__).resolve().parent
PROBE_HELPER = HERE / "probe_helper.py"
REPO_SRC = HERE.parent.parent / "src"

IPV4 = "ipv4"
IPV6 = "ipv6"

# Default link plan: (server interface, IPv4 network, IPv6 network), one per client, in order.
DEFAULT_LINKS = [
    ("eth-a", "192.0.2.0/24", "2001:db8:a::/64"),
    ("eth-b", "198.51.100.0/24", "2001:db8:b::/64"),
    ("eth-c", "203.0.113.0/24", "2001:db8:c::/64"),
]
CLIENT_IFNAME = "eth0"
SERVER_HOST = 1  # host part of the server's address on every link (.1 / ::1)
CLIENT_HOST = 10  # host part of the client's IPv4 address (.10)
CLIENT_HOST_V6 = 0x10  # host part of the client's IPv6 address (::10)

DOC_NETS = [ipaddress.ip_network(n) for n in
            ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


class HarnessError(RuntimeError):
    """The harness itself could not do its job (a command failed, a listener did not start)."""


# --------------------------------------------------------------------------------------------
# availability


def netns_unavailable_reason() -> Optional[str]:
    """None when the namespace tests can run here, otherwise a one-line reason to skip them."""
    if sys.platform != "linux":
        return "network-namespace tests need Linux"
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns add, iptables-restore)"
    for tool in ("ip", "iptables-restore", "ip6tables-restore"):
        if shutil.which(tool) is None:
            return f"network-namespace tests need '{tool}' (apt install iproute2 iptables)"
    name = f"tw-check-{secrets.token_hex(3)}"
    try:
        add = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"'ip netns add' unavailable: {exc}"
    if add.returncode != 0:
        return f"'ip netns add' failed: {add.stderr.strip()}"
    try:
        # iptables-restore inside a namespace needs the netfilter modules / nf_tables support.
        res = subprocess.run(["ip", "netns", "exec", name, "iptables-restore"],
                             input="*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n",
                             capture_output=True, text=True, timeout=20)
        if res.returncode != 0:
            return f"iptables-restore does not work in a network namespace: {res.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True, timeout=20)
    return None


# --------------------------------------------------------------------------------------------
# running commands in a namespace


def _run(cmd: Sequence[str], *, input: Optional[str] = None, check: bool = True,
         timeout: float = 60, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(list(cmd), input=input, capture_output=True, text=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
    if check and res.returncode != 0:
        raise HarnessError(f"command failed (rc={res.returncode}): {' '.join(cmd)}\n"
                           f"stdout: {res.stdout.strip()}\nstderr: {res.stderr.strip()}")
    return res


def netns_exec(ns: str, *cmd: str, input: Optional[str] = None, check: bool = True,
               timeout: float = 60, env: Optional[Dict[str, str]] = None
               ) -> subprocess.CompletedProcess:
    """Run ``cmd`` inside namespace ``ns`` (``ip netns exec``) and return the CompletedProcess."""
    return _run(["ip", "netns", "exec", ns, *cmd], input=input, check=check, timeout=timeout,
                env=env)


def ip_batch(ns: str, lines: Iterable[str]) -> None:
    """Run several ``ip`` commands in one process inside ``ns`` (``ip -n NS -batch -``)."""
    text = "".join(line + "\n" for line in lines)
    if text:
        _run(["ip", "-n", ns, "-batch", "-"], input=text)


def sysctl_set(ns: str, values: Dict[str, Union[str, int]]) -> None:
    """Set sysctls inside ``ns``, e.g. {"net.ipv6.conf.all.disable_ipv6": 1}."""
    if values:
        netns_exec(ns, "sysctl", "-q", "-w", *[f"{k}={v}" for k, v in values.items()])


def load_iptables(ns: str, v4_text: Optional[str] = None, v6_text: Optional[str] = None) -> None:
    """Load iptables-save formatted rulesets into ``ns`` with iptables-restore / ip6tables-restore.

    Either may be None (that family is left untouched: no tables, everything accepted)."""
    if v4_text is not None:
        netns_exec(ns, "iptables-restore", input=_ensure_newline(v4_text))
    if v6_text is not None:
        netns_exec(ns, "ip6tables-restore", input=_ensure_newline(v6_text))


def load_nft(ns: str, text: str) -> None:
    """Load an nft script into ``ns`` with ``nft -f -``."""
    netns_exec(ns, "nft", "-f", "-", input=_ensure_newline(text))


def _ensure_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


# --------------------------------------------------------------------------------------------
# listeners


@dataclass(frozen=True)
class ListenerSpec:
    """One socket to open in a namespace: tcp listens (accepts and closes), udp echoes.

    ``v6only``: None leaves the kernel default (net.ipv6.bindv6only, normally 0 = dual-stack);
    only meaningful for IPv6 addresses."""

    proto: str  # "tcp" | "udp"
    address: str  # "0.0.0.0", "::", "127.0.0.1", "::1", "192.0.2.1", ...
    port: int
    v6only: Optional[bool] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"proto": self.proto, "address": self.address, "port": self.port,
                "v6only": self.v6only}

    def __str__(self) -> str:
        addr = f"[{self.address}]" if ":" in self.address else self.address
        flag = "" if self.v6only is None else f" v6only={int(self.v6only)}"
        return f"{self.proto} {addr}:{self.port}{flag}"


class Listener:
    """Real listening sockets served by one child process (probe_helper.py serve) in ``ns``.

    Use as a context manager, or call start()/stop(). ``pid`` is the serving process (the
    ``ip netns exec`` process execs into Python, so this is the PID owning the sockets).
    ``bound`` lists what was opened, with the v6only flag the kernel reports."""

    def __init__(self, ns: str, specs: Sequence[ListenerSpec], name: str = "tw-listener",
                 ready_timeout: float = 10.0):
        self.ns = ns
        self.specs = list(specs)
        self.name = name
        self.ready_timeout = ready_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.bound: List[Dict[str, Any]] = []

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self) -> "Listener":
        cmd = ["ip", "netns", "exec", self.ns, sys.executable, str(PROBE_HELPER),
               "serve", "--name", self.name]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        try:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps([s.to_dict() for s in self.specs]))
            self.proc.stdin.close()
            line = self._read_line(self.ready_timeout)
            if not line.startswith("READY "):
                err = ""
                if self.proc.poll() is not None and self.proc.stderr is not None:
                    err = self.proc.stderr.read()
                raise HarnessError(f"listener {self.name} in {self.ns} did not start (waited up to "
                                   f"{self.ready_timeout}s): {line.strip() or '(no output)'} "
                                   f"{err.strip()}")
            self.bound = json.loads(line[len("READY "):])["listeners"]
        except BaseException:
            self.stop()
            raise
        return self

    def _read_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return ""
        return self.proc.stdout.readline()

    def stop(self) -> None:
        """Stop the serving process by its PID (SIGTERM, then SIGKILL after 3s)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> "Listener":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# probes


@dataclass
class ProbeRequest:
    client_ns: str
    address: str
    port: int
    proto: str
    timeout: float = 1.0
    source_port: Optional[int] = None
    source_address: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"proto": self.proto, "address": self.address, "port": self.port,
                "timeout": self.timeout, "source_port": self.source_port,
                "source_address": self.source_address}


@dataclass
class ProbeResult:
    """``result`` is "open", "closed" (refused / rejected / ICMP error) or "filtered" (silence).

    Both "closed" and "filtered" mean *not reachable* when compared with twinwall's statuses
    (REJECT answers, DROP does not); the raw result is kept for messages."""

    request: ProbeRequest
    result: str
    detail: str = ""

    @property
    def reachable(self) -> bool:
        return self.result == "open"

    def __str__(self) -> str:
        r = self.request
        addr = f"[{r.address}]" if ":" in r.address else r.address
        sport = f" from port {r.source_port}" if r.source_port else ""
        return f"{r.client_ns} -> {r.proto} {addr}:{r.port}{sport}: {self.result} ({self.detail})"


def probe_many(requests: Sequence[ProbeRequest]) -> List[ProbeResult]:
    """Run all probes concurrently: one helper process per client namespace (started in
    parallel), one thread per probe inside it. Results come back in request order."""
    by_ns: Dict[str, List[int]] = {}
    for i, req in enumerate(requests):
        by_ns.setdefault(req.client_ns, []).append(i)
    results: List[Optional[ProbeResult]] = [None] * len(requests)
    procs = []
    for ns, idxs in by_ns.items():
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(PROBE_HELPER),
                                 "probe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append((ns, idxs, proc))
    # Write every request list first, so all helpers probe at the same time.
    outputs: Dict[str, Tuple[str, str, int]] = {}

    def talk(ns: str, idxs: List[int], proc: subprocess.Popen) -> None:
        payload = json.dumps([requests[i].to_dict() for i in idxs])
        max_timeout = max(requests[i].timeout for i in idxs)
        try:
            out, err = proc.communicate(payload, timeout=max_timeout + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        outputs[ns] = (out, err, proc.returncode)

    threads = [threading.Thread(target=talk, args=p) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ns, idxs, _proc in procs:
        out, err, rc = outputs[ns]
        if rc != 0:
            raise HarnessError(f"probe helper in {ns} failed (rc={rc}): {err.strip()}")
        raw = json.loads(out)
        for i, item in zip(idxs, raw):
            if item["result"] == "error":
                raise HarnessError(f"probe {requests[i]} could not run: {item['detail']}")
            results[i] = ProbeResult(requests[i], item["result"], item["detail"])
    return [r for r in results if r is not None]


def probe(client_ns: str, addr: str, port: int, proto: str, timeout: float = 1.0,
          source_port: Optional[int] = None) -> ProbeResult:
    """One real connection attempt from ``client_ns``; see :class:`ProbeResult` for results."""
    return probe_many([ProbeRequest(client_ns, addr, port, proto, timeout, source_port)])[0]


# --------------------------------------------------------------------------------------------
# twinwall


def _twinwall_env() -> Dict[str, str]:
    env = dict(os.environ)
    # The package is normally installed (pip install -e); make a source checkout work too.
    if REPO_SRC.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_SRC), env.get("PYTHONPATH"))
                                            if p)
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def run_twinwall(ns: str, *args: str, timeout: float = 120) -> Tuple[int, str, str]:
    """Run ``python -m twinwall ARGS`` inside ``ns``; return (returncode, stdout, stderr)."""
    res = netns_exec(ns, sys.executable, "-m", "twinwall", *args, check=False, timeout=timeout,
                     env=_twinwall_env())
    return res.returncode, res.stdout, res.stderr


def audit_json(ns: str, *extra: str) -> Dict[str, Any]:
    """Parsed JSON of ``twinwall audit --format json`` run in ``ns`` (exit 0 and 1 both OK), in
    the ``twinwall.audit/1`` form the tests read (its address lists inline)."""
    rc, out, err = run_twinwall(ns, "audit", "--format", "json", *extra)
    if rc not in (0, 1):
        raise AssertionError(f"`twinwall audit --format json` in {ns} exited {rc} (0/1 expected)"
                             f"\nstderr:\n{err.strip()}\nstdout:\n{out[:2000]}")
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"`twinwall audit --format json` printed invalid JSON ({exc}):\n"
                             f"{out[:2000]}\nstderr:\n{err.strip()}") from exc
    if doc.get("schema") != AUDIT_SCHEMA or not isinstance(doc.get("address_sets"), list):
        raise AssertionError(f"`twinwall audit --format json` printed schema {doc.get('schema')!r} "
                             f"(expected {AUDIT_SCHEMA!r}, with address_sets)")
    return inline_address_sets(doc)


# --------------------------------------------------------------------------------------------
# topology


@dataclass
class Link:
    """One veth link between the server and one client."""

    server_if: str
    client_if: str
    v4_net: ipaddress.IPv4Network
    v6_net: ipaddress.IPv6Network
    server_mac: str
    client_mac: str

    @property
    def server_v4(self) -> str:
        return str(self.v4_net.network_address + SERVER_HOST)

    @property
    def client_v4(self) -> str:
        return str(self.v4_net.network_address + CLIENT_HOST)

    @property
    def server_v6(self) -> str:
        return str(self.v6_net.network_address + SERVER_HOST)

    @property
    def client_v6(self) -> str:
        return str(self.v6_net.network_address + CLIENT_HOST_V6)

    def server_address(self, family: str) -> str:
        return self.server_v4 if family == IPV4 else self.server_v6

    def client_address(self, family: str) -> str:
        return self.client_v4 if family == IPV4 else self.client_v6

    def network(self, family: str) -> Union[ipaddress.IPv4Network, ipaddress.IPv6Network]:
        return self.v4_net if family == IPV4 else self.v6_net


@dataclass
class Client:
    name: str  # logical name: "inside", "outside", ...
    ns: str  # namespace name
    link: Link


@dataclass
class ClientSpec:
    """A client with an explicit link plan (for more than three clients or custom subnets)."""

    name: str
    server_if: str
    v4_net: str
    v6_net: str


class Topology:
    """A server namespace and N client namespaces, each client on its own veth link.

    ``clients``: names (default ("inside", "outside")) mapped in order onto DEFAULT_LINKS, or
    ClientSpec objects for custom links. Namespaces are ``{prefix}-srv-XXXX`` and
    ``{prefix}-{name[:8]}-XXXX`` with one random suffix XXXX per topology. Everything (listeners
    started through the topology, then the namespaces with their links) is removed in
    ``__exit__``/``close()``, also when building or the test fails."""

    def __init__(self, clients: Sequence[Union[str, ClientSpec]] = ("inside", "outside"),
                 prefix: str = "tw", icmp_ratelimit: bool = False):
        self.suffix = secrets.token_hex(2)
        self.prefix = prefix
        self.server = f"{prefix}-srv-{self.suffix}"
        self.clients: Dict[str, Client] = {}
        self.icmp_ratelimit = icmp_ratelimit
        self._namespaces: List[str] = []
        self._listeners: List[Listener] = []
        if len(clients) > len(DEFAULT_LINKS) and not all(isinstance(c, ClientSpec) for c in clients):
            raise ValueError(f"more than {len(DEFAULT_LINKS)} clients need ClientSpec link plans")
        for i, c in enumerate(clients):
            if isinstance(c, ClientSpec):
                spec = c
            else:
                ifname, v4, v6 = DEFAULT_LINKS[i]
                spec = ClientSpec(c, ifname, v4, v6)
            v4_net = ipaddress.IPv4Network(spec.v4_net)
            v6_net = ipaddress.IPv6Network(spec.v6_net)
            for net in (v4_net, v6_net):
                if not any(net.version == d.version and net.subnet_of(d) for d in DOC_NETS):
                    raise ValueError(f"{net} is not inside a documentation range")
            link = Link(spec.server_if, CLIENT_IFNAME, v4_net, v6_net,
                        server_mac=f"02:74:77:{i + 1:02x}:00:01",
                        client_mac=f"02:74:77:{i + 1:02x}:00:02")
            ns = f"{prefix}-{spec.name[:8]}-{self.suffix}"
            self.clients[spec.name] = Client(spec.name, ns, link)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "Topology":
        try:
            self._build()
        except BaseException:
            self._close_quietly()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # do not hide the test's own failure behind a cleanup error
            self._close_quietly()

    def _close_quietly(self) -> None:
        try:
            self.close()
        except HarnessError as err:
            print(f"warning: {err}", file=sys.stderr)

    def _add_ns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)

    def _build(self) -> None:
        self._add_ns(self.server)
        for c in self.clients.values():
            self._add_ns(c.ns)
        # Make IPv6 usable whatever the host's defaults; switch ICMP error rate limits off.
        srv_sysctls: Dict[str, Union[str, int]] = {
            "net.ipv6.conf.all.disable_ipv6": 0, "net.ipv6.conf.default.disable_ipv6": 0,
            "net.ipv6.conf.all.accept_ra": 0, "net.ipv6.conf.default.accept_ra": 0,
        }
        if not self.icmp_ratelimit:
            srv_sysctls.update({"net.ipv4.icmp_ratelimit": 0, "net.ipv6.icmp.ratelimit": 0})
        sysctl_set(self.server, srv_sysctls)
        for c in self.clients.values():
            sysctl_set(c.ns, {"net.ipv6.conf.all.disable_ipv6": 0,
                              "net.ipv6.conf.default.disable_ipv6": 0,
                              "net.ipv6.conf.all.accept_ra": 0,
                              "net.ipv6.conf.default.accept_ra": 0})
        # Links are created from inside the server namespace, the peer end goes straight into
        # the client namespace: nothing ever appears in the root namespace.
        server_cmds = ["link set lo up"]
        for c in self.clients.values():
            lk = c.link
            server_cmds.append(f"link add {lk.server_if} address {lk.server_mac} type veth peer "
                               f"name {lk.client_if} address {lk.client_mac} netns {c.ns}")
        for c in self.clients.values():
            lk = c.link
            server_cmds += [
                f"addr add {lk.server_v4}/{lk.v4_net.prefixlen} dev {lk.server_if}",
                f"addr add {lk.server_v6}/{lk.v6_net.prefixlen} dev {lk.server_if} nodad",
                f"link set {lk.server_if} up",
            ]
        ip_batch(self.server, server_cmds)
        for c in self.clients.values():
            lk = c.link
            ip_batch(c.ns, [
                "link set lo up",
                f"addr add {lk.client_v4}/{lk.v4_net.prefixlen} dev {lk.client_if}",
                f"addr add {lk.client_v6}/{lk.v6_net.prefixlen} dev {lk.client_if} nodad",
                f"link set {lk.client_if} up",
                f"route add default via {lk.server_v4} dev {lk.client_if}",
                f"route add ::/0 via {lk.server_v6} dev {lk.client_if}",
            ])

    def close(self) -> None:
        """Stop every listener started through this topology, then delete the namespaces."""
        errors = []
        for lst in reversed(self._listeners):
            try:
                lst.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"stopping listener {lst.name} (pid {lst.pid}): {exc}")
        self._listeners.clear()
        for ns in reversed(self._namespaces):
            res = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True,
                                 timeout=30)
            if res.returncode != 0:
                errors.append(f"ip netns del {ns}: {res.stderr.strip()}")
        self._namespaces.clear()
        if errors:
            raise HarnessError("topology cleanup failed: " + "; ".join(errors))

    # -- addressing --------------------------------------------------------------------------

    def client(self, name: str) -> Client:
        return self.clients[name]

    def server_address(self, client: str, family: str) -> str:
        """The server's address of ``family`` on the link to ``client``."""
        return self.clients[client].link.server_address(family)

    def client_address(self, client: str, family: str) -> str:
        return self.clients[client].link.client_address(family)

    # -- actions (default: server namespace) -------------------------------------------------

    def disable_ipv6(self, ns: Optional[str] = None) -> None:
        """net.ipv6.conf.{all,default}.disable_ipv6=1 (the CIS way), default: in the server.
        Do this before starting listeners bound to specific IPv6 addresses (they vanish)."""
        sysctl_set(ns or self.server, {"net.ipv6.conf.all.disable_ipv6": 1,
                                       "net.ipv6.conf.default.disable_ipv6": 1})

    def load_iptables(self, v4_text: Optional[str] = None, v6_text: Optional[str] = None,
                      ns: Optional[str] = None) -> None:
        load_iptables(ns or self.server, v4_text, v6_text)

    def load_nft(self, text: str, ns: Optional[str] = None) -> None:
        load_nft(ns or self.server, text)

    def start_listeners(self, specs: Sequence[ListenerSpec], ns: Optional[str] = None,
                        name: Optional[str] = None) -> Listener:
        """Start listeners (one process) in the server or ``ns``; stopped in close()."""
        lst = Listener(ns or self.server, specs, name=name or f"tw-listener-{self.suffix}")
        self._listeners.append(lst)
        lst.start()
        return lst

    def probe(self, client: str, addr: str, port: int, proto: str, timeout: float = 1.0,
              source_port: Optional[int] = None) -> ProbeResult:
        return probe(self.clients[client].ns, addr, port, proto, timeout, source_port)

    def request(self, client: str, addr: str, port: int, proto: str, timeout: float = 1.0,
                source_port: Optional[int] = None) -> ProbeRequest:
        """Build a ProbeRequest from a logical client name, for :func:`probe_many`."""
        return ProbeRequest(self.clients[client].ns, addr, port, proto, timeout, source_port)

    def probe_many(self, requests: Sequence[ProbeRequest]) -> List[ProbeResult]:
        return probe_many(requests)

    def run_twinwall(self, *args: str, ns: Optional[str] = None, timeout: float = 120
                     ) -> Tuple[int, str, str]:
        return run_twinwall(ns or self.server, *args, timeout=timeout)

    def audit_json(self, *extra: str, ns: Optional[str] = None) -> Dict[str, Any]:
        return audit_json(ns or self.server, *extra)
