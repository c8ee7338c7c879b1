"""The four vocabularies twinwall's layers share, each written once: rule actions, verdicts,
service statuses and finding severities.

Each word is a ``str`` (an Enum with a str mixin whose str, format and repr are its value): it
equals, hashes, sorts, prints and serialises to JSON exactly like the plain string it replaces,
so ``Status.OPEN == "open"`` and documents read back from JSON compare with it directly.
"""

from __future__ import annotations

from enum import Enum


class Word(str, Enum):
    """One word of a vocabulary; behaves as its value everywhere a str is expected."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        # Python 3.12 formats a mixed-in Enum member as "Class.NAME": keep the value
        return str.__format__(str.__str__(self), spec)

    __repr__ = str.__repr__


class Action(Word):
    """What the evaluator does with the packets a rule matches."""

    ACCEPT = "ACCEPT"
    DROP = "DROP"
    REJECT = "REJECT"
    RETURN = "RETURN"
    JUMP = "JUMP"
    GOTO = "GOTO"
    CONTINUE = "CONTINUE"  # LOG, NFLOG, MARK, counters...: evaluation goes on
    DNAT = "DNAT"  # nat: destination rewritten (to ``nat_to``); ends the nat chain
    REDIRECT = "REDIRECT"  # nat: to a local port; ends the nat chain
    NAT_DONE = "NAT_DONE"  # SNAT/MASQUERADE/NETMAP...: ends the nat chain, destination unchanged
    NOTRACK = "NOTRACK"  # raw: the packet becomes UNTRACKED
    QUEUE = "QUEUE"  # handed to user space: verdict unknown
    UNKNOWN = "UNKNOWN"  # a target twinwall does not model: treated as non-terminal, named


class Verdict(Word):
    """The final verdict of a walk's outcome."""

    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"
    FORWARD = "forward"  # rewritten (DNAT) to an address that is not the host's: leaves INPUT


class Status(Word):
    """A service's status in one family: can a new connection from elsewhere reach it?"""

    OPEN = "open"
    RESTRICTED = "restricted"
    FILTERED = "filtered"
    LOCAL_ONLY = "local-only"
    NOT_BOUND = "not-bound"
    DISABLED = "disabled"
    UNKNOWN = "unknown"  # no ruleset could be read for this family


class Severity(Word):
    """A finding's severity, lowest first (the order thresholds compare in)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"
