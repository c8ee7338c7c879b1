"""Golden files: the table and the JSON that ``twinwall audit`` and ``twinwall diff`` print for a
few offline hosts (tests/fixtures/golden/). A change of any rendered byte fails here and shows
as a diff of the golden file; when the change is meant, regenerate and review the diff:

    TWINWALL_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/unit/commands/test_golden.py

JSON goldens are stored indented (one value a line, for readable diffs) and compared as the
indented form of what twinwall printed, so the values and their order are exact.
"""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout

import pytest

from twinwall import cli
from twinwall.analysis.address_sets import inline_address_sets

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures")
GOLDEN = os.path.join(FIXTURES, "golden")
REGENERATE = os.environ.get("TWINWALL_REGENERATE_GOLDEN") == "1"
SOCKETS = ["--sockets", "golden/sockets.txt"]

# host -> the input options (paths relative to tests/fixtures, as the outputs name them)
HOSTS = {
    "ufw": ["--iptables", "frontends/ufw-ipv6-yes.v4.rules", "--ip6tables", "frontends/ufw-ipv6-yes.v6.rules"],
    "docker": ["--iptables", "frontends/docker28-portmap.v4.rules", "--ip6tables",
               "frontends/docker28-portmap.v6.rules"],
    "iptables-nft": ["--iptables", "nft/iptables_nft.v4.save", "--ip6tables", "nft/iptables_nft.v6.save"],
    "nft-inet": ["--nft", "nft/inet_filter.json"],
}
CASES = [
    (host, command, fmt)
    for host in HOSTS
    for command in ("audit", "diff")
    for fmt in ("table", "json")
]


def run(argv) -> tuple:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli.main(argv)
    return rc, out.getvalue()


def rendered(command: str, fmt: str, text: str) -> str:
    if fmt == "json":
        return json.dumps(json.loads(text), indent=1, ensure_ascii=False) + "\n"
    return text


@pytest.mark.parametrize("host, command, fmt", CASES, ids=[f"{h}-{c}-{f}" for h, c, f in CASES])
def test_golden(monkeypatch, host, command, fmt):
    monkeypatch.chdir(FIXTURES)
    argv = [command] + HOSTS[host] + (SOCKETS if command == "audit" else []) + ["--format", fmt]
    rc, text = run(argv)
    assert rc in (0, 1), text
    got = rendered(command, fmt, text)
    path = os.path.join(GOLDEN, f"{host}.{command}.{'txt' if fmt == 'table' else 'json'}")
    if REGENERATE:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(got)
    with open(path, encoding="utf-8") as fh:
        expected = fh.read()
    assert got == expected, f"{path} differs: rerun with TWINWALL_REGENERATE_GOLDEN=1 and review the diff"


@pytest.mark.parametrize("host", list(HOSTS))
def test_audit_verbose_is_the_golden_inlined(monkeypatch, host):
    """``audit --verbose`` writes the twinwall.audit/1 form: the golden (/2) document with its
    address lists inlined, and nothing else changed."""
    monkeypatch.chdir(FIXTURES)
    argv = ["audit"] + HOSTS[host] + SOCKETS + ["--format", "json", "--verbose"]
    rc, text = run(argv)
    assert rc in (0, 1), text
    with open(os.path.join(GOLDEN, f"{host}.audit.json"), encoding="utf-8") as fh:
        golden = json.load(fh)
    assert golden["schema"] == "twinwall.audit/2" and "address_sets" in golden
    assert json.loads(text) == inline_address_sets(golden)


def test_goldens_cover_services_and_findings():
    """The goldens are not empty renderings: the audits list services and findings."""
    for host in HOSTS:
        with open(os.path.join(GOLDEN, f"{host}.audit.json"), encoding="utf-8") as fh:
            doc = json.load(fh)
        assert doc["services"] and doc["findings"], host
