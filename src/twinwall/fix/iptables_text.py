"""An iptables-save dump as editable text: tables, chains with policies, rule lines in order.

The fixer edits what the kernel printed (``iptables-save``), line for line, and writes it back
as ``iptables-restore`` input: rules it does not touch stay exactly as they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from twinwall.errors import InputError

from twinwall.apply.backends.iptables import BUILTIN_CHAINS as BUILTIN
_COUNTERS = re.compile(r"^\[\d+:\d+\]\s+")


@dataclass
class TableText:
    name: str
    policies: Dict[str, str] = field(default_factory=dict)  # chain -> policy ("-" for user chains)
    rules: Dict[str, List[str]] = field(default_factory=dict)  # chain -> "-A CHAIN ..." lines

    def chain(self, name: str) -> List[str]:
        if name not in self.policies:
            self.policies[name] = "ACCEPT" if name in BUILTIN.get(self.name, ()) else "-"
        return self.rules.setdefault(name, [])

    def render(self) -> str:
        out = [f"*{self.name}"]
        out += [f":{c} {p} [0:0]" for c, p in self.policies.items()]
        for c in self.policies:
            out += self.rules.get(c, [])
        out.append("COMMIT")
        return "\n".join(out) + "\n"


@dataclass
class SaveText:
    tables: Dict[str, TableText] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "SaveText":
        st = cls()
        cur: Optional[TableText] = None
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("*"):
                cur = st.tables.setdefault(line[1:], TableText(line[1:]))
            elif line == "COMMIT":
                cur = None
            elif cur is None:
                raise InputError(f"iptables-save text line {n} is outside a table: {line}")
            elif line.startswith(":"):
                parts = line[1:].split()
                cur.policies[parts[0]] = parts[1] if len(parts) > 1 else "-"
                cur.rules.setdefault(parts[0], [])
            else:
                line = _COUNTERS.sub("", line)
                if not line.startswith("-A "):
                    raise InputError(f"iptables-save text line {n} is not a rule: {line}")
                chain = line.split()[1]
                cur.chain(chain).append(line)
        return st

    def table(self, name: str) -> TableText:
        t = self.tables.get(name)
        if t is None:
            t = self.tables[name] = TableText(name)
            for c in BUILTIN.get(name, ()):
                t.chain(c)
        return t

    def render(self) -> str:
        return "".join(t.render() for t in self.tables.values())
