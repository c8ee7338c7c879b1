"""Changing a host's firewall safely: one transaction (validate, lockout guard, rollback armed
before anything changes, atomic load, confirm, persist after confirm), one backend per ruleset
kind. ``candidate`` is what the fixer and the policy compiler hand to it."""
