"""Random policy files for the property tests: every key of the format, groups with members in
one family or both, negations, ICMP types with and without twins, per-family defaults, files
that govern one family."""

from __future__ import annotations

import json

from hypothesis import strategies as st

GROUPS = {
    "office": ["192.0.2.0/24", "2001:db8:1::/64"],
    "v4only": ["198.51.100.0/25", "203.0.113.7"],
    "v6only": ["2001:db8:2::/48"],
    "mixed": ["198.51.100.128/25", "2001:db8:3::1", "2001:db8:4::/64"],
}
ICMP_TYPES = ["echo-request", "echo-reply", "destination-unreachable", "time-exceeded",
              "neighbour-solicitation", "router-advertisement", "timestamp-request", "packet-too-big",
              "fragmentation-needed"]
ADDRESSES = list(GROUPS) + ["192.0.2.99", "2001:db8:9::/64", "!office", "!v4only", "!v6only", "!mixed"]


@st.composite
def rules(draw):
    r = {"direction": draw(st.sampled_from(["in", "out", "forward"]))}
    proto = draw(st.sampled_from(["tcp", "udp", "icmp", "any"]))
    if proto != "any":
        r["proto"] = proto
    if proto in ("tcp", "udp") and draw(st.booleans()):
        ports = draw(st.lists(st.sampled_from([22, 25, 53, 80, 443, "8000-8100", "1-1023"]), min_size=1, max_size=4,
                              unique=True))
        r["ports"] = ports
    if proto == "icmp" and draw(st.booleans()):
        r["icmp_types"] = draw(st.lists(st.sampled_from(ICMP_TYPES), min_size=1, max_size=3, unique=True))
    for key in ("from", "to"):
        if draw(st.integers(0, 3)) == 0:
            r[key] = draw(st.sampled_from(ADDRESSES))
    if r["direction"] == "in" and draw(st.integers(0, 4)) == 0:
        r["in_interface"] = draw(st.sampled_from(["eth0", "eth+", "!eth1", ["eth0", "eth1"], ["!eth0", "!wg+"]]))
    if r["direction"] == "out" and draw(st.integers(0, 3)) == 0:
        r["uid"] = draw(st.sampled_from([0, 65534, "1000-1999"]))
    r["action"] = draw(st.sampled_from(["accept", "drop", "reject"]))
    if r["action"] == "reject" and proto == "tcp" and draw(st.booleans()):
        r["reject_with"] = "tcp-reset"
    fam = draw(st.sampled_from(["both", "both", "ipv4", "ipv6"]))
    if fam != "both":
        if "icmp_types" in r:
            r["icmp_types"] = [t for t in r["icmp_types"] if _exists(t, fam)] or ["echo-request"]
        r["family"] = fam
    return r


def _exists(name: str, family: str) -> bool:
    from twinwall.policy.model import icmp_type_in

    return icmp_type_in(name, family) is not None


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, str)):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"


@st.composite
def policies(draw, max_rules: int = 6) -> str:
    """A policy file's text."""
    lines = ["[defaults]"]
    # now and then a file that governs one family: the other is left as the host has it
    only = draw(st.sampled_from([None, None, None, None, "ipv4", "ipv6"]))
    if only:
        lines.append(f"families = {_toml([only])}")
    for hook in ("input", "forward", "output"):
        if draw(st.booleans()):
            per = {"ipv4": "drop", "ipv6": "accept"} if not only else {only: draw(st.sampled_from(["drop", "accept"]))}
            v = draw(st.sampled_from(["drop", "reject", "accept", per]))
            lines.append(f"{hook} = {_toml(v)}")
    for key in ("log_dropped", "loopback", "spoofed_loopback", "essential_icmp", "established", "drop_invalid"):
        if draw(st.integers(0, 3)) == 0:
            lines.append(f"{key} = {_toml(draw(st.booleans()))}")
    lines.append("[groups]")
    for name, members in GROUPS.items():
        lines.append(f"{name} = {_toml(members)}")
    for r in draw(st.lists(rules(), max_size=max_rules)):
        if only and r.get("family", only) != only:
            r.pop("family")
        lines.append("[[rule]]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in r.items())
    return "\n".join(lines) + "\n"
