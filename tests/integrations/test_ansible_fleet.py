"""The twinwall.fleet Ansible collection, run for real: ansible-playbook in a controller namespace
reaches three namespace hosts over SSH (an sshd each, key auth), collects a snapshot on each with
nothing of twinwall installed there, fetches them and runs `twinwall fleet` on the controller.

Each host has a different firewall:
  h1  iptables-nft for IPv4, IPv6 forgotten (ip6tables empty, policy ACCEPT): [::]:8080 is
      filtered over IPv4 and open over IPv6 - the fleet's IPv6-only exposure;
  h2  one nftables inet table, the same for both families: 8080 restricted over both;
  h3  iptables-legacy, IPv6 wider than IPv4 (8080 open over IPv6, restricted over IPv4).
The fleet report must agree, host by host, with `twinwall audit` run in that host's namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import require, require_tools
from fleet_lab import BASE_V4, EMPTY, SSHD, FleetLab
from harness import ListenerSpec

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK_REL = Path("ansible_collections/twinwall/fleet/playbooks/fleet.yml")

# IPv6 works only where neighbour discovery passes (untracked, hop limit 255)
NDP_ACCEPT = ("-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT\n"
              "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -m hl --hl-eq 255 -j ACCEPT\n")

NFT_INET = """flush ruleset
table inet filter {
  chain input {
    type filter hook input priority 0; policy drop;
    iif "lo" accept
    ct state established,related accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept
    tcp dport 22 accept
    ip saddr 198.51.100.0/24 tcp dport 8080 accept
    ip6 saddr 2001:db8:f::/48 tcp dport 8080 accept
  }
  chain forward { type filter hook forward priority 0; policy drop; }
}
"""


def _statuses(doc):
    return {(s["protocol"], s["address"], s["port"]): (s["ipv4"]["status"], s["ipv6"]["status"])
            for s in doc["services"]}


def _findings(doc):
    return sorted((f["id"], f["severity"], f["family"] or "", f["service"] or "") for f in doc["findings"])


def test_playbook_collects_three_hosts_and_the_fleet_agrees_with_their_audits(tmp_path: Path) -> None:
    require_tools("ansible-playbook", "ssh", "ssh-keygen", SSHD, "unshare", "iptables-legacy-restore")
    # the hosts run the machine's own python3, which must not have twinwall: nothing installed there
    system = subprocess.run(["/usr/bin/python3", "-c", "import twinwall"], capture_output=True)
    require("twinwall is importable by /usr/bin/python3: cannot show that the hosts need no install"
            if system.returncode == 0 else None)

    build = tmp_path / "collections"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_ansible_collection.py"), "-o", str(build)],
                   check=True, capture_output=True)
    with FleetLab(["h1", "h2", "h3"], ssh=True) as lab:
        lab.load_iptables("h1", BASE_V4.format(extra=""), EMPTY)
        lab.load_nft("h2", NFT_INET)
        lab.load_iptables("h3", BASE_V4.format(extra="-A INPUT -s 198.51.100.0/24 -p tcp -m tcp --dport 8080 -j ACCEPT\n"),
                          BASE_V4.format(extra=NDP_ACCEPT + "-A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT\n"), legacy=True)
        for host in lab.names:
            lab.listen(host, [ListenerSpec("tcp", "::", 8080, v6only=False)])

        inventory = lab.tmp / "inventory.ini"
        inventory.write_text("[fleet]\n" + "".join(
            f"{h} ansible_host={lab.address(h)}\n" for h in lab.names) + "\n[fleet:vars]\nansible_user=root\n"
            f"ansible_ssh_private_key_file={lab.client_key}\n"
            f"ansible_ssh_common_args='{' '.join(lab.ssh_args())}'\n"
            "ansible_python_interpreter=/usr/bin/python3\n")
        snapshots = lab.tmp / "snapshots"
        report = lab.tmp / "fleet.json"
        home = lab.tmp / "home"
        home.mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(home),  # nothing under the machine's ~/.ansible or ~/.ssh
            "LC_ALL": "C.UTF-8",
            "ANSIBLE_HOME": str(home / ".ansible"),
            "ANSIBLE_LOCAL_TEMP": str(lab.tmp / "local-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(lab.tmp / "remote-tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.tmp / "cp"),
            # no ControlPersist master left behind after the run: one connection per task
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPath=none",
            "ANSIBLE_COLLECTIONS_PATH": str(build),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORKS": "3",
            "ANSIBLE_LOCALHOST_WARNING": "False",
        }
        run = lab.controller_exec(
            "ansible-playbook", "-i", str(inventory), str(build / PLAYBOOK_REL),
            "-e", f"twinwall_snapshot_dir={snapshots}", "-e", "twinwall_become=false",
            "-e", json.dumps({"twinwall_command": f"{sys.executable} -m twinwall"}), "-e", "twinwall_format=json",
            "-e", f"twinwall_report={report}",
            env=dict(env, PYTHONPATH=str(REPO / "src")), timeout=600)
        assert run.returncode == 0, f"ansible-playbook failed:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
        assert "failed=0" in run.stdout and "unreachable=0" in run.stdout

        assert sorted(p.name for p in snapshots.iterdir()) == ["h1.json", "h2.json", "h3.json"]
        fleet = json.loads(report.read_text())
        assert fleet["schema"] == "twinwall.fleet/1" and fleet["unreadable"] == []
        by_host = {Path(h["source"]).stem: h for h in fleet["hosts"]}
        assert sorted(by_host) == ["h1", "h2", "h3"]
        # the collector ran in each host's sshd session: its own hostname, its own rulesets
        assert {n: h["host"]["hostname"] for n, h in by_host.items()} == {"h1": "h1", "h2": "h2", "h3": "h3"}
        sources = {n: {(r["family"], r["source"], r.get("backend")) for r in h["host"]["rulesets"]}
                   for n, h in by_host.items()}
        assert sources["h1"] != sources["h2"] != sources["h3"] != sources["h1"]

        for host in lab.names:
            rc, out, err = lab.twinwall(host, "audit", "--format", "json")
            assert rc in (0, 1), err
            direct = json.loads(out)
            assert _statuses(by_host[host]) == _statuses(direct), host
            assert _findings(by_host[host]) == _findings(direct), host

        svc = ("tcp", "::", 8080)
        assert _statuses(by_host["h1"])[svc] == ("filtered", "open")
        assert _statuses(by_host["h2"])[svc] == ("restricted", "restricted")
        assert _statuses(by_host["h3"])[svc] == ("restricted", "open")
        only = [(Path(s["source"]).stem, s["port"], s["ipv4"], s["ipv6"]) for s in fleet["summary"]["ipv6_only"]]
        assert only == [("h1", 8080, "filtered", "open")]
        worst = {Path(h["source"]).stem: h["worst"] for h in fleet["summary"]["per_host"]}
        # open vs filtered is high, open vs restricted medium (findings.CATALOGUE's severity rule)
        assert worst["h1"] == "high" and worst["h3"] == "medium"
        gaps = {Path(h["source"]).stem: h["findings"].get("TW-FAMILY-GAP", 0) for h in fleet["summary"]["per_host"]}
        assert gaps == {"h1": 1, "h2": 0, "h3": 1}
        # the temporary snapshot files on the hosts were removed by the playbook
        assert not [line for line in run.stdout.splitlines() if "twinwall-" in line and "FAILED" in line]
