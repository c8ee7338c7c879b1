"""Parsers: rule source text -> twinwall.netfilter.ruleset model."""
