"""What a small run pays before its work: the modules an offline audit and diff import.

On a small ruleset the interpreter's start and the imports are most of a run (issue 12: a 1k-rule
audit against ``iptables-restore --test``). These modules are not needed by an offline audit or
diff that one process can do (a small one), so a change that imports them again fails here
rather than slowing every run unnoticed: ``socket`` (its enum classes; the C functions come from
``_socket``), ``shutil`` (argparse's terminal width; it brings bz2, lzma and zlib), the fork
machinery (``pickle``, ``signal``, ``threading``: only a run large enough to fork), the format
renderers and the other commands' modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures")
SRC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "src")

NOT_NEEDED = (
    "socket", "shutil", "bz2", "lzma", "pickle", "signal", "threading", "tempfile",
    "xml.etree.ElementTree", "twinwall.report.formats", "twinwall.fix", "twinwall.policy",
    "twinwall.apply", "twinwall.scan", "twinwall.commands.fix", "twinwall.commands.policy",
)

RUNS = {
    "audit json": ["audit", "--iptables", "frontends/ufw-ipv6-yes.v4.rules", "--ip6tables",
                   "frontends/ufw-ipv6-yes.v6.rules", "--sockets", "golden/sockets.txt", "--format", "json"],
    "audit table": ["audit", "--iptables", "frontends/ufw-ipv6-yes.v4.rules", "--ip6tables",
                    "frontends/ufw-ipv6-yes.v6.rules", "--sockets", "golden/sockets.txt"],
    "audit nft": ["audit", "--nft", "nft/inet_filter.json", "--sockets", "golden/sockets.txt", "--format", "json"],
    "diff json": ["diff", "--iptables", "frontends/ufw-ipv6-yes.v4.rules", "--ip6tables",
                  "frontends/ufw-ipv6-yes.v6.rules", "--format", "json"],
}

# runs the command in a fresh interpreter (what a run imports, not what the test run has loaded)
# and prints the modules loaded by then
PROBE = """
import io, json, sys
from twinwall.cli import main
out, sys.stdout = sys.stdout, io.StringIO()
code = main(sys.argv[1:])
sys.stdout = out
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_small_offline_run_imports_only_what_it_needs(name):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC), TWINWALL_JOBS="")
    proc = subprocess.run([sys.executable, "-c", PROBE, *RUNS[name]], cwd=FIXTURES, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] in (0, 1)
    loaded = [m for m in result["modules"] if any(m == n or m.startswith(n + ".") for n in NOT_NEEDED)]
    assert loaded == []
