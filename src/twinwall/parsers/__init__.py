"""Parsers: rule source text -> twinwall.ruleset model."""
