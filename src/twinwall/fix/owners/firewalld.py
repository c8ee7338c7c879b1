"""firewalld: rich rules with ``family=`` (firewalld rejects an address without it), added to
the runtime configuration during the trial (``firewall-cmd --add-rich-rule``, undone with
``--remove-rich-rule``) and made permanent only on confirm (``--runtime-to-permanent``).

Rich rules with a negative priority are evaluated in the zone before its services and ports, in
priority order: a change's rules keep their order that way (accept, then the drop that follows
it). firewalld accepts loopback in ``filter_INPUT`` before any zone is consulted, so a rule that
excludes ``lo`` is written without that match and means the same.

What firewalld makes of rich rules is its own nft table (``inet firewalld``), predicted by
running them: a firewalld started in a scratch network and mount namespace (``unshare --net
--mount``, /run a tmpfs there) on a D-Bus of its own (a dbus-daemon whose socket is in a
temporary directory), with a copy of the host's /etc/firewalld as its configuration; the
commands run there, and what it loaded is read back with ``nft list ruleset``. That firewalld
starts from the permanent configuration: before the commands its tables must equal the host's
live ones (else the host holds runtime-only changes, and the prediction would be of another
ruleset: refused). The host's firewalld, its bus and its /etc are never used by the plan.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twinwall.apply.candidate import Candidate
from twinwall.fix.model import Change, Refused, RuleSpec
from twinwall.fix.owners.iptables import summary
from twinwall.model import HostSnapshot

ACTIONS = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject"}
CONFIG = "/etc/firewalld"
TABLE = "firewalld"  # the name of firewalld's nft tables (inet; ip and ip6 in older versions)
FIRST_PRIORITY = -100  # rich rules at -100, -99, ...: before the zone's own (priority 0) rules
START_TIMEOUT = 60  # seconds for the scratch firewalld to answer --state


def rich_rule(rule: RuleSpec, priority: Optional[int] = None) -> str:
    """``rule priority=-100 family="ipv6" source address="2001:db8:a::/64" port port="22"
    protocol="tcp" accept`` for one RuleSpec; Refused for what a rich rule cannot say."""
    if (rule.raw or rule.action not in ACTIONS or rule.chain != "INPUT" or rule.hop_limit is not None or rule.iif
            or rule.oif or rule.not_oif or (rule.not_iif not in (None, "lo"))
            or rule.state not in (None, "NEW") or (rule.sport and rule.protocol not in ("tcp", "udp"))):
        raise Refused(f"firewalld rich rules cannot express {rule.iptables_line()}")
    parts = ["rule"] + ([f"priority={priority}"] if priority is not None else []) + [f'family="{rule.family}"']
    if rule.source:
        parts.append(f'source address="{rule.source}"')
    if rule.destination:
        parts.append(f'destination address="{rule.destination}"')
    if rule.protocol in ("tcp", "udp") and rule.dport is not None:
        parts.append(f'port port="{rule.dport}" protocol="{rule.protocol}"')
    elif rule.icmp_type:
        parts.append(f'icmp-type name="{rule.icmp_type}"')
    elif rule.protocol:
        parts.append(f'protocol value="{rule.protocol}"')
    if rule.sport:
        parts.append(f'source-port port="{rule.sport.replace(":", "-")}" protocol="{rule.protocol}"')
    parts.append(ACTIONS[rule.action])
    if rule.action == "REJECT" and rule.reject_with:
        parts.append(f'type="{rule.reject_with}"')  # firewalld's reject types are iptables' names
    return " ".join(parts)


def commands_for(changes: Sequence[Change]) -> Tuple[List[List[str]], List[List[str]]]:
    """One firewall-cmd adding every change's rich rules (priorities counted across all of them,
    in order), and one removing them: one process each way, so that the rollback at the
    deadline is as quick as a restore. Each change lists its own rules as commands."""
    texts: List[str] = []
    prio = FIRST_PRIORITY
    for ch in changes:
        if ch.replace_table or ch.policies:
            raise Refused("firewalld: a chain policy is a zone's target (firewall-cmd --set-target), for both "
                          "families: plan it by hand")
        mine = []
        for rule in ch.rules:
            mine.append(rich_rule(rule, prio))
            prio += 1
        ch.owner = "firewalld"
        ch.commands = [shlex.join(["firewall-cmd", f"--add-rich-rule={t}"]) for t in mine]
        ch.rules_text = "\n".join(mine)
        texts += mine
    if not texts:
        return [], []
    return ([["firewall-cmd", *(f"--add-rich-rule={t}" for t in texts)]],
            [["firewall-cmd", *(f"--remove-rich-rule={t}" for t in reversed(texts))]])


def backend_of(config: str = CONFIG) -> str:
    try:
        text = open(os.path.join(config, "firewalld.conf"), encoding="utf-8").read()
    except OSError:
        return "nftables"
    m = re.search(r"^\s*FirewallBackend\s*=\s*(\S+)", text, re.M)
    return m.group(1).strip("\"'").lower() if m else "nftables"


# ---------------------------------------------------------------------------------------------
# the scratch firewalld

# a system bus of its own: the scratch firewalld and firewall-cmd talk on it, root only
BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

# $1: the temporary directory. Both daemons are stopped by their PIDs on the way out; the
# namespace (and every table firewalld loaded) goes with the last of them.
_SCRATCH = r'''
set -e
D=$1
mount -t tmpfs tw-firewalld-run /run
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$D/bus"
dbus-daemon --nofork --config-file="$D/bus.conf" 2>/dev/null & BUS=$!
FW=
trap 'if [ -n "$FW" ]; then kill $FW 2>/dev/null; wait $FW 2>/dev/null; fi; kill $BUS 2>/dev/null; wait $BUS 2>/dev/null' EXIT
n=0; until [ -S "$D/bus" ]; do n=$((n+1)); [ $n -lt 200 ] || { echo "dbus-daemon did not start" >&2; exit 1; }; sleep 0.05; done
"$FIREWALLD" --nofork --nopid --system-config "$D/etc" --log-target file --log-file "$D/firewalld.log" & FW=$!
n=0; until firewall-cmd --state >/dev/null 2>&1; do
  n=$((n+1)); kill -0 $FW 2>/dev/null && [ $n -lt $((START_TIMEOUT*10)) ] || { echo "firewalld did not start:" >&2; tail -3 "$D/firewalld.log" >&2; exit 1; }
  sleep 0.1
done
nft -j list ruleset
echo "#### twinwall commands"
sh -e "$D/commands.sh" 2>&1
echo "#### twinwall after"
nft list ruleset
'''


def firewalld_binary() -> Optional[str]:
    return shutil.which("firewalld") or next((p for p in ("/usr/sbin/firewalld",) if os.path.exists(p)), None)


def predict(commands: Sequence[Sequence[str]], config: str = CONFIG) -> Tuple[str, str]:
    """(firewalld's ruleset in the scratch namespace before the commands, as ``nft -j``; after
    them, as ``nft list ruleset``)."""
    fwd = firewalld_binary()
    missing = [n for n, ok in (("root", os.geteuid() == 0), ("unshare", shutil.which("unshare")),
                               ("firewalld", fwd), ("firewall-cmd", shutil.which("firewall-cmd")),
                               ("dbus-daemon", shutil.which("dbus-daemon"))) if not ok]
    if missing:
        raise Refused("firewalld: predicting what the commands load needs a scratch firewalld; missing: " + ", ".join(missing))
    if not os.path.isdir(config):
        raise Refused(f"firewalld: no configuration at {config} to start a scratch firewalld from")
    with tempfile.TemporaryDirectory(prefix="twinwall-firewalld-") as d:
        shutil.copytree(config, f"{d}/etc", symlinks=True)
        with open(f"{d}/bus.conf", "w", encoding="utf-8") as fh:
            fh.write(BUS_CONF.format(socket=f"{d}/bus"))
        with open(f"{d}/commands.sh", "w", encoding="utf-8") as fh:
            fh.write("".join(shlex.join(c) + "\n" for c in commands))
        env = dict(os.environ, FIREWALLD=str(fwd), START_TIMEOUT=str(START_TIMEOUT))
        try:
            res = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", _SCRATCH,
                                  "sh", d], capture_output=True, text=True, timeout=START_TIMEOUT + 120, env=env)
        except subprocess.TimeoutExpired:
            raise Refused("firewalld: the scratch firewalld did not answer in time") from None
    if res.returncode != 0:
        said = " ".join((res.stderr + " " + res.stdout.rpartition("#### twinwall commands")[2]).split())
        raise Refused(f"firewalld: the commands fail on a scratch firewalld: {said[:300]}")
    before, _, rest = res.stdout.partition("#### twinwall commands\n")
    said, _, after = rest.partition("#### twinwall after\n")
    if "ALREADY_ENABLED" in said:
        # its undo would remove a rule that was there before
        raise Refused("firewalld: a rich rule of the plan is already in its configuration: " + " ".join(said.split())[:200])
    return before, after


def _strip_handles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_handles(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_strip_handles(v) for v in value]
    return value


def firewalld_items(nft_json: Optional[str]) -> List[Any]:
    """The items of firewalld's tables in an ``nft -j list ruleset``, without their handles."""
    out: List[Any] = []
    try:
        items = json.loads(nft_json or "{}").get("nftables", [])
    except ValueError:
        return out
    for item in items:
        for kind, body in item.items():
            if not isinstance(body, dict) or kind == "metainfo":
                continue
            if (body.get("name") if kind == "table" else body.get("table")) == TABLE:
                out.append(_strip_handles(item))
    return out


def live_nft_json(snapshot: HostSnapshot) -> Optional[str]:
    texts = [t.text for t in snapshot.rulesets if t.format == "nft-json"]
    return texts[0] if texts else None


def replacement_script(after: str, before_items: List[Any]) -> str:
    """An ``nft -f`` script that replaces firewalld's tables with what the scratch firewalld
    holds after the commands (a table it no longer has: deleted)."""
    names: Dict[Tuple[str, str], None] = {}
    for item in before_items:
        if "table" in item:
            names[(item["table"]["family"], item["table"]["name"])] = None
    for m in re.finditer(r"^table (\S+) (\S+) \{", after, re.M):
        names[(m.group(1), m.group(2))] = None
    head = "".join(f"add table {f} {n}\ndelete table {f} {n}\n" for f, n in names)
    return head + after


class FirewalldOwner:
    name = "firewalld"

    def render(self, snapshot: HostSnapshot, changes: Sequence[Change]) -> Candidate:
        do, undo = commands_for(changes)
        if backend_of() != "nftables":
            raise Refused(f"firewalld runs with FirewallBackend={backend_of()}: twinwall predicts only its nftables "
                          "back-end. The commands, to review and run yourself: " + "; ".join(shlex.join(c) for c in do))
        before, after = predict(do)
        live = firewalld_items(live_nft_json(snapshot))
        scratch = firewalld_items(before)
        if live != scratch:
            raise Refused("firewalld's live rules are not what its permanent configuration loads (runtime-only "
                          "changes, or interfaces bound at runtime): twinwall predicts from the permanent "
                          "configuration. Make them permanent (firewall-cmd --runtime-to-permanent) or drop them "
                          "(firewall-cmd --reload) first")
        return Candidate("commands", nft=replacement_script(after, scratch), commands=do, undo_commands=undo,
                         summary=summary(changes))


OWNER = FirewalldOwner()
