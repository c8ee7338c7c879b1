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
