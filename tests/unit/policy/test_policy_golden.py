"""Golden files per generator: tests/fixtures/policy/NAME/policy.toml -> rules.v4, rules.v6
(iptables) and twinwall.nft (nft). Regenerate after a deliberate change with
TWINWALL_REGEN_GOLDEN=1 (then read the diff: it is the change users get)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from twinwall.policy.check import check_policy, compiled_texts
from twinwall.policy.lower import lower
from twinwall.policy.model import load_policy

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "policy"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "policy.toml").exists())
REGEN = os.environ.get("TWINWALL_REGEN_GOLDEN") == "1"


def outputs(case: str):
    lowered = lower(load_policy(str(FIXTURES / case / "policy.toml")))
    ipt = compiled_texts(lowered, "iptables", "policy.toml")
    return {"rules.v4": ipt["ipv4"], "rules.v6": ipt["ipv6"],
            "twinwall.nft": compiled_texts(lowered, "nft", "policy.toml")}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["rules.v4", "rules.v6", "twinwall.nft"])
def test_golden(case, name):
    got = outputs(case)[name]
    path = FIXTURES / case / name
    if REGEN:
        path.write_text(got)
    assert path.exists(), f"{path} missing: run with TWINWALL_REGEN_GOLDEN=1"
    assert got == path.read_text()


@pytest.mark.parametrize("case", CASES)
def test_golden_policies_prove(case):
    result = check_policy(load_policy(str(FIXTURES / case / "policy.toml")), ("iptables",), scratch=False)
    assert not result.mismatches, "\n".join(map(str, result.mismatches))
