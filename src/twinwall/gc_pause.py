"""The cyclic garbage collector paused around work that allocates much and frees little.

Compiling and walking a 100k-rule ruleset allocates millions of long-lived tuples and almost no
reference cycles, and importing the analysis creates thousands of functions and classes: the
collector's repeated passes over them cost up to a third of a run and free nothing. Reference
counting still frees everything."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector off for the duration, and back on after if it was on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            # what survived goes straight to the oldest generation (freeze, then unfreeze):
            # otherwise the first young collections after this would still scan all of it
            gc.freeze()
            gc.unfreeze()
            gc.enable()


# Objects a command is done with, kept from being freed when the process ends right after the
# command (cli.entry leaves by os._exit): freeing a 100k-rule family's rulesets and walk one
# object at a time costs a twentieth of a second on the way out, where nobody waits for it.
# Only entry() turns it on: a library caller, or a test calling main(), frees them as usual.
_kept: list = []
_keep = False


def free_at_exit() -> None:
    """The process ends (os._exit) once the command is done: keep_until_exit keeps from now on."""
    global _keep
    _keep = True


def keep_until_exit(*objects: object) -> None:
    """Keep ``objects`` alive until the process ends, where free_at_exit was called (else
    nothing: they are freed when their last reference goes, as usual)."""
    if _keep:
        _kept.append(objects)
