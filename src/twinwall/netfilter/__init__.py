"""The model floor: what a netfilter ruleset is, independent of how it was read or analysed.

* ``packetset``: sets of packets as boxes of ranges (addresses, ports, protocols, conntrack
  state, interfaces, ...), their algebra and their text;
* ``interfaces``: interface names and wildcards as classes of one universe (bit masks);
* ``ruleset``: the typed ruleset (rulesets, tables, chains, compiled rules, decisions).

Parsers build these, analysis walks them. Nothing here imports anything of twinwall but the
model and errors (tests/unit/test_layers.py checks it).
"""
