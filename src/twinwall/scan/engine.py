"""The probe engine: asyncio TCP connect and UDP probes with bounded concurrency, a token-bucket
rate limit, an adaptive per-probe timeout and retries for unanswered probes.

States follow nmap's connect (-sT) and UDP (-sU) scans:

TCP  open      the connection was established (SYN-ACK)
     closed    connect() was refused: a RST, or an ICMP port unreachable (what iptables'
               default ``REJECT`` sends; nmap -sT also calls it closed, reason "port-unreach")
     filtered  no answer after every try, or an ICMP unreachable other than port unreachable
               (host/net unreachable, administratively prohibited, ...)
UDP  open      the port answered with a datagram
     closed    ICMP port unreachable
     filtered  another ICMP unreachable
     open|filtered  silence after every try

Every socket asks for IP_RECVERR/IPV6_RECVERR, so the ICMP type and code that made connect() fail
are read from the error queue: that is how a RST is told from an ICMP port unreachable. It also
makes refusals prompt: an ICMP error that arrives while connect() still holds the socket lock
(the rule on a nearby host answers that fast) is kept by the kernel only as a soft error, and
without the error queue's wake-up a prober hears of it only when the SYN is resent a second later.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from twinwall.errors import CollectionError
from twinwall.scan.payloads import udp_payload
from twinwall.scan.ports import TCP, UDP
from twinwall.scan.targets import TargetAddress, sockaddr_for

OPEN = "open"
CLOSED = "closed"
FILTERED = "filtered"
OPEN_FILTERED = "open|filtered"
UNREACHABLE = "unreachable"  # the scanner has no route to the address: nothing was probed

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_EE = struct.Struct("=IBBBBII")

_ICMP4_UNREACH = {
    0: "net-unreach",
    1: "host-unreach",
    2: "proto-unreach",
    3: "port-unreach",
    4: "frag-needed",
    5: "source-route-failed",
    6: "net-unknown",
    7: "host-unknown",
    9: "net-prohibited",
    10: "host-prohibited",
    11: "net-tos-unreach",
    12: "host-tos-unreach",
    13: "admin-prohibited",
    14: "host-precedence-violation",
    15: "precedence-cutoff",
}
_ICMP6_UNREACH = {
    0: "no-route",
    1: "admin-prohibited",
    2: "beyond-scope",
    3: "addr-unreach",
    4: "port-unreach",
    5: "policy-fail",
    6: "reject-route",
}
_ERRNO_REASON = {
    errno.ECONNREFUSED: "conn-refused",
    errno.EHOSTUNREACH: "host-unreach",
    errno.ENETUNREACH: "net-unreach",
    errno.EACCES: "admin-prohibited",
    errno.EPERM: "local-policy",  # the scanner's own OUTPUT chain refused the packet
    errno.ENOPROTOOPT: "proto-unreach",
    errno.EHOSTDOWN: "host-down",
    errno.ETIMEDOUT: "no-response",
}
# Errors that mean the probe could not be made at all: a scanner problem, not a port state.
_LOCAL_FATAL = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass
class ProbeResult:
    protocol: str
    port: int
    family: str
    address: str
    state: str
    reason: str
    tries: int = 1
    rtt: Optional[float] = None  # seconds, when something answered

    def to_dict(self):
        return {"address": self.address, "state": self.state, "reason": self.reason}


@dataclass
class ScanOptions:
    timeout: float = 1.0  # longest wait for an answer, per try
    min_timeout: float = 0.1  # the adaptive wait never goes below this
    retries: int = 1  # extra tries for unanswered probes only
    concurrency: int = 500  # most tries in flight (the congestion window's ceiling)
    rate: float = 20000.0  # most tries per second over the whole scan; 0 = unlimited
    adaptive: bool = True  # RTT-based waits and a congestion window; False: fixed waits, full window
    initial_window: int = 10


class Congestion:
    """How many tries may be in flight: a window that grows while answers come back and halves
    when tries go unanswered, as nmap paces its scans (and TCP its segments).

    Slow start adds one try per answer (the window doubles each round trip) up to the
    threshold, then one per window's worth of answers. An unanswered try halves the window and
    sets the threshold there, unless the network has shown it delivers: a try sent *after* it
    was answered already (a firewall dropping some ports, not a congested path), or it was
    sent before the last halving (one burst of losses is one congestion event, as in nmap).
    The ceiling (``--concurrency``) and the token bucket (``--rate``) stay the politeness caps."""

    def __init__(self, initial: int, ceiling: int, adaptive: bool = True):
        self.ceiling = max(1, ceiling)
        self.window = float(min(max(1, initial), self.ceiling)) if adaptive else float(self.ceiling)
        self.threshold = float(self.ceiling)
        self.adaptive = adaptive
        self.in_flight = 0
        self.last_backoff = -1e9
        self.last_answered_sent = -1e9  # when the newest try that got an answer was sent
        self.backoffs = 0
        self.peak = self.window
        self._waiters: List[asyncio.Future] = []

    async def acquire(self) -> float:
        """Wait for room in the window; the time the try is sent (for ``release``)."""
        while self.in_flight >= int(self.window):
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut
        self.in_flight += 1
        return time.monotonic()

    def release(self, answered: Optional[bool], sent: float) -> None:
        """The try sent at ``sent`` ended: answered (True), unanswered (False) or silent as an
        open UDP port may be (None: says nothing of the network)."""
        self.in_flight -= 1
        if self.adaptive and answered is not None:
            if answered:
                self.last_answered_sent = max(self.last_answered_sent, sent)
                self.window += 1.0 if self.window < self.threshold else 1.0 / self.window
                self.window = min(self.window, float(self.ceiling))
                self.peak = max(self.peak, self.window)
            elif sent > self.last_answered_sent and sent > self.last_backoff:
                self.last_backoff = time.monotonic()
                self.backoffs += 1
                self.threshold = max(2.0, self.window / 2)
                self.window = self.threshold
        free = int(self.window) - self.in_flight
        while free > 0 and self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                free -= 1


class RttEstimator:
    """Per-address round-trip estimate (RFC 6298 style, as nmap uses for its timeouts)."""

    def __init__(self, max_timeout: float, min_timeout: float, adaptive: bool = True):
        self.max_timeout = max_timeout
        self.min_timeout = min(min_timeout, max_timeout)
        self.adaptive = adaptive
        self.srtt: Optional[float] = None
        self.rttvar = 0.0
        self.samples = 0

    def update(self, sample: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.samples += 1

    def timeout(self) -> float:
        if not self.adaptive or self.srtt is None or self.samples < 2:
            return self.max_timeout
        return max(self.min_timeout, min(self.max_timeout, self.srtt + 4 * self.rttvar))


class TokenBucket:
    """At most ``rate`` acquisitions per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: Optional[float] = None):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 20.0)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self._lock: Optional[asyncio.Lock] = None

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        if not self._lock.locked() and self._take():
            return  # (nobody waits: no lock round trip, the common case below the rate)
        async with self._lock:
            while not self._take():
                await asyncio.sleep((1.0 - self.tokens) / self.rate)

    def _take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def read_icmp_error(sock: socket.socket) -> Optional[Tuple[int, int, int]]:
    """(origin, icmp type, icmp code) of the newest queued ICMP error, or None."""
    found = None
    for _ in range(8):
        try:
            _data, ancdata, _flags, _addr = sock.recvmsg(1, 512, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        for level, ctype, cdata in ancdata:
            if (level, ctype) in (
                (socket.IPPROTO_IP, IP_RECVERR),
                (socket.IPPROTO_IPV6, IPV6_RECVERR),
            ) and len(cdata) >= _EE.size:
                _ee_errno, origin, icmp_type, icmp_code, _pad, _info, _d = _EE.unpack_from(cdata)
                if origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                    found = (origin, icmp_type, icmp_code)
    return found


def icmp_reason(icmp: Tuple[int, int, int]) -> str:
    origin, icmp_type, code = icmp
    if origin == SO_EE_ORIGIN_ICMP:
        if icmp_type == 3:
            return _ICMP4_UNREACH.get(code, f"icmp-unreach-{code}")
        if icmp_type == 11:
            return "time-exceeded"
        return f"icmp-{icmp_type}-{code}"
    if icmp_type == 1:
        return _ICMP6_UNREACH.get(code, f"icmp6-unreach-{code}")
    if icmp_type == 3:
        return "time-exceeded"
    return f"icmp6-{icmp_type}-{code}"


def is_port_unreachable(icmp: Optional[Tuple[int, int, int]]) -> bool:
    if icmp is None:
        return False
    origin, icmp_type, code = icmp
    if origin == SO_EE_ORIGIN_ICMP:
        return icmp_type == 3 and code == 3
    return icmp_type == 1 and code == 4


def classify_error(
    protocol: str, err: int, icmp: Optional[Tuple[int, int, int]]
) -> Tuple[str, str]:
    """(state, reason) for a probe that failed with ``err``, as nmap classifies it."""
    if err == errno.ECONNREFUSED:
        if protocol == UDP:
            return CLOSED, "port-unreach"
        return CLOSED, "port-unreach" if is_port_unreachable(icmp) else "conn-refused"
    if icmp is not None:
        return FILTERED, icmp_reason(icmp)
    reason = _ERRNO_REASON.get(err) or "error-" + errno.errorcode.get(err, str(err)).lower()
    return FILTERED, reason


def _new_socket(family: int, kind: int) -> socket.socket:
    try:
        sock = socket.socket(family, kind)
    except OSError as exc:
        if exc.errno in _LOCAL_FATAL:
            raise CollectionError(
                f"cannot open more sockets ({exc.strerror}): lower --concurrency"
            ) from None
        raise
    sock.setblocking(False)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    return sock


async def _tcp_try(
    loop: asyncio.AbstractEventLoop, fam: int, sa: tuple, timeout: float
) -> Tuple[Optional[str], str, Optional[float]]:
    """One connect attempt: (state or None for no answer, reason, rtt)."""
    sock = _new_socket(fam, socket.SOCK_STREAM)
    # Close with a RST: no TIME_WAIT pile-up on the scanner, no half-open sessions on the target.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    fd = sock.fileno()
    fut: asyncio.Future = loop.create_future()
    start = loop.time()
    watching = False
    timer = None
    try:
        try:
            sock.connect(sa)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno in _LOCAL_FATAL:
                raise CollectionError(f"cannot connect ({exc.strerror}): lower --concurrency") from None
            state, reason = classify_error(TCP, exc.errno or 0, read_icmp_error(sock))
            return state, reason, None
        else:
            return OPEN, "syn-ack", loop.time() - start

        def on_writable() -> None:
            if not fut.done():
                fut.set_result(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

        def on_timeout() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_writer(fd, on_writable)
        watching = True
        timer = loop.call_later(timeout, on_timeout)
        err = await fut
        rtt = loop.time() - start
        if err is None:
            return None, "no-response", None
        if err == 0:
            return OPEN, "syn-ack", rtt
        if err in _LOCAL_FATAL:
            raise CollectionError(f"cannot connect ({errno.errorcode.get(err)}): lower --concurrency")
        state, reason = classify_error(TCP, err, read_icmp_error(sock))
        return state, reason, rtt
    finally:
        if watching:
            loop.remove_writer(fd)
        if timer is not None:
            timer.cancel()
        sock.close()


async def _udp_wait(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float
) -> Tuple[Optional[str], str]:
    """Wait for a reply or an error on a connected UDP socket."""
    fd = sock.fileno()
    fut: asyncio.Future = loop.create_future()

    def on_readable() -> None:
        if fut.done():
            return
        try:
            sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            fut.set_result(classify_error(UDP, exc.errno or 0, read_icmp_error(sock)))
            return
        fut.set_result((OPEN, "udp-response"))

    def on_timeout() -> None:
        if not fut.done():
            fut.set_result((None, "no-response"))

    loop.add_reader(fd, on_readable)
    timer = loop.call_later(timeout, on_timeout)
    try:
        return await fut
    finally:
        loop.remove_reader(fd)
        timer.cancel()


class Scanner:
    def __init__(
        self,
        options: ScanOptions,
        progress: Optional[Callable[[int, int], None]] = None,
    ):
        self.options = options
        self.progress = progress
        self.bucket = TokenBucket(options.rate)
        self.window = Congestion(options.initial_window, options.concurrency, options.adaptive)
        self.rtt: Dict[str, RttEstimator] = {}
        self.done = 0
        self.total = 0

    def _estimator(self, address: str) -> RttEstimator:
        est = self.rtt.get(address)
        if est is None:
            est = RttEstimator(self.options.timeout, self.options.min_timeout, self.options.adaptive)
            self.rtt[address] = est
        return est

    async def probe_tcp(self, addr: TargetAddress, port: int) -> ProbeResult:
        loop = asyncio.get_running_loop()
        fam, sa = sockaddr_for(addr, port)
        est = self._estimator(addr.address)
        tries = 0
        while True:
            tries += 1
            sent = await self.window.acquire()
            state = None
            try:
                await self.bucket.acquire()
                state, reason, rtt = await _tcp_try(loop, fam, sa, est.timeout())
            finally:
                self.window.release(state is not None, sent)
            if rtt is not None:
                est.update(rtt)
            if state is not None:
                return ProbeResult(TCP, port, addr.family, addr.address, state, reason, tries, rtt)
            if tries > self.options.retries:
                return ProbeResult(TCP, port, addr.family, addr.address, FILTERED, reason, tries)

    async def probe_udp(self, addr: TargetAddress, port: int) -> ProbeResult:
        loop = asyncio.get_running_loop()
        fam, sa = sockaddr_for(addr, port)
        est = self._estimator(addr.address)
        payload = udp_payload(port)
        sock = _new_socket(fam, socket.SOCK_DGRAM)
        tries = 0
        state: Optional[str]
        try:
            try:
                sock.connect(sa)
            except OSError as exc:
                state, reason = classify_error(UDP, exc.errno or 0, None)
                return ProbeResult(UDP, port, addr.family, addr.address, state, reason, 0)
            while True:
                tries += 1
                sent = await self.window.acquire()
                state = None
                try:
                    await self.bucket.acquire()
                    start = loop.time()
                    try:
                        sock.send(payload)
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as exc:
                        state, reason = classify_error(UDP, exc.errno or 0, read_icmp_error(sock))
                        return ProbeResult(UDP, port, addr.family, addr.address, state, reason, tries)
                    state, reason = await _udp_wait(loop, sock, est.timeout())
                finally:
                    # (UDP silence is the usual answer of an open port: it is not congestion)
                    self.window.release(True if state is not None else None, sent)
                if state is not None:
                    rtt = loop.time() - start
                    est.update(rtt)
                    return ProbeResult(UDP, port, addr.family, addr.address, state, reason, tries, rtt)
                if tries > self.options.retries:
                    return ProbeResult(
                        UDP, port, addr.family, addr.address, OPEN_FILTERED, reason, tries
                    )
        finally:
            sock.close()

    async def _worker(self, jobs: Iterator[Tuple[str, int, TargetAddress]], out: List[ProbeResult]):
        for protocol, port, addr in jobs:
            if protocol == TCP:
                result = await self.probe_tcp(addr, port)
            else:
                result = await self.probe_udp(addr, port)
            out.append(result)
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)

    async def run_async(self, jobs: List[Tuple[str, int, TargetAddress]]) -> List[ProbeResult]:
        self.total = len(jobs)
        self.done = 0
        out: List[ProbeResult] = []
        iterator = iter(jobs)
        workers = max(1, min(self.options.concurrency, len(jobs)))
        tasks = [asyncio.ensure_future(self._worker(iterator, out)) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        return out


def make_jobs(
    probes: Iterable[Tuple[str, int]], addresses: Iterable[TargetAddress]
) -> List[Tuple[str, int, TargetAddress]]:
    """Every (protocol, port) for every reachable address, port-major so both families of one
    port are probed close together in time."""
    addrs = [a for a in addresses if a.reachable]
    return [(proto, port, a) for proto, port in probes for a in addrs]


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit toward ``wanted`` + headroom; return the usable concurrency."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + 64
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - 64))


def run_scan(
    jobs: List[Tuple[str, int, TargetAddress]],
    options: ScanOptions,
    progress: Optional[Callable[[int, int], None]] = None,
) -> List[ProbeResult]:
    scanner = Scanner(options, progress)
    return asyncio.run(scanner.run_async(jobs))


def unreachable_results(
    probes: Iterable[Tuple[str, int]], addresses: Iterable[TargetAddress]
) -> List[ProbeResult]:
    """Placeholder results for addresses the scanner cannot route to."""
    return [
        ProbeResult(proto, port, a.family, a.address, UNREACHABLE, "no-route", 0)
        for proto, port in probes
        for a in addresses
        if not a.reachable
    ]


__all__ = [
    "OPEN", "CLOSED", "FILTERED", "OPEN_FILTERED", "UNREACHABLE",
    "ProbeResult", "ScanOptions", "Scanner", "TokenBucket", "RttEstimator",
    "classify_error", "icmp_reason", "make_jobs", "run_scan", "raise_fd_limit",
    "unreachable_results",
]
