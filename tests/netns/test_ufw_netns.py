"""Real ufw, enabled inside a test namespace only, audited by twinwall and checked by real clients.

ufw (Debian's package, /usr/sbin/ufw) keeps its configuration in /etc/ufw, /etc/default/ufw and
/lib/ufw and loads it with iptables-restore / ip6tables-restore. Here it runs as
``ip netns exec NS unshare --mount -- sh -c 'mount --bind COPY /etc/ufw; ...; exec ufw ARGS'``:

* ``ip netns exec NS``: every iptables call ufw makes lands in the test's server namespace;
* a private mount namespace with temporary copies bind-mounted over /etc/ufw, /etc/default/ufw
  and /lib/ufw (and a tmpfs over /run for ufw's lock file): ufw reads and rewrites the copies,
  and the machine's own files are never written. The test checks that they are unchanged.

ufw is never started in the root namespace. Two layouts, each with rules that differ between the
families:

1. ``IPV6=yes``: rules given with an IPv4 or IPv6 source only exist in that family; plain port
   rules exist in both (ufw adds them to ip6tables as "(v6)" rules);
2. ``IPV6=no``: ufw writes only iptables; ip6tables gets DROP policies and a loopback accept, so
   every IPv6 service is filtered - a family gap twinwall must report, with "ufw (IPv4 only)".

For every (service, family) the expected status is written here from ufw's semantics; the real
clients must agree with it ("open": both clients connect; "restricted": only the inside client;
"filtered": neither) and so must `twinwall audit --format json` run in the server namespace.
Every finding of a family ufw manages must name ufw as its front-end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from harness import IPV4, IPV6, ListenerSpec, Topology, netns_exec

OPEN, RESTRICTED, FILTERED = "open", "restricted", "filtered"
FAMILIES = (IPV4, IPV6)
INSIDE, OUTSIDE = "inside", "outside"

UFW = shutil.which("ufw") or "/usr/sbin/ufw"
UFW_SHARE = Path("/usr/share/ufw")
MACHINE_FILES = [Path("/etc/default/ufw")] + sorted(Path("/etc/ufw").glob("*.rules")) + [Path("/etc/ufw/ufw.conf")]

# Runs inside `ip netns exec NS unshare --mount --propagation private --`: put the copies in place
# of ufw's directories (in this private mount namespace only), then exec ufw.
_PRIVATE_UFW = (
    'set -e; mount --bind "$1" /etc/ufw; mount --bind "$2" /etc/default/ufw; '
    'mount --bind "$3" /lib/ufw; mount -t tmpfs tw-ufw-run /run; shift 3; exec "$@"'
)


def _skip_reason() -> Optional[str]:
    if not os.path.exists(UFW):
        return "ufw is not installed (apt-get install ufw)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is needed to give ufw a private /etc/ufw"
    for p in ("/etc/ufw", "/etc/default/ufw", "/lib/ufw/ufw-init"):
        if not os.path.exists(p):
            return f"ufw is incompletely installed: {p} is missing"
    return None


def _digest(paths: Sequence[Path]) -> Dict[str, str]:
    out = {}
    for p in paths:
        try:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        except FileNotFoundError:
            out[str(p)] = "(missing)"
    return out


class PrivateUfw:
    """ufw bound to one test namespace, with its configuration in a temporary directory."""

    def __init__(self, ns: str, ipv6: bool):
        if not ns.startswith("tw-"):
            raise ValueError(f"refusing to run ufw outside a test namespace: {ns!r}")
        self.ns = ns
        self.ipv6 = ipv6
        self.tmp: Optional[Path] = None

    def __enter__(self) -> "PrivateUfw":
        self.tmp = Path(tempfile.mkdtemp(prefix="tw-ufw-"))
        etc = self.tmp / "etc-ufw"
        shutil.copytree("/etc/ufw", etc, symlinks=True)
        # start from the package's pristine rules and ufw.conf (ENABLED=no), whatever the
        # machine's own ufw holds
        for name in ("before.rules", "before6.rules", "after.rules", "after6.rules",
                     "user.rules", "user6.rules", "ufw.conf"):
            src = UFW_SHARE / name
            if src.exists():
                shutil.copyfile(src, etc / name)
                os.chmod(etc / name, 0o640 if name.endswith(".rules") else 0o644)
        default = Path("/etc/default/ufw").read_text()
        lines = [ln for ln in default.splitlines() if not ln.startswith("IPV6=")]
        lines.append("IPV6=" + ("yes" if self.ipv6 else "no"))
        (self.tmp / "default-ufw").write_text("\n".join(lines) + "\n")
        shutil.copytree("/lib/ufw", self.tmp / "lib-ufw", symlinks=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __call__(self, *args: str) -> str:
        assert self.tmp is not None
        res = netns_exec(
            self.ns, "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", _PRIVATE_UFW, "sh",
            str(self.tmp / "etc-ufw"), str(self.tmp / "default-ufw"), str(self.tmp / "lib-ufw"),
            UFW, *args, timeout=60,
        )
        return res.stdout


@dataclass(frozen=True)
class Svc:
    proto: str
    port: int
    ipv4: str
    ipv6: str

    def want(self, family: str) -> str:
        return self.ipv4 if family == IPV4 else self.ipv6


@dataclass
class UfwCase:
    name: str
    ipv6: bool  # IPV6= in /etc/default/ufw
    commands: List[Tuple[str, ...]]
    services: List[Svc]
    frontends: Dict[str, List[str]]
    gaps: List[str]  # services that must have a TW-FAMILY-GAP finding


CASES = [
    UfwCase(
        "ipv6_yes_rules_differ",
        ipv6=True,
        commands=[
            ("allow", "from", "192.0.2.0/24", "to", "any", "port", "22", "proto", "tcp"),
            ("allow", "80/tcp"),
            ("allow", "from", "2001:db8:a::/64", "to", "any", "port", "8443", "proto", "tcp"),
            ("deny", "from", "198.51.100.0/24", "to", "any", "port", "9000", "proto", "tcp"),
            ("allow", "9000/tcp"),
            ("allow", "proto", "udp", "to", "0.0.0.0/0", "port", "5000"),
        ],
        services=[
            Svc("tcp", 22, RESTRICTED, FILTERED),
            Svc("tcp", 80, OPEN, OPEN),
            Svc("tcp", 8443, FILTERED, RESTRICTED),
            Svc("tcp", 9000, RESTRICTED, OPEN),
            Svc("udp", 5000, OPEN, FILTERED),
        ],
        frontends={IPV4: ["ufw"], IPV6: ["ufw"]},
        gaps=["tcp/22", "tcp/8443", "tcp/9000", "udp/5000"],
    ),
    UfwCase(
        "ipv6_no",
        ipv6=False,
        commands=[
            ("allow", "80/tcp"),
            ("allow", "from", "192.0.2.0/24", "to", "any", "port", "22", "proto", "tcp"),
        ],
        services=[
            Svc("tcp", 80, OPEN, FILTERED),
            Svc("tcp", 22, RESTRICTED, FILTERED),
        ],
        frontends={IPV4: ["ufw (IPv4 only)"], IPV6: ["ufw (IPv4 only)"]},
        gaps=["tcp/80", "tcp/22"],
    ),
]


def _real_status(topo: Topology, svcs: Sequence[Svc]) -> Dict[Tuple[str, int, str], str]:
    reqs, keys = [], []
    for svc in svcs:
        for family in FAMILIES:
            for client in (INSIDE, OUTSIDE):
                reqs.append(topo.request(client, topo.server_address(client, family), svc.port, svc.proto))
                keys.append((svc.proto, svc.port, family, client))
    results = dict(zip(keys, topo.probe_many(reqs)))
    out = {}
    for svc in svcs:
        for family in FAMILIES:
            inside = results[(svc.proto, svc.port, family, INSIDE)].reachable
            outside = results[(svc.proto, svc.port, family, OUTSIDE)].reachable
            status = OPEN if inside and outside else RESTRICTED if inside else FILTERED
            if outside and not inside:
                status = "outside-only"
            out[(svc.proto, svc.port, family)] = status
    return out


def _service(report: Dict, proto: str, port: int) -> Optional[Dict]:
    for s in report["services"]:
        if s["protocol"] == proto and s["port"] == port and s["address"] == "::":
            return s
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_ufw_in_namespace(case: UfwCase) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    before = _digest(MACHINE_FILES)
    with Topology(prefix="tw") as topo, PrivateUfw(topo.server, ipv6=case.ipv6) as ufw:
        ufw("--force", "enable")
        for cmd in case.commands:
            ufw(*cmd)
        status = ufw("status", "verbose")
        assert "Status: active" in status, status
        v4 = netns_exec(topo.server, "iptables-save").stdout
        v6 = netns_exec(topo.server, "ip6tables-save").stdout
        assert "ufw-user-input" in v4, "ufw did not load its IPv4 rules into the namespace"
        assert ("ufw6-user-input" in v6) == case.ipv6, v6
        topo.start_listeners([ListenerSpec(s.proto, "::", s.port, v6only=False) for s in case.services])

        real = _real_status(topo, case.services)
        report = topo.audit_json()

    assert _digest(MACHINE_FILES) == before, "the machine's own ufw files changed"

    problems = []
    for svc in case.services:
        for family in FAMILIES:
            want = svc.want(family)
            got_real = real[(svc.proto, svc.port, family)]
            if got_real != want:
                problems.append(f"real clients: {svc.proto}/{svc.port} {family}: {got_real}, expected {want}")
    assert not problems, "the case or the harness is wrong:\n" + "\n".join(problems)

    assert report["host"]["frontends"] == case.frontends, report["host"]["frontends"]
    # ufw's `-m limit` rules are iptables-nft's own native limit expressions, not nft rules
    mixed = [m for m in report["host"]["missing"] if "mixed with native" in m]
    assert not mixed, mixed
    for svc in case.services:
        s = _service(report, svc.proto, svc.port)
        assert s is not None, f"twinwall lists no service {svc.proto} [::]:{svc.port}"
        for family in FAMILIES:
            v = s[family]
            if v["status"] != svc.want(family):
                problems.append(f"twinwall: {svc.proto}/{svc.port} {family}: {v['status']} ({v['reason']}), "
                                f"expected {svc.want(family)}; decided_by {v['decided_by']}")
                continue
            if v["status"] in (OPEN, RESTRICTED):
                # accepted by ufw's user rules (ufw-user-input / ufw6-user-input)
                chains = {d["chain"] for d in v["decided_by"]}
                want_chain = "ufw-user-input" if family == IPV4 else "ufw6-user-input"
                if want_chain not in chains:
                    problems.append(f"twinwall: {svc.proto}/{svc.port} {family}: decided_by does not name "
                                    f"{want_chain}: {v['decided_by']}")
            elif not v["decided_by"]:
                problems.append(f"twinwall: {svc.proto}/{svc.port} {family}: filtered without decided_by")
            if v["status"] == RESTRICTED:
                allowed = v["allowed_sources"]
                inside = topo.client_address(INSIDE, family)
                outside = topo.client_address(OUTSIDE, family)
                if not _covered(allowed, inside) or _covered(allowed, outside):
                    problems.append(f"twinwall: {svc.proto}/{svc.port} {family}: allowed_sources {allowed} "
                                    f"should hold {inside} and not {outside}")
    assert not problems, "\n".join(problems)

    gaps = {f["service"] for f in report["findings"] if f["id"] == "TW-FAMILY-GAP"}
    assert set(case.gaps) <= gaps, f"missing family gaps: {set(case.gaps) - gaps}"
    for f in report["findings"]:
        if f["family"] is not None:
            assert f["frontend"] and "ufw" in f["frontend"], f"finding without the ufw front-end: {f}"


def _covered(cidrs: Sequence[str], address: str) -> bool:
    import ipaddress

    a = ipaddress.ip_address(address)
    for c in cidrs:
        try:
            if a in ipaddress.ip_network(c, strict=False):
                return True
        except ValueError:
            continue
    return False
