"""`twinwall fix`: from findings to a proved remediation plan.

* ``strategies/``: one module per strategy (mirror, accept-new, close, block-ipv6, baseline,
  egress). A strategy turns a finding into :class:`~twinwall.fix.model.Change` values: abstract
  rules (:class:`~twinwall.fix.model.RuleSpec`) and where they must sit, nothing owner-specific.
* ``owners/``: one module per owner of the rules (plain iptables, native nft, ufw, firewalld,
  Docker). An owner renders changes as the commands its admin would run and builds the
  :class:`twinwall.apply.candidate.Candidate` the transaction loads.
* ``proof``: the candidate is audited and diffed by twinwall's own analysis before anything is
  touched; a change whose proof fails is refused with the reason.
* ``planner``: ties them together; ``render``: table, script and ``twinwall.fix/1`` JSON.
"""
