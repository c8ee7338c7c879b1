"""`-m set --match-set` decided from the snapshot's `ipset save` (parsers/ipset_save.py), instead
of an undecidable match; undecidable still where the contents are not known or not addresses."""

from __future__ import annotations

from _snapshots import dump_snapshot
from twinwall.analysis.audit import audit_snapshot
from twinwall.netfilter.packetset import prefix_interval
from twinwall.parsers.ipset_save import parse_ipset_save
from twinwall.sources.snapshot import snapshot_from_json, snapshot_to_json

SAVE = """\
create allow hash:net family inet hashsize 1024 maxelem 65536
add allow 192.0.2.0/24
add allow 192.0.2.128/25 nomatch
add allow 203.0.113.7
create allow6 hash:ip family inet6 hashsize 1024 maxelem 65536 timeout 300
add allow6 2001:db8::1 timeout 250
create pairs hash:ip,port family inet hashsize 1024 maxelem 65536
add pairs 192.0.2.1,tcp:22
create empty hash:ip family inet hashsize 1024 maxelem 65536
"""
SS = """\
Netid State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process
tcp   LISTEN 0      128          0.0.0.0:22         0.0.0.0:*     users:(("sshd",pid=812,fd=3))
tcp   LISTEN 0      128          0.0.0.0:80         0.0.0.0:*     users:(("web",pid=813,fd=3))
tcp   LISTEN 0      128          0.0.0.0:25         0.0.0.0:*     users:(("mta",pid=814,fd=3))
"""
V4 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m set --match-set allow src -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -m set ! --match-set empty src -j ACCEPT
-A INPUT -p tcp -m tcp --dport 25 -m set --match-set pairs src,dst -j ACCEPT
COMMIT
"""


def test_ipset_save_members():
    sets = parse_ipset_save(SAVE)
    allow = sets["allow"]
    assert allow.family == "ipv4" and allow.type == "hash:net"
    lo, hi = prefix_interval("192.0.2.0/25", "ipv4")
    one = prefix_interval("203.0.113.7", "ipv4")
    assert allow.members == ((lo, hi), one)  # the nomatch half taken out again
    assert sets["allow6"].family == "ipv6" and sets["allow6"].members == (prefix_interval("2001:db8::1", "ipv6"),)
    assert sets["pairs"].members is None and sets["empty"].members == ()


def statuses(snap):
    return {s.socket.port: s.verdicts["ipv4"] for s in audit_snapshot(snap).services}


def test_set_matches_are_decided_from_the_saved_sets():
    snap = dump_snapshot(V4, None, SS, ipv6=False)
    snap.ipsets = SAVE
    got = statuses(snap)
    assert got[22].status == "restricted" and not got[22].uncertain, got[22]
    assert got[22].allowed_sources == ["192.0.2.0/25", "203.0.113.7/32"], got[22]
    assert got[80].status == "open" and not got[80].uncertain  # not in an empty set: everyone
    assert got[25].uncertain and any("pairs" in u for u in got[25].uncertain)  # a set of pairs
    # the same round trip through a snapshot document
    again = snapshot_from_json(snapshot_to_json(snap), "t")
    assert again.ipsets == SAVE and statuses(again)[22].allowed_sources == got[22].allowed_sources


def test_without_the_sets_the_match_stays_undecidable():
    got = statuses(dump_snapshot(V4, None, SS, ipv6=False))
    assert got[22].uncertain and any("set allow" in u for u in got[22].uncertain), got[22]
