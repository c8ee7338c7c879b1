"""audit.may_log: whether a family's dumps can hold a logging rule, read off their text."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from twinwall.analysis.audit import may_log
from twinwall.model import RulesetText


@pytest.mark.parametrize("body, logs", [
    ("-A INPUT -s 192.0.2.1/32 -j DROP\n" * 3, False),
    ("-A INPUT -j LOG --log-prefix x\n", True),
    ("-A INPUT -j NFLOG\n", True),
    ("-A INPUT -j ULOG\n", True),
    ("-A INPUT -m comment --comment LOG -j DROP\n", False),  # (the word, but no logging target)
    ("-A LOGDROP -j DROP\n", False),
])
def test_may_log_finds_a_logging_target_in_an_iptables_dump(body: str, logs: bool) -> None:
    text = RulesetText("ipv4", "iptables-save", "nft", "t", "*filter\n" + body + "COMMIT\n")
    snapshot = SimpleNamespace(rulesets_for=lambda family: [text])
    assert may_log(snapshot, "ipv4") is logs
