#!/usr/bin/python3
"""OpenSCAP SCE check: one CIS iptables/ip6tables control, decided by `twinwall audit`.

oscap runs this script once per rule of twinwall-xccdf.xml with a bare environment (PATH
/bin:/sbin:/usr/bin:/usr/sbin, hence the absolute paths) and the rule's exported values:

  XCCDF_VALUE_TWINWALL_CONTROL   the CIS control, e.g. 4.4.3.1
  XCCDF_VALUE_TWINWALL_COMMAND   how to run twinwall (default /usr/local/bin/twinwall)
  XCCDF_VALUE_TWINWALL_ARGS      extra audit arguments, e.g. "--snapshot /var/tmp/host.json"

The control fails when twinwall raises a finding filed under it (the finding's "cis" field), at
any severity; it is not applicable for the ip6tables controls on a host with IPv6 off; it is an
error when twinwall cannot audit, or cannot read that family's ruleset. What is printed here is
kept in the results (check-import stdout): the findings with the rules that decided them.
Python's standard library only.
"""

import json
import os
import shlex
import subprocess
import sys


def result(name, default):
    return int(os.environ.get("XCCDF_RESULT_" + name, default))


PASS, FAIL, ERROR = result("PASS", 101), result("FAIL", 102), result("ERROR", 103)
NOT_APPLICABLE = result("NOT_APPLICABLE", 105)


def main():
    control = os.environ.get("XCCDF_VALUE_TWINWALL_CONTROL", "").strip()
    if not control:
        print("twinwall SCE: no control given (XCCDF_VALUE_TWINWALL_CONTROL)")
        return ERROR
    command = shlex.split(os.environ.get("XCCDF_VALUE_TWINWALL_COMMAND") or "/usr/local/bin/twinwall")
    extra = shlex.split(os.environ.get("XCCDF_VALUE_TWINWALL_ARGS") or "")
    argv = command + ["audit", "--format", "json", "--fail-on", "never"] + extra
    try:
        run = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                             timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print("twinwall SCE: cannot run %s: %s" % (" ".join(argv), exc))
        return ERROR
    try:
        doc = json.loads(run.stdout)
    except ValueError:
        print("twinwall SCE: %s exited %d: %s" % (" ".join(argv), run.returncode, run.stderr.strip()))
        return ERROR
    family = "ipv6" if control.startswith("4.4.3.") else "ipv4"
    label = {"ipv4": "IPv4", "ipv6": "IPv6"}[family]
    host = (doc.get("host") or {}).get("hostname") or "(offline input)"
    if family == "ipv6" and (doc.get("ipv6") or {}).get("enabled") is False:
        print("CIS %s: not applicable on %s: IPv6 is disabled (%s)"
              % (control, host, "; ".join(doc["ipv6"].get("evidence") or [])))
        return NOT_APPLICABLE
    unread = [f for f in doc.get("findings", []) if f.get("id") == "TW-NO-RULESET" and f.get("family") == family]
    if unread or run.returncode not in (0, 1):
        print("CIS %s: twinwall could not check %s on %s: %s"
              % (control, label, host, "; ".join(f["message"] for f in unread) or run.stderr.strip()))
        return ERROR
    prefix = "CIS %s " % control
    hits = [f for f in doc.get("findings", []) if (f.get("cis") or "").startswith(prefix)]
    if not hits:
        print("CIS %s: pass on %s (twinwall audit: no finding under this control)" % (control, host))
        return PASS
    print("CIS %s: %d finding(s) on %s" % (control, len(hits), host))
    for f in hits:
        print("%s %s %s: %s" % (f["severity"].upper(), f["id"], label, f["message"]))
        for line in f.get("evidence") or []:
            print("    - %s" % line)
    return FAIL


if __name__ == "__main__":
    sys.exit(main())
