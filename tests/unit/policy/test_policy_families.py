"""A policy that governs one family (``[defaults] families = ["ipv4"]``): the other family is
neither compiled, proved nor applied, and adopt writes such a file when it read one family only
(it never invents the rules of a family it did not read)."""

from __future__ import annotations

import os

import pytest

from twinwall.cli import main
from twinwall.errors import InputError
from twinwall.policy.check import CheckResult, check_policy, compiled_texts, loaded_rulesets
from twinwall.policy.lower import lower
from twinwall.policy.model import parse_policy

V4_ONLY = """[defaults]
families = ["ipv4"]
input = "drop"
log_dropped = true

[[rule]]
direction = "in"
proto = "tcp"
ports = [22]
from = ["192.0.2.0/24", "2001:db8:1::/64"]
action = "accept"

[[rule]]
direction = "in"
proto = "icmp"
icmp_types = ["echo-request"]
action = "accept"
"""

DUMP_V4 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT
-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT
COMMIT
"""


def test_families_read_and_rules_take_the_files_families():
    p = parse_policy(V4_ONLY, "host.toml")
    assert p.families == ("ipv4",) and p.outside() == ("ipv6",)
    low = lower(p)
    assert set(low.rules) == {"ipv4"} and not low.family_only  # no "IPv4 only" for every rule
    assert parse_policy('[defaults]\ninput = "drop"\n').families == ("ipv4", "ipv6")


@pytest.mark.parametrize("change, line, key, says", [
    (('families = ["ipv4"]', 'families = ["ipv5"]'), 2, "defaults.families", "not 'ipv5'"),
    (('families = ["ipv4"]', 'families = []'), 2, "defaults.families", "non-empty list"),
    (('families = ["ipv4"]', 'families = ["ipv4", "ipv4"]'), 2, "defaults.families", "named twice"),
    (('families = ["ipv4"]', 'families = "ipv4"'), 2, "defaults.families", "non-empty list"),
    (('input = "drop"', 'input = { ipv4 = "drop", ipv6 = "accept" }'), 3, "defaults.input", "ipv6 is outside"),
    (('ports = [22]', 'ports = [22]\nfamily = "ipv6"'), 10, "[[rule]] #1 family", "ipv6 is outside"),
])
def test_bad_families_name_file_line_and_key(change, line, key, says):
    with pytest.raises(InputError) as exc:
        parse_policy(V4_ONLY.replace(*change), "host.toml")
    msg = str(exc.value)
    assert msg.startswith(f"host.toml:{line}: {key}: ") and says in msg, msg


def test_ipv6_rule_in_an_ipv4_file_says_it_is_outside():
    with pytest.raises(InputError, match="ipv6 is outside this file"):
        parse_policy(V4_ONLY.replace('ports = [22]', 'ports = [22]\nfamily = "ipv6"'), "host.toml")


def test_compile_iptables_writes_only_the_governed_family(tmp_path, capsys):
    path = tmp_path / "host.toml"
    path.write_text(V4_ONLY)
    assert main(["policy", "compile", str(path), "-o", str(tmp_path / "out")]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["rules.v4"]
    err = capsys.readouterr().err
    assert "rules.v6 is not written" in err and "IPv6 is left as the host has it" in err
    v4 = (tmp_path / "out" / "rules.v4").read_text()
    assert "-s 192.0.2.0/24 -p tcp -m tcp --dport 22" in v4 and "2001:db8" not in v4


def test_compile_nft_gates_every_rule_and_keeps_policy_accept():
    text = compiled_texts(lower(parse_policy(V4_ONLY, "host.toml")), "nft")
    assert "IPv6 packets pass this table untouched" in text
    body = [line.strip() for line in text.splitlines() if line.startswith("\t\t")]
    policies = [line for line in body if line.startswith("type filter")]
    assert len(policies) == 3 and all(line.endswith("policy accept;") for line in policies)
    rules = [line for line in body if not line.startswith("type filter")]
    assert rules and all(line.startswith("meta nfproto ipv4 ") for line in rules), rules
    assert 'meta nfproto ipv4 drop comment "default drop of input (ipv4)"' in rules
    assert "2001:db8" not in text


def test_check_is_clean_and_says_the_other_family_is_outside(tmp_path, capsys):
    path = tmp_path / "host.toml"
    path.write_text(V4_ONLY)
    assert main(["policy", "check", str(path), "--no-scratch"]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out
    assert sum("IPv6 is outside this file" in line for line in out.splitlines()) == 1
    assert "IPv4 (the file's only family)" in out and "IPv6 input" not in out


@pytest.mark.skipif(os.geteuid() != 0, reason="loading into a scratch namespace needs root")
def test_nft_proof_that_the_other_family_passes_untouched_can_fail():
    from twinwall.policy.check import prove_untouched

    lowered = lower(parse_policy(V4_ONLY, "host.toml"))
    text = compiled_texts(lowered, "nft")
    good = CheckResult(lowered)
    prove_untouched(lowered, "nft", loaded_rulesets("nft", text), good, "loaded")
    assert not good.mismatches and any("IPv6 input: outside the file" in p for p in good.proved)
    # the same table with a policy drop on input: IPv6 packets would be dropped by it
    bad = CheckResult(lowered)
    broken = text.replace("type filter hook input priority filter; policy accept;",
                          "type filter hook input priority filter; policy drop;")
    prove_untouched(lowered, "nft", loaded_rulesets("nft", broken), bad, "loaded")
    assert bad.mismatches and bad.mismatches[0].family == "ipv6" and bad.mismatches[0].hook == "input"


def adopt(tmp_path, capsys, *extra):
    (tmp_path / "v4").write_text(DUMP_V4)
    out = tmp_path / "adopted.toml"
    rc = main(["policy", "adopt", "--iptables", str(tmp_path / "v4"), "-o", str(out), *extra])
    return rc, out.read_text(), capsys.readouterr().err


def test_adopt_of_one_family_governs_that_family_only(tmp_path, capsys):
    rc, text, err = adopt(tmp_path, capsys)
    assert rc == 0, text
    assert 'families = ["ipv4"]' in text and "family =" not in text
    assert "ipv6" not in text.split("[defaults]")[1]  # no invented IPv6 defaults
    assert "IPv6 was not read" in text and "IPv6 is left as the host has it" in text
    policy = parse_policy(text, "adopted.toml")
    assert policy.families == ("ipv4",) and all(r.family == "both" for r in policy.rules)
    result = check_policy(policy, ("iptables",), scratch=False)
    assert result.exit_code() == 0 and not result.warnings and result.outside
    assert main(["policy", "check", str(tmp_path / "adopted.toml"), "--no-scratch"]) == 0


def test_adopt_twin_of_one_family_proposes_commented_twins(tmp_path, capsys):
    rc, text, _ = adopt(tmp_path, capsys, "--twin")
    assert rc == 0, text
    assert "# proposed twin for IPv6" in text and '# family = "ipv6"' in text
    assert 'add "ipv6"\n# to [defaults] families' in text and "those without addresses are their own twins" in text
    parse_policy(text)  # the proposals are comments: the file still reads


def test_adopt_of_both_families_names_no_families():
    from twinwall.parsers.iptables_save import parse_iptables_save
    from twinwall.policy.adopt import adopt_rulesets

    v6 = DUMP_V4.replace("192.0.2.0/24", "2001:db8:1::/64").replace("-p icmp -m icmp --icmp-type 8",
                                                                     "-p ipv6-icmp -m icmp6 --icmpv6-type 128")
    res = adopt_rulesets({"ipv4": [parse_iptables_save(DUMP_V4, "ipv4", "v4")],
                          "ipv6": [parse_iptables_save(v6, "ipv6", "v6")]})
    assert res.equivalent and "families" not in res.text.split("[[rule]]")[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="loading into a scratch namespace needs root")
def test_adopt_of_an_nft_ruleset_without_ip6_tables_governs_both():
    # an nft ruleset holds every family the kernel has: no ip6 table means IPv6 has no rules
    # (known), not that IPv6 was not read
    from twinwall.model import HostSnapshot, RulesetText
    from twinwall.policy.adopt import adopt_snapshot
    from twinwall.policy.check import ScratchNamespace

    with ScratchNamespace() as ns:
        loaded = ns.run(["nft", "-f", "-"], input="table ip t {\n chain input {\n  type filter hook input priority 0; "
                        "policy drop;\n  tcp dport 22 accept\n }\n}\n")
        assert loaded.returncode == 0, loaded.stderr
        listed = ns.run(["nft", "-j", "list", "ruleset"]).stdout
    snap = HostSnapshot(hostname="t")
    snap.rulesets.append(RulesetText("inet", "nft-json", "nft", "nft -j list ruleset", listed))
    res = adopt_snapshot(snap)
    assert res.equivalent and "families" not in res.text.split("[[rule]]")[0]
    assert 'input = { ipv4 = "drop", ipv6 = "accept" }' in res.text
