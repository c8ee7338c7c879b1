"""`twinwall scan` option checking: float options refuse nan, inf and absurd values, and the two
timeouts are reconciled the way nmap's --min/--max-rtt-timeout are (or refused when both are
given and contradict each other). Nothing here sends a packet."""

from __future__ import annotations

import pytest

from twinwall import cli
from twinwall.errors import InputError
from twinwall.scan import cli as scan_cli


def parse(*argv: str):
    return cli.build_parser("scan").parse_args(["scan", *argv, "192.0.2.1"])


@pytest.mark.parametrize("option, value, words", [
    ("--timeout", "nan", "not a finite number"),
    ("--timeout", "inf", "not a finite number"),
    ("--timeout", "-inf", "not a finite number"),
    ("--timeout", "1e308", "at most 3600"),
    ("--timeout", "3600.5", "at most 3600"),
    ("--timeout", "0", "greater than 0"),
    ("--min-timeout", "nan", "not a finite number"),
    ("--min-timeout", "1e999", "not a finite number"),
    ("--min-timeout", "7200", "at most 3600"),
    ("--rate", "nan", "not a finite number"),
    ("--rate", "inf", "not a finite number"),
    ("--rate", "1e308", "between 0.001 and 1000000"),
    ("--rate", "1e-300", "between 0.001 and 1000000"),
    ("--rate", "-1", "0 (no limit)"),
])
def test_float_options_refuse_nan_inf_and_absurd_values(option, value, words, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        parse(f"{option}={value}")  # "=": argparse would take "-inf" for an option
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"twinwall scan: error: argument {option}: ") and words in err


@pytest.mark.parametrize("argv", [
    ("--timeout", "3600", "--min-timeout", "0.001"),
    ("--rate", "0"), ("--rate", "0.001"), ("--rate", "1000000"), ("--rate", "500"),
])
def test_sane_values_still_parse(argv) -> None:
    parse(*argv)


def test_defaults_and_one_timeout_given_alone() -> None:
    assert scan_cli.resolve_timeouts(None, None) == (1.0, 0.1)
    # only --timeout: the default minimum comes down to it
    assert scan_cli.resolve_timeouts(0.05, None) == (0.05, 0.05)
    # only --min-timeout: the default maximum goes up to it (nmap raises --max-rtt-timeout too)
    assert scan_cli.resolve_timeouts(None, 2.0) == (2.0, 2.0)
    assert scan_cli.resolve_timeouts(3.0, 0.5) == (3.0, 0.5)
    assert scan_cli.resolve_timeouts(0.5, 0.5) == (0.5, 0.5)


def test_min_timeout_above_timeout_is_an_error() -> None:
    with pytest.raises(InputError, match=r"^--min-timeout 2 is greater than --timeout 1$"):
        scan_cli.resolve_timeouts(1.0, 2.0)


def test_min_timeout_above_timeout_exits_2_before_probing(monkeypatch, capsys) -> None:
    from twinwall.scan import targets

    def no_probing(*_a, **_k):
        raise AssertionError("must fail before building targets")

    monkeypatch.setattr(targets, "build_targets", no_probing)
    code = cli.main(["scan", "--timeout", "1", "--min-timeout", "2", "192.0.2.1"])
    assert code == 2
    assert capsys.readouterr().err == "twinwall: --min-timeout 2 is greater than --timeout 1\n"
