"""Which firewall front-end wrote a ruleset (ufw, firewalld, Docker...), so findings can name it.
(Filled in by the front-ends work.)"""

from __future__ import annotations

from typing import Dict, List, Sequence


def detect_frontends(rulesets: Dict[str, Sequence]) -> Dict[str, List[str]]:
    """Per family, the names of the front-ends recognised in its rulesets."""
    return {family: [] for family in rulesets}
