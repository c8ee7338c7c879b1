"""Tiny helper run *inside* a network namespace by tests/netns/harness.py.

Standard library only, Python >= 3.9, no imports from twinwall or the tests.

    probe_helper.py serve --name NAME            (JSON list of listener specs on stdin)
        Opens every listener (tcp: listen and accept-then-close; udp: echo every datagram back),
        prints one line ``READY <json>`` describing what was bound (with the real v6only flag),
        then serves until SIGTERM/SIGINT or until its parent dies. A bind error is printed as
        ``ERROR <message>`` and the exit code is 3.

    probe_helper.py probe                          (JSON list of probe requests on stdin)
        Runs every probe concurrently (one thread each) and prints a JSON list of results in the
        same order: {"result": "open" | "closed" | "filtered", "detail": "..."}.
        tcp: connect() with a timeout, then wait for the listener's close (it accepts and
             closes: the server had the connection, the handshake's ACK passed). both -> open;
             ECONNREFUSED (RST or ICMP port unreachable) or another ICMP error (host/admin
             prohibited...) -> closed; timeout (either step) -> filtered.
        udp: connected socket, send one datagram, wait for the echo. echo -> open;
             ECONNREFUSED / ICMP error -> closed; silence -> filtered.

A listener spec: {"proto": "tcp"|"udp", "address": "0.0.0.0"|"::"|..., "port": N,
                  "v6only": true|false|null}
A probe request: {"proto", "address", "port", "timeout": seconds (default 1.0),
                  "source_port": N or null, "source_address": ADDR or null}
"""

from __future__ import annotations

import ctypes
import errno
import json
import selectors
import os
import signal
import socket
import struct
import sys
import threading
from typing import Any, Dict, List, Optional

PAYLOAD_PREFIX = b"twinwall-probe "
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # <linux/in.h>; Python names only the IPv6 one


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM us when the test process dies, so no listener is left behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError) as exc:  # not fatal: the harness also stops us by PID
        print(f"warning: prctl(PR_SET_PDEATHSIG) unavailable: {exc}", file=sys.stderr)


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _open_listener(spec: Dict[str, Any]) -> socket.socket:
    proto = spec["proto"]
    address = spec["address"]
    fam = _family(address)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(fam, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6 and spec.get("v6only") is not None:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if spec["v6only"] else 0)
    sock.bind((address, int(spec["port"])))
    if proto == "tcp":
        sock.listen(128)
    elif fam == socket.AF_INET6:
        # learn each datagram's destination, to answer from it (see _echo)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.setblocking(False)
    return sock


def serve(name: str) -> int:
    _die_with_parent()
    specs = json.loads(sys.stdin.read() or "[]")
    sockets: List[socket.socket] = []
    bound: List[Dict[str, Any]] = []
    try:
        for spec in specs:
            sock = _open_listener(spec)
            sockets.append(sock)
            info = dict(spec)
            info["port"] = sock.getsockname()[1]
            if sock.family == socket.AF_INET6:
                info["v6only"] = bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            else:
                info["v6only"] = None
            bound.append(info)
    except OSError as exc:
        print(f"ERROR {name}: cannot open {spec!r}: {exc}", flush=True)
        return 3

    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    sel = selectors.DefaultSelector()
    for sock in sockets:
        sel.register(sock, selectors.EVENT_READ)
    print("READY " + json.dumps({"name": name, "listeners": bound}), flush=True)

    while not stop.is_set():
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            try:
                if sock.type == socket.SOCK_STREAM:
                    conn, _peer = sock.accept()
                    conn.close()
                else:
                    _echo(sock)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:  # e.g. ECONNRESET on a udp socket after an ICMP error
                print(f"warning: {name}: {exc}", file=sys.stderr, flush=True)
    for sock in sockets:
        sock.close()
    return 0


def _echo(sock: socket.socket) -> None:
    """Send a datagram back from the address it was sent to. A wildcard socket's plain
    sendto() would pick the source by route (the address of the outgoing link), and the
    client's connected socket drops a reply from any other address: a probe to a secondary
    address, or to another link's address, would look filtered."""
    data, anc, _flags, peer = sock.recvmsg(65535, socket.CMSG_SPACE(20))
    reply = [(level, kind, value) for level, kind, value in anc
             if (level, kind) in ((socket.IPPROTO_IP, IP_PKTINFO),
                                  (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO))]
    if reply and reply[0][1] == IP_PKTINFO and reply[0][0] == socket.IPPROTO_IP:
        # struct in_pktinfo {ifindex; spec_dst; addr}: answer from addr, leave the interface free
        value = reply[0][2]
        reply = [(socket.IPPROTO_IP, IP_PKTINFO, b"\0" * 4 + value[8:12] + b"\0" * 4)]
    elif reply:
        # struct in6_pktinfo {addr; ifindex}: the address, any interface
        reply = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, reply[0][2][:16] + b"\0" * 4)]
    sock.sendmsg([data], reply, 0, peer)


def _errno_result(err: Optional[int], what: str) -> Dict[str, str]:
    if err == errno.ECONNREFUSED:
        return {"result": "closed", "detail": f"{what}: connection refused"}
    if err in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM,
               errno.EPROTO, errno.ECONNRESET, errno.EADDRNOTAVAIL):
        return {"result": "closed", "detail": f"{what}: {errno.errorcode.get(err, err)} {_strerror(err)}"}
    if err in (errno.ETIMEDOUT, errno.EAGAIN, errno.EINPROGRESS):
        return {"result": "filtered", "detail": f"{what}: timed out"}
    return {"result": "closed", "detail": f"{what}: unexpected errno {err} {_strerror(err)}"}


def _strerror(err: Optional[int]) -> str:
    return os.strerror(err) if err is not None else ""


def _probe_one(req: Dict[str, Any], index: int) -> Dict[str, str]:
    proto = req["proto"]
    address = req["address"]
    port = int(req["port"])
    timeout = float(req.get("timeout") or 1.0)
    fam = _family(address)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(fam, kind)
    try:
        if req.get("source_port") or req.get("source_address"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            src = req.get("source_address") or ("::" if fam == socket.AF_INET6 else "0.0.0.0")
            sock.bind((src, int(req.get("source_port") or 0)))
        sock.settimeout(timeout)
        if proto == "tcp":
            # RST on close: no TIME_WAIT, so a fixed source port can be reused right away.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            try:
                sock.connect((address, port))
            except socket.timeout:
                return {"result": "filtered", "detail": f"tcp connect: no answer in {timeout}s"}
            except OSError as exc:
                return _errno_result(exc.errno, "tcp connect")
            # connect() returns on the SYN-ACK; the server has the connection only once the
            # handshake's ACK reached it: the listener accepts and closes, so wait for its FIN
            try:
                sock.recv(1)
            except socket.timeout:
                return {"result": "filtered",
                        "detail": f"tcp: connected, but the server never accepted in {timeout}s (its ACK dropped?)"}
            except OSError:
                pass  # reset after the accept: the server had it
            return {"result": "open", "detail": "tcp connect: established, accepted by the server"}
        payload = PAYLOAD_PREFIX + str(index).encode()
        try:
            sock.connect((address, port))
            sock.send(payload)
            data = sock.recv(65535)
        except socket.timeout:
            return {"result": "filtered", "detail": f"udp: no echo and no ICMP error in {timeout}s"}
        except OSError as exc:
            return _errno_result(exc.errno, "udp")
        if data == payload:
            return {"result": "open", "detail": "udp: echo received"}
        return {"result": "open", "detail": f"udp: unexpected reply {data[:40]!r}"}
    finally:
        sock.close()


def probe() -> int:
    requests = json.loads(sys.stdin.read() or "[]")
    results: List[Optional[Dict[str, str]]] = [None] * len(requests)

    def worker(i: int, req: Dict[str, Any]) -> None:
        try:
            results[i] = _probe_one(req, i)
        except OSError as exc:  # socket()/bind() failed: report it, do not guess
            results[i] = {"result": "error", "detail": f"probe setup failed: {exc}"}

    threads = [threading.Thread(target=worker, args=(i, r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


def main(argv: List[str]) -> int:
    if len(argv) >= 1 and argv[0] == "serve":
        name = "tw-listener"
        if len(argv) >= 3 and argv[1] == "--name":
            name = argv[2]
        return serve(name)
    if len(argv) >= 1 and argv[0] == "probe":
        return probe()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
