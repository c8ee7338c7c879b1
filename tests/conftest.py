"""Suite-wide settings.

Hypothesis's per-example deadline is a timing assertion: on a loaded 2-core CI machine it fails
property tests whose properties hold. Speed is measured by the benchmarks under bench/, so the
deadline is off everywhere; the example counts stay as each test sets them."""

from hypothesis import settings

settings.register_profile("twinwall", deadline=None)
settings.load_profile("twinwall")
