"""pytest wiring for the network-namespace tests in this directory.

* Every test here gets the ``netns`` marker (``pytest -m "not netns"`` leaves them out).
* They are all skipped, with the reason, when namespaces cannot be used here (not root, no
  ``ip netns``, no iptables-restore that works inside a namespace). CI runs as root: they run.
* ``topology`` fixture: a fresh :class:`harness.Topology` (server + "inside" + "outside"), removed
  after the test whatever happens.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `import harness` from the tests, whatever pytest's import mode
    sys.path.insert(0, str(HERE))

import harness  # noqa: E402

_reason: Optional[str] = None
_checked = False


def _unavailable() -> Optional[str]:
    global _reason, _checked
    if not _checked:
        _reason = harness.netns_unavailable_reason()
        _checked = True
    return _reason


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.netns)


@pytest.fixture(autouse=True)
def _require_netns() -> None:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def topology() -> Iterator[harness.Topology]:
    with harness.Topology() as topo:
        yield topo
