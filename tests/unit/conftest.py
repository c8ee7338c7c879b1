"""tests/unit mirrors src/twinwall in subfolders; the helpers the tests share (_snapshots,
parsers/_iptables_forms) are imported by module name from any of them."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
for path in (HERE, os.path.join(HERE, "parsers")):
    if path not in sys.path:
        sys.path.insert(0, path)
