"""Errors the user can act on. The CLI prints their message on one line and exits 2."""


class TwinwallError(Exception):
    """Base class: anything raised as this reaches the user as 'twinwall: <message>'."""


class InputError(TwinwallError):
    """A file or argument the user gave cannot be used (bad syntax, wrong format, missing)."""


class CollectionError(TwinwallError):
    """Facts about the live host could not be gathered (missing tool, permission)."""
