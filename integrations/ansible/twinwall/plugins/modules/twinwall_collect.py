#!/usr/bin/python
# -*- coding: utf-8 -*-
# twinwall.fleet.twinwall_collect: a twinwall snapshot of the managed host.
# MIT License (see twinwall's pyproject.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: twinwall_collect
short_description: Collect a twinwall snapshot (sockets, addresses, IPv6 state, firewall rulesets)
description:
  - Gathers what C(twinwall collect) gathers - listening sockets with their v6only flag and
    process, addresses, the IPv6 state with its evidence, and every iptables-nft, legacy and
    nftables ruleset - into a C(twinwall.snapshot/1) document.
  - The collector is twinwall's own, shipped as module_utils; it needs nothing on the host beyond
    Python's standard library, iproute2 and the firewall tools already there. Nothing on the host
    is changed, except the I(dest) file when given.
  - Audit the snapshots on the controller with C(twinwall fleet DIR) or C(twinwall audit --snapshot FILE).
  - Run it as root (C(become)) - without root the rulesets and process names cannot be read and
    the snapshot's C(missing) list says so.
options:
  dest:
    description:
      - Write the snapshot to this file on the managed host (mode 0600), to be fetched with
        M(ansible.builtin.fetch). Without it the snapshot is returned as C(snapshot).
    type: path
  rules:
    description: Read the firewall rulesets (false is C(twinwall collect --no-rules)).
    type: bool
    default: true
author:
  - twinwall developers
"""

EXAMPLES = r"""
- name: Collect into a temporary file and fetch it
  block:
    - ansible.builtin.tempfile:
        suffix: .json
      register: tmp
    - twinwall.fleet.twinwall_collect:
        dest: "{{ tmp.path }}"
    - ansible.builtin.fetch:
        src: "{{ tmp.path }}"
        dest: "snapshots/{{ inventory_hostname }}.json"
        flat: true
  always:
    - ansible.builtin.file:
        path: "{{ tmp.path }}"
        state: absent
"""

RETURN = r"""
summary:
  description: One line - what was collected and what is missing.
  returned: always
  type: str
missing:
  description: The facts that could not be collected, one sentence each.
  returned: always
  type: list
  elements: str
snapshot:
  description: The snapshot document (only without I(dest)).
  returned: when dest is not given
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.twinwall.fleet.plugins.module_utils.twinwall_errors import TwinwallError
from ansible_collections.twinwall.fleet.plugins.module_utils.twinwall_host import collect_host
from ansible_collections.twinwall.fleet.plugins.module_utils.twinwall_snapshot import snapshot_to_json, write_snapshot

NO_RULES_NOTE = "rulesets: not collected (twinwall collect --no-rules)"


def summary(snap):
    rulesets = ", ".join("%s (%s, %s)" % (r.source, r.family, r.backend) for r in snap.rulesets) or "none"
    sockets = "%d sockets" % len(snap.sockets) if snap.sockets_known else "no sockets (unknown)"
    return "collected %s, %d addresses, rulesets: %s; missing: %s" % (
        sockets, len(snap.addresses), rulesets, "; ".join(snap.missing) or "nothing")


def main():
    module = AnsibleModule(
        argument_spec=dict(dest=dict(type="path"), rules=dict(type="bool", default=True)),
        supports_check_mode=True,
    )
    dest = module.params["dest"]
    try:
        snap = collect_host(include_rules=module.params["rules"])
        if not module.params["rules"]:
            snap.missing.append(NO_RULES_NOTE)
        result = dict(changed=False, summary=summary(snap), missing=snap.missing)
        if dest is None:
            result["snapshot"] = snapshot_to_json(snap)
        elif not module.check_mode:
            # created private: a snapshot lists every rule and process of the host
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            write_snapshot(snap, dest)
            result["changed"] = True
            result["dest"] = dest
    except TwinwallError as exc:
        module.fail_json(msg="twinwall: %s" % exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
