"""Services published through NAT (Docker -p, kube NodePorts...): reachable even when INPUT
drops the port, because DNAT sends them through FORWARD instead. (Filled in by the front-ends
work: for now no published service is reported.)"""

from __future__ import annotations

from typing import Dict, List, Sequence


def published_services(contexts: Dict, outcomes: Dict[str, Sequence]) -> List:
    """ServiceReports for ports that nat PREROUTING rewrites to other addresses."""
    return []
