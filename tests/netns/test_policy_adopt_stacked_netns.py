"""`twinwall policy adopt` of a host whose hooks carry several nftables base chains (in different
tables and priorities; a packet passes only if every one of them accepts it), loaded with
nft -f in a namespace and read live: the adopted policy is proved equivalent per family with
the diff, and `policy check` of it finds no wrong verdict. A chain that drops before conntrack
(priority raw) is refused, and said so."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from harness import load_nft, netns_exec, run_twinwall

STACKED = """
table inet first {
    chain input {
        type filter hook input priority -10; policy accept;
        ip saddr 192.0.2.66 drop
        tcp dport 23 drop
    }
}
table inet second {
    chain input {
        type filter hook input priority 0; policy drop;
        ct state established,related accept
        iifname "lo" accept
        tcp dport { 22, 80 } accept
        meta l4proto udp drop
    }
    chain forward {
        type filter hook forward priority 0; policy drop;
    }
}
table ip6 third {
    chain input {
        type filter hook input priority 10; policy accept;
        tcp dport 80 drop
    }
}
"""

BEFORE_CONNTRACK = """
table inet early {
    chain out {
        type filter hook output priority -300; policy accept;
        tcp dport 25 drop
    }
}
"""


@pytest.fixture
def ns():
    name = f"tw-adopt-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        netns_exec(name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def test_adopt_reads_every_base_chain_on_a_hook(ns, tmp_path):
    load_nft(ns, STACKED)
    out = tmp_path / "adopted.toml"
    rc, _, err = run_twinwall(ns, "policy", "adopt", "-o", str(out))
    text = out.read_text()
    assert rc == 0, err + text
    assert "only the first is adopted" not in text and "proof: every new connection" in text, text
    # the third table's IPv6-only drop of tcp/80 comes before the second's accept of it
    assert 'family = "ipv6"' in text, text
    rc, stdout, _ = run_twinwall(ns, "policy", "check", "--no-scratch", str(out))
    assert rc in (0, 1) and "WRONG" not in stdout, stdout


def test_adopt_refuses_a_chain_before_conntrack(ns, tmp_path):
    load_nft(ns, STACKED + BEFORE_CONNTRACK)
    out = tmp_path / "adopted.toml"
    rc, _, err = run_twinwall(ns, "policy", "adopt", "-o", str(out))
    text = out.read_text()
    assert "cannot be written in a policy" in err, err
    assert "early out (hook output, priority -300) may drop packets" in text and "before conntrack" in text, text
