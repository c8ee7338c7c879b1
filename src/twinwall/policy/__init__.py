"""``twinwall policy``: one TOML file for both families, compiled for iptables-restore or one
nft ``inet`` table, proved with twinwall's own parsers and evaluator, adopted from the rules a
host already has. Layout: ``model`` (file -> typed Policy), ``meaning`` (what the policy says
about every packet, per family), ``generators`` (one per target), ``check`` (the proof),
``adopt`` (rules -> policy)."""
