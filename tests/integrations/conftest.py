"""pytest wiring for the integration tests (Ansible, OpenSCAP, the single-file build).

They build real hosts in network namespaces (tests/netns/harness.py), so they need root and
``ip netns``; each also needs the outside tool it proves twinwall with (ansible-playbook, sshd,
oscap). Outside CI a missing tool skips the test with the reason; under CI (``CI=true``, as
.ci/run sets it) it fails, so that CI never passes by skipping the proof.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NETNS = HERE.parent / "netns"
for p in (HERE, NETNS):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import harness  # noqa: E402

_netns_reason = None
_checked = False


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(reason):
    """Skip (outside CI) or fail (in CI) when ``reason`` is not None."""
    if reason:
        if in_ci():
            pytest.fail(f"CI=true but the integration test cannot run: {reason}")
        pytest.skip(reason)


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None and not os.path.exists(t)]
    require(f"needs {', '.join(missing)} (see .ci/run's apt-get line)" if missing else None)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _require_netns() -> None:
    global _netns_reason, _checked
    if not _checked:
        _netns_reason = harness.netns_unavailable_reason()
        _checked = True
    require(_netns_reason)
