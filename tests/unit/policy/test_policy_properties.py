"""Property tests: for random policy files, compile -> parse (twinwall's parsers) -> evaluate
(twinwall's evaluator) gives every packet the policy's verdict, per family, for the iptables
target (and, as root, for both targets as the tools print them back from a scratch network
namespace); and adopt(compile(p)) decides every new connection as p does."""

from __future__ import annotations


import pytest
from hypothesis import HealthCheck, given, settings

from twinwall.policy.adopt import adopt_rulesets
from twinwall.policy.check import check_policy, compiled_texts, parse_texts, scratch_unavailable
from twinwall.policy.lower import lower
from twinwall.policy.model import parse_policy

from .strategies import policies


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_compiled_iptables_decide_as_the_policy_says(text):
    result = check_policy(parse_policy(text), ("iptables",), scratch=False)
    assert not result.mismatches, "\n".join(map(str, result.mismatches)) + "\n" + text


@pytest.mark.skipif(scratch_unavailable() is not None, reason=f"{scratch_unavailable()}")
@settings(max_examples=12, suppress_health_check=[HealthCheck.too_slow])
@given(policies(max_rules=4))
def test_both_targets_as_loaded_decide_as_the_policy_says(text):
    result = check_policy(parse_policy(text), ("iptables", "nft"), scratch=True)
    assert not result.mismatches, "\n".join(map(str, result.mismatches)) + "\n" + text
    assert any(p.startswith("nft (loaded") for p in result.proved)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_adopt_of_compiled_policy_is_equivalent(text):
    lowered = lower(parse_policy(text))
    original = parse_texts("iptables", compiled_texts(lowered, "iptables"))
    adopted = adopt_rulesets(original)
    assert adopted.equivalent, "\n".join(adopted.differences) + "\n" + text + "\n" + adopted.text
    # and the adopted file proves as a policy of its own
    again = check_policy(parse_policy(adopted.text), ("iptables",), scratch=False)
    assert not again.mismatches


@pytest.mark.skipif(scratch_unavailable() is not None, reason=f"{scratch_unavailable()}")
@settings(max_examples=8, suppress_health_check=[HealthCheck.too_slow])
@given(policies(max_rules=4))
def test_adopt_of_nft_as_loaded_is_equivalent(text):
    # adopt reads the parsed model, so an nftables ruleset (nft -j of the compiled inet table,
    # loaded in a scratch namespace) round-trips like an iptables one
    from twinwall.policy.check import loaded_rulesets

    lowered = lower(parse_policy(text))
    adopted = adopt_rulesets(loaded_rulesets("nft", compiled_texts(lowered, "nft")))
    assert adopted.equivalent, "\n".join(adopted.differences) + "\n" + text
