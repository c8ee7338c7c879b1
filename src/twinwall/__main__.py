from twinwall.cli import entry

entry()
