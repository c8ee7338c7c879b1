"""Saved dumps as command input: what is refused, in one line, with exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "twinwall", *args], capture_output=True, text=True, input=stdin)


@pytest.mark.parametrize("option", ["--iptables", "--ip6tables", "--iptables-legacy", "--ip6tables-legacy"])
@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_dump_is_not_a_ruleset(tmp_path, option, content):
    """A failed 'iptables-save > f' leaves an empty file: audited as "no tables" it said every
    port was reachable, without a word."""
    dump = tmp_path / "v4.rules"
    dump.write_text(content)
    for command in (["audit"], ["explain", "tcp/22"]):
        proc = run_cli(*command, option, str(dump))
        assert proc.returncode == 2, proc.stdout
        assert proc.stderr.startswith(f"twinwall: {dump} is empty: not ") and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stdout == ""


def test_empty_dump_on_stdin(tmp_path):
    proc = run_cli("audit", "--iptables", "-", stdin="")
    assert proc.returncode == 2 and "standard input is empty" in proc.stderr


def test_a_dump_with_no_tables_is_still_accepted(tmp_path):
    dump = tmp_path / "v4.rules"
    dump.write_text("# no tables\n")
    proc = run_cli("audit", "--iptables", str(dump))
    assert proc.returncode in (0, 1) and "no tables loaded" in proc.stdout, proc.stderr
