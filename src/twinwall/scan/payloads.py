"""UDP probe payloads: a request a real service answers, so that silence means less.

An empty datagram draws no reply from DNS, NTP or SNMP servers, which would leave an open service
looking exactly like a dropped port ("open|filtered"). Ports without a known protocol get an
empty datagram, as nmap sends.
"""

from __future__ import annotations

import struct
from typing import Callable, Dict

_TXID = 0x7477  # "tw"


def dns_query(txid: int = _TXID) -> bytes:
    """A standard recursive query for the root's NS records (any DNS server answers it, if
    only with REFUSED)."""
    header = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    question = b"\x00" + struct.pack("!HH", 2, 1)  # root name, type NS, class IN
    return header + question


def mdns_query() -> bytes:
    """A unicast-response mDNS query for _services._dns-sd._udp.local PTR."""
    header = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(p)]) + p for p in (b"_services", b"_dns-sd", b"_udp", b"local")
    )
    return header + labels + b"\x00" + struct.pack("!HH", 12, 0x8001)


def ntp_request() -> bytes:
    """An NTPv3 client-mode packet (LI 0, VN 3, mode 3); servers answer with mode 4."""
    return bytes([0x1B]) + bytes(47)


def _ber(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82]) + struct.pack("!H", n)
    return bytes([tag]) + length + body


def _ber_int(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return _ber(0x02, raw)


def _ber_oid(oid: str) -> bytes:
    parts = [int(p) for p in oid.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out.extend(reversed(chunk))
    return _ber(0x06, bytes(out))


def snmp_get(community: str = "public", request_id: int = _TXID) -> bytes:
    """SNMPv1 GetRequest for sysDescr.0 (1.3.6.1.2.1.1.1.0)."""
    varbind = _ber(0x30, _ber_oid("1.3.6.1.2.1.1.1.0") + _ber(0x05, b""))
    pdu = _ber(0xA0, _ber_int(request_id) + _ber_int(0) + _ber_int(0) + _ber(0x30, varbind))
    return _ber(0x30, _ber_int(0) + _ber(0x04, community.encode()) + pdu)


def netbios_nbstat() -> bytes:
    """NetBIOS node status request for the wildcard name '*'."""
    header = struct.pack("!HHHHHH", _TXID, 0x0000, 1, 0, 0, 0)
    name = b"*" + b"\x00" * 15
    encoded = bytes(
        c for b in name for c in (0x41 + (b >> 4), 0x41 + (b & 0x0F))
    )
    return header + b"\x20" + encoded + b"\x00" + struct.pack("!HH", 0x21, 1)


def ssdp_msearch() -> bytes:
    return (
        b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
        b'MAN: "ssdp:discover"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n'
    )


_BUILDERS: Dict[int, Callable[[], bytes]] = {
    53: dns_query,
    123: ntp_request,
    137: netbios_nbstat,
    161: snmp_get,
    1900: ssdp_msearch,
    5353: mdns_query,
}



def udp_payload(port: int) -> bytes:
    """The datagram to send to a UDP port (empty when no protocol is known for it)."""
    builder = _BUILDERS.get(port)
    return builder() if builder else b""
