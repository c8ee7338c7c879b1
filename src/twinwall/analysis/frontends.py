"""Which firewall front-end wrote a ruleset (ufw, firewalld, Docker...), so findings can name it.

Front-ends are recognised by the chain and table names they create, which they never let an
administrator choose:

=============  ==================================================================================
ufw            filter chains ``ufw-before-input``, ``ufw-user-input``... (IPv4) and ``ufw6-...``
               (IPv6). With ``IPV6=no`` in /etc/default/ufw, ip6tables gets no ufw6 chains at all
               (only DROP policies and a loopback accept): both families are then labelled
               "ufw (IPv4 only)".
firewalld      nftables table ``inet firewalld`` (also ``ip``/``ip6 firewalld``), or with the
               iptables backend the chains ``INPUT_direct``, ``INPUT_ZONES``, ``IN_<zone>``...
docker         chains ``DOCKER``, ``DOCKER-USER``, ``DOCKER-FORWARD``, ``DOCKER-ISOLATION-STAGE-1``
               ...; with Docker's nftables backend the table ``docker-bridges``
kube-proxy     chains ``KUBE-SERVICES``, ``KUBE-NODEPORTS``, ``KUBE-FORWARD``...; table
               ``kube-proxy`` in nftables mode
fail2ban       chains ``f2b-<jail>``; table ``f2b-table`` (nftables banaction)
csf            chains ``LOCALINPUT``, ``ALLOWIN``/``DENYIN``...
shorewall      the ``shorewall`` chain, zone-pair chains such as ``net-fw``/``fw-net``
libvirt        chains ``LIBVIRT_INP``, ``LIBVIRT_FWI``...; nftables table ``libvirt_network``
podman         netavark chains ``NETAVARK_FORWARD``...; nftables table ``netavark``
=============  ==================================================================================

A parser may also fill ``Ruleset.frontends``; those names are kept.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

UFW = "ufw"
UFW_V4_ONLY = "ufw (IPv4 only)"
FIREWALLD = "firewalld"
DOCKER = "docker"
KUBE_PROXY = "kube-proxy"
FAIL2BAN = "fail2ban"
CSF = "csf"
SHOREWALL = "shorewall"
LIBVIRT = "libvirt"
PODMAN = "podman"

# Order of the names in a family's list (the most telling first).
ORDER = (UFW, FIREWALLD, DOCKER, PODMAN, KUBE_PROXY, LIBVIRT, FAIL2BAN, CSF, SHOREWALL)

_FIREWALLD_CHAINS = {
    "INPUT_direct", "INPUT_ZONES", "INPUT_ZONES_SOURCE", "FORWARD_direct", "FORWARD_IN_ZONES",
    "FORWARD_OUT_ZONES", "OUTPUT_direct", "PREROUTING_ZONES", "POSTROUTING_ZONES",
}
# zone chains of the iptables backend: IN_public, IN_public_allow, FWDI_home_deny, PRE_work...
_FIREWALLD_ZONE = re.compile(r"^(IN|FWDI|FWDO|FWD|PRE|POST)_[A-Za-z0-9_-]+_(allow|deny|log|pre|post)$")
_DOCKER_CHAINS = {
    "DOCKER", "DOCKER-USER", "DOCKER-FORWARD", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-INTERNAL",
    "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2", "DOCKER-INGRESS",
}
_KUBE_CHAINS = {
    "KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-FORWARD", "KUBE-POSTROUTING", "KUBE-MARK-MASQ",
    "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL", "KUBE-PROXY-CANARY", "KUBE-FIREWALL",
}
_CSF_CHAINS = {"LOCALINPUT", "LOCALOUTPUT", "ALLOWIN", "ALLOWOUT", "DENYIN", "DENYOUT", "LOGDROPIN"}
_SHOREWALL_CHAINS = {"shorewall", "net-fw", "fw-net", "net2fw", "fw2net", "net-all", "all-all"}
_LIBVIRT_CHAINS = {"LIBVIRT_INP", "LIBVIRT_OUT", "LIBVIRT_FWI", "LIBVIRT_FWO", "LIBVIRT_FWX", "LIBVIRT_PRT"}


def _table_name(key: str) -> str:
    """``"inet firewalld"`` or ``"firewalld"`` -> ``"firewalld"``."""
    return key.split()[-1] if key.strip() else key


def _names(rulesets: Iterable) -> Tuple[Set[str], Set[str]]:
    tables: Set[str] = set()
    chains: Set[str] = set()
    for rs in rulesets:
        for key, table in rs.tables.items():
            tables.add(_table_name(key))
            chains.update(table.chains)
    return tables, chains


def frontends_of(rulesets: Sequence) -> List[str]:
    """The front-ends whose chains or tables occur in one family's rulesets."""
    tables, chains = _names(rulesets)
    found: Set[str] = set()
    for rs in rulesets:
        for name in getattr(rs, "frontends", None) or ():
            found.add(name)
    if any(c.startswith(("ufw-", "ufw6-")) for c in chains):
        found.add(UFW)
    if "firewalld" in tables or chains & _FIREWALLD_CHAINS or any(_FIREWALLD_ZONE.match(c) for c in chains):
        found.add(FIREWALLD)
    if chains & _DOCKER_CHAINS or "docker-bridges" in tables:
        found.add(DOCKER)
    if chains & _KUBE_CHAINS or "kube-proxy" in tables:
        found.add(KUBE_PROXY)
    if any(c.startswith("f2b-") for c in chains) or "f2b-table" in tables:
        found.add(FAIL2BAN)
    if "LOCALINPUT" in chains or {"ALLOWIN", "DENYIN"} <= chains or len(chains & _CSF_CHAINS) >= 3:
        found.add(CSF)
    if "shorewall" in chains or len(chains & _SHOREWALL_CHAINS) >= 2:
        found.add(SHOREWALL)
    if chains & _LIBVIRT_CHAINS or "libvirt_network" in tables:
        found.add(LIBVIRT)
    if any(c.startswith("NETAVARK") for c in chains) or "netavark" in tables:
        found.add(PODMAN)
    ordered = [n for n in ORDER if n in found]
    ordered += sorted(found.difference(ORDER))
    return ordered


def frontend_of_chain(chain: str) -> Optional[str]:
    """The front-end that writes NAT rules into a chain of this name, by the prefix it puts on
    every chain it makes, per-service ones included (``DOCKER-...``, ``KUBE-SEP-...``)."""
    if chain.startswith("DOCKER"):
        return DOCKER
    if chain.startswith("KUBE-"):
        return KUBE_PROXY
    return None


def writer_of_chain(chain: str) -> Optional[str]:
    """The front-end that writes a chain of this name, by the names and prefixes it gives its
    chains: ufw, firewalld (iptables backend), Docker (DOCKER-USER included: Docker creates it,
    the admin fills it), kube-proxy, fail2ban. None: nobody's but the admin's."""
    if chain.startswith(("ufw-", "ufw6-")):
        return UFW
    if chain in _FIREWALLD_CHAINS or _FIREWALLD_ZONE.match(chain):
        return FIREWALLD
    if chain.startswith("f2b-"):
        return FAIL2BAN
    return frontend_of_chain(chain)


def detect_frontends(rulesets: Dict[str, Sequence]) -> Dict[str, List[str]]:
    """Per family, the names of the front-ends recognised in its rulesets.

    ``rulesets`` is ``{"ipv4": [Ruleset], "ipv6": [Ruleset]}`` (see ``twinwall.loader``). When ufw
    manages IPv4 but ip6tables holds no ufw6 chain (``IPV6=no``), both families say
    "ufw (IPv4 only)": the IPv6 firewall is not ufw's, whatever ``ufw status`` shows. That needs
    both families: an audit that loads one family at a time calls :func:`frontends_of` per
    family and then :func:`combine_frontends`."""
    per_family = {family: frontends_of(rss) for family, rss in rulesets.items()}
    return combine_frontends(per_family, {family: bool(rss) for family, rss in rulesets.items()})


def combine_frontends(per_family: Dict[str, List[str]], read: Dict[str, bool]) -> Dict[str, List[str]]:
    """Apply what only both families together tell: ufw with ``IPV6=no``.

    ``per_family``: :func:`frontends_of` of each family; ``read``: whether any ruleset of the
    family was read (an IPv6 ruleset that was not read at all says nothing about ufw)."""
    out = {family: list(names) for family, names in per_family.items()}
    v4 = out.get("ipv4") or []
    v6 = out.get("ipv6") or []
    if UFW in v4 and UFW not in v6 and read.get("ipv6"):
        for family in ("ipv4", "ipv6"):
            if family in out:
                out[family] = [UFW_V4_ONLY] + [n for n in out[family] if n != UFW]
    return out
