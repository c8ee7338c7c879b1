from __future__ import annotations

import asyncio
import errno
import struct
import time

import pytest

from twinwall.scan import payloads
from twinwall.scan.engine import (
    SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, RttEstimator, TokenBucket, classify_error,
    icmp_reason, make_jobs, unreachable_results,
)
from twinwall.scan.targets import TargetAddress

ICMP4, ICMP6 = SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6


@pytest.mark.parametrize(
    "proto, err, icmp, expected",
    [
        ("tcp", errno.ECONNREFUSED, None, ("closed", "conn-refused")),  # RST
        ("tcp", errno.ECONNREFUSED, (ICMP4, 3, 3), ("closed", "port-unreach")),  # REJECT
        ("tcp", errno.ECONNREFUSED, (ICMP6, 1, 4), ("closed", "port-unreach")),
        ("tcp", errno.EHOSTUNREACH, (ICMP4, 3, 13), ("filtered", "admin-prohibited")),
        ("tcp", errno.EHOSTUNREACH, (ICMP4, 3, 10), ("filtered", "host-prohibited")),
        ("tcp", errno.ENETUNREACH, (ICMP4, 3, 9), ("filtered", "net-prohibited")),
        ("tcp", errno.EHOSTUNREACH, (ICMP4, 3, 1), ("filtered", "host-unreach")),
        ("tcp", errno.EACCES, (ICMP6, 1, 1), ("filtered", "admin-prohibited")),
        ("tcp", errno.EHOSTUNREACH, (ICMP6, 1, 3), ("filtered", "addr-unreach")),
        ("tcp", errno.EHOSTUNREACH, None, ("filtered", "host-unreach")),
        ("tcp", errno.EPERM, None, ("filtered", "local-policy")),
        ("udp", errno.ECONNREFUSED, None, ("closed", "port-unreach")),
        ("udp", errno.EHOSTUNREACH, (ICMP4, 3, 13), ("filtered", "admin-prohibited")),
        ("tcp", errno.EIO, None, ("filtered", "error-eio")),
    ],
)
def test_classification_mirrors_nmap(proto, err, icmp, expected):
    assert classify_error(proto, err, icmp) == expected


def test_icmp_reasons_for_other_types():
    assert icmp_reason((ICMP4, 11, 0)) == "time-exceeded"
    assert icmp_reason((ICMP6, 3, 0)) == "time-exceeded"
    assert icmp_reason((ICMP4, 3, 99)) == "icmp-unreach-99"


def test_rtt_estimator_adapts_between_bounds():
    est = RttEstimator(max_timeout=1.0, min_timeout=0.1)
    assert est.timeout() == 1.0
    est.update(0.001)
    assert est.timeout() == 1.0  # one sample is not enough
    for _ in range(20):
        est.update(0.001)
    assert est.timeout() == pytest.approx(0.1)
    for _ in range(50):
        est.update(0.4)
    assert 0.4 < est.timeout() <= 1.0
    fixed = RttEstimator(1.0, 0.1, adaptive=False)
    for _ in range(5):
        fixed.update(0.001)
    assert fixed.timeout() == 1.0


def test_token_bucket_limits_the_rate():
    async def take(bucket, n):
        start = time.monotonic()
        await asyncio.gather(*(bucket.acquire() for _ in range(n)))
        return time.monotonic() - start

    # burst of 5, then 100/s: 30 acquisitions need at least 0.25 s
    assert asyncio.run(take(TokenBucket(100.0), 30)) >= 0.24
    assert asyncio.run(take(TokenBucket(0), 1000)) < 0.5  # 0 = unlimited


def test_jobs_are_port_major_and_skip_unroutable_addresses():
    a = TargetAddress("ipv4", "192.0.2.1", "literal")
    b = TargetAddress("ipv6", "2001:db8::1", "literal")
    c = TargetAddress("ipv6", "2001:db8::2", "literal", reachable=False, error="no route")
    jobs = make_jobs([("tcp", 22), ("tcp", 80)], [a, b, c])
    assert [(p, x.address) for _, p, x in jobs] == [
        (22, "192.0.2.1"), (22, "2001:db8::1"), (80, "192.0.2.1"), (80, "2001:db8::1")
    ]
    (u22, u80) = unreachable_results([("tcp", 22), ("tcp", 80)], [a, b, c])
    assert (u22.address, u22.state, u22.reason) == ("2001:db8::2", "unreachable", "no-route")


def test_dns_payload_is_a_query():
    q = payloads.udp_payload(53)
    txid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", q[:12])
    assert flags & 0x8000 == 0 and qd == 1 and an == ns == ar == 0
    assert q[12:] == b"\x00\x00\x02\x00\x01"


def test_ntp_payload_is_a_client_packet():
    p = payloads.udp_payload(123)
    assert len(p) == 48 and p[0] & 0x07 == 3 and (p[0] >> 3) & 0x07 == 3


def _ber_read(data, pos=0):
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, data[pos:pos + length], pos + length


def test_snmp_payload_is_a_v1_get_of_sysdescr():
    msg = payloads.udp_payload(161)
    tag, body, end = _ber_read(msg)
    assert tag == 0x30 and end == len(msg)
    tag, version, pos = _ber_read(body)
    assert (tag, version) == (0x02, b"\x00")
    tag, community, pos = _ber_read(body, pos)
    assert (tag, community) == (0x04, b"public")
    tag, pdu, pos = _ber_read(body, pos)
    assert tag == 0xA0 and pos == len(body)
    assert bytes.fromhex("06082b06010201010100") in pdu  # OID 1.3.6.1.2.1.1.1.0


def test_other_ports_get_an_empty_datagram():
    assert payloads.udp_payload(7) == b""
    assert payloads.udp_payload(1900).startswith(b"M-SEARCH")
    nb = payloads.udp_payload(137)
    assert len(nb) == 50 and nb[12] == 0x20


# ---------------------------------------------------------------- congestion window


def test_window_grows_while_answers_come_back_and_stops_at_the_ceiling():
    from twinwall.scan.engine import Congestion

    w = Congestion(initial=10, ceiling=40)
    assert w.window == 10
    for _ in range(5):
        w.in_flight += 1
        w.release(True, 0.0)
    assert w.window == 15  # slow start: one more per answer
    for _ in range(100):
        w.in_flight += 1
        w.release(True, 0.0)
    assert w.window == 40 and w.peak == 40


def test_unanswered_tries_halve_the_window_once_per_burst():
    from twinwall.scan.engine import Congestion

    w = Congestion(initial=32, ceiling=100)
    w.in_flight = 6
    w.release(False, sent=10.0)
    assert w.window == 16 and w.threshold == 16 and w.backoffs == 1
    w.release(False, sent=9.0)  # sent before that halving: the same burst of losses
    assert w.window == 16 and w.backoffs == 1
    w.release(True, sent=1e12)  # above the threshold: a window's worth of answers adds one
    assert 16 < w.window < 16.1
    w.release(None, sent=1e12)  # UDP silence says nothing of the network
    assert 16 < w.window < 16.1 and w.backoffs == 1


def test_a_drop_while_later_tries_are_answered_is_a_firewall_not_congestion():
    """A DROP rule on some ports: the tries sent after the dropped one came back, so the path
    delivers and the window stays (a halving per dropped port made the scan 3x slower)."""
    from twinwall.scan.engine import Congestion

    w = Congestion(initial=50, ceiling=100)
    w.in_flight = 3
    w.release(True, sent=2.0)
    w.release(False, sent=1.0)
    assert w.window == 51 and w.backoffs == 0
    w.release(False, sent=3.0)  # nothing sent after it answered: maybe congestion
    assert w.backoffs == 1 and w.window == 25.5


def test_fixed_timing_keeps_the_whole_window():
    from twinwall.scan.engine import Congestion

    w = Congestion(initial=10, ceiling=300, adaptive=False)
    assert w.window == 300
    w.in_flight = 1
    w.release(False, 1e12)
    assert w.window == 300


def test_acquire_waits_for_room_in_the_window():
    import asyncio

    from twinwall.scan.engine import Congestion

    async def scenario():
        w = Congestion(initial=2, ceiling=2)
        await w.acquire()
        await w.acquire()
        third = asyncio.ensure_future(w.acquire())
        await asyncio.sleep(0)
        assert not third.done() and w.in_flight == 2
        w.release(True, 0.0)
        await asyncio.wait_for(third, 5)
        assert w.in_flight == 2

    asyncio.run(scenario())
