"""The single-file build: scripts/build_pyz.py's twinwall.pyz, copied with scp to a namespace host
and run there over ssh as `python3 -S -I twinwall.pyz collect -o -` (no site-packages, no
install: the standard library only), exactly as docs/fleet.md's fan-out does. Its snapshot,
audited on the controller, must agree with `twinwall audit` run on the host itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import require_tools
from fleet_lab import BASE_V4, EMPTY, SSHD, FleetLab
from harness import ListenerSpec

REPO = Path(__file__).resolve().parents[2]

V4 = BASE_V4.format(extra="")


def test_pyz_over_scp_and_ssh_collects_what_the_audit_sees(tmp_path: Path) -> None:
    require_tools("ssh", "scp", "ssh-keygen", SSHD, "unshare")
    pyz = tmp_path / "twinwall.pyz"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_pyz.py"), "-o", str(pyz)], check=True,
                   capture_output=True)
    # the archive alone, under an interpreter that sees no site-packages (no orjson, no twinwall)
    bare = subprocess.run(["python3", "-S", "-I", str(pyz), "--version"], capture_output=True, text=True)
    assert bare.returncode == 0 and bare.stdout.startswith("twinwall "), bare.stderr
    with FleetLab(["web"], ssh=True) as lab:
        lab.load_iptables("web", V4, EMPTY)
        lab.listen("web", [ListenerSpec("tcp", "::", 8080, v6only=False), ListenerSpec("udp", "0.0.0.0", 53)])
        host = f"root@{lab.address('web')}"
        remote = f"/tmp/twinwall-{lab.tag}.pyz"
        scp = lab.controller_exec("scp", "-q", *lab.ssh_args(), str(pyz), f"{host}:{remote}", timeout=60)
        assert scp.returncode == 0, scp.stderr
        try:
            collect = lab.controller_exec("ssh", *lab.ssh_args(), host, f"python3 -S -I {remote} collect -o -",
                                          timeout=120)
        finally:
            lab.controller_exec("ssh", *lab.ssh_args(), host, f"rm -f {remote}", timeout=60)
        assert collect.returncode == 0, collect.stderr
        snapshot = tmp_path / "web.json"
        snapshot.write_text(collect.stdout)
        doc = json.loads(collect.stdout)
        assert doc["schema"] == "twinwall.snapshot/1" and doc["hostname"] == "web"
        assert {r["family"] for r in doc["rulesets"]} == {"ipv4", "ipv6"}

        offline = subprocess.run([sys.executable, "-m", "twinwall", "audit", "--snapshot", str(snapshot),
                                  "--format", "json"], capture_output=True, text=True)
        assert offline.returncode == 1, offline.stderr
        rc, out, err = lab.twinwall("web", "audit", "--format", "json")
        assert rc == 1, err
        direct = json.loads(out)
        audited = json.loads(offline.stdout)

        def statuses(d):
            return {(s["protocol"], s["address"], s["port"]): (s["ipv4"]["status"], s["ipv6"]["status"])
                    for s in d["services"]}

        assert statuses(audited) == statuses(direct)
        assert statuses(audited)[("tcp", "::", 8080)] == ("filtered", "open")
        assert sorted(f["id"] for f in audited["findings"]) == sorted(f["id"] for f in direct["findings"])
        assert not Path(remote).exists()  # the hosts share this machine's /tmp: cleaned up
