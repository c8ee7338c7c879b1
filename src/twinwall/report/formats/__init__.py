"""One module per output format; see twinwall.report.registry."""
