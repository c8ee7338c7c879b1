"""``twinwall diff``: every traffic class that IPv4 and IPv6 treat differently, and the change
between two snapshots of one host.

* ``compare``: the family comparison (each family walked at role level, the outcomes overlaid
  and the regions where the verdicts differ collected);
* ``describe``: the regions as JSON fields and one-line text;
* ``change``: before / after, two snapshots of one host compared per family.

Nothing is imported here, so each part loads only what it needs.
"""
