"""twinwall: keep a host's IPv4 and IPv6 firewalls twins."""

__version__ = "0.1.0"
