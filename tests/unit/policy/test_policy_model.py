"""The policy file: a bad entry names the file, the line and the key; never a traceback."""

from __future__ import annotations

import pytest

from twinwall.cli import main
from twinwall.errors import InputError
from twinwall.policy.model import parse_policy

GOOD = """[defaults]
input = "drop"

[groups]
office = ["192.0.2.0/24", "2001:db8:1::/64"]

[[rule]]
direction = "in"
proto = "tcp"
ports = [22, "8000-8100"]
from = "office"
action = "accept"
"""


def test_good_file_reads():
    p = parse_policy(GOOD, "host.toml")
    (r,) = p.rules
    assert r.line == 7 and r.ports == ((22, 22), (8000, 8100))
    assert r.sources.ipv4 == ("192.0.2.0/24",) and r.sources.ipv6 == ("2001:db8:1::/64",)


@pytest.mark.parametrize("change, line, key", [
    (('proto = "tcp"', 'proto = "tpc"'), 9, "proto"),
    (('ports = [22, "8000-8100"]', 'ports = [22, "8100-8000"]'), 10, "ports"),
    (('from = "office"', 'from = "ofice"'), 11, "from"),
    (('action = "accept"', 'action = "allow"'), 12, "action"),
    (('direction = "in"', 'direction = "in"\nuid = "postfix"'), 9, "uid"),
    (('input = "drop"', 'input = "block"'), 2, "defaults.input"),
    (('office = [', 'office = ["192.0.2.300", '), 5, "groups.office"),
    (('action = "accept"', 'action = "accept"\nport = 22'), 13, "port"),
    # values of the wrong type, not strings (were: unhashable type)
    (('direction = "in"', 'direction = ["in"]'), 8, "direction"),
    (('proto = "tcp"\nports = [22, "8000-8100"]', 'proto = "icmp"\nicmp_types = [{ a = 1 }]'), 10, "icmp_types"),
])
def test_bad_entry_names_file_line_and_key(change, line, key):
    text = GOOD.replace(*change)
    with pytest.raises(InputError) as exc:
        parse_policy(text, "host.toml")
    msg = str(exc.value)
    assert msg.startswith(f"host.toml:{line}:"), msg
    assert key in msg


def test_second_rule_line_is_its_own():
    text = GOOD + '\n[[rule]]\ndirection = "out"\nproto = "udp"\nports = [53]\naction = "maybe"\n'
    with pytest.raises(InputError) as exc:
        parse_policy(text, "host.toml")
    assert str(exc.value).startswith("host.toml:18:") and "#2 action" in str(exc.value)


def test_cli_bad_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "p.toml"
    bad.write_text("[[rule]]\ndirection = 'in'\naction = 'accept'\nproto = 'tcp'\nports = ['x']\n")
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"twinwall: {bad}:5:")
    bad.write_text("[[rule]\n")
    assert main(["policy", "compile", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["policy", "compile", str(tmp_path / "missing.toml")]) == 2


def test_input_rule_with_uid_is_an_error():
    with pytest.raises(InputError, match="uid needs direction"):
        parse_policy('[[rule]]\ndirection = "in"\nuid = 0\naction = "drop"\n')
