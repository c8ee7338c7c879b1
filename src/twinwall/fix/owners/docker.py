"""Docker: published ports are decided in FORWARD after Docker's DNAT, in chains Docker owns and
rewrites; the only place for an admin's rule is DOCKER-USER, in both families. The rules go at
its top (before Docker's RETURN) as ``iptables -I DOCKER-USER`` commands, undone with ``-D``;
Docker's own chains are never touched and never saved. What the commands leave loaded is the
family's iptables-save text with the rules inserted, which the proof and the lockout guard read.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from twinwall.apply.candidate import Candidate
from twinwall.fix.model import TOOL, Change, Refused
from twinwall.fix.owners.iptables import edit_family, family_text, summary
from twinwall.model import FAMILIES


class DockerOwner:
    name = "docker"

    def render(self, snapshot, changes: Sequence[Change]) -> Candidate:
        texts: Dict[str, str] = {}
        do: List[List[str]] = []
        undo: List[List[str]] = []
        for family in FAMILIES:
            mine = [c for c in changes if c.family == family]
            if not mine:
                continue
            if any(c.chain != "DOCKER-USER" or c.policies or c.replace_table for c in mine):
                raise Refused("on a Docker host only DOCKER-USER is written: plan the other changes separately")
            text = family_text(snapshot, family)
            if text is None or ":DOCKER-USER" not in text:
                raise Refused(f"{family}: no DOCKER-USER chain (ip6tables has it only on newer Docker)")
            texts[family], placed = edit_family(text, mine)
            tool = TOOL[family]
            for i, ch in enumerate(mine):
                cmds = []
                for pos, line in placed[i]:
                    args = line.split(" ", 2)[2]
                    cmds.append(f"{tool} -I DOCKER-USER {pos} {args}")
                    do.append([tool, "-I", "DOCKER-USER", str(pos), *_argv(args)])
                    undo.insert(0, [tool, "-D", "DOCKER-USER", *_argv(args)])
                ch.owner, ch.commands = self.name, cmds
                ch.rules_text = "\n".join(line for _, line in placed[i])
        return Candidate("commands", ipv4=texts.get("ipv4"), ipv6=texts.get("ipv6"), commands=do,
                         undo_commands=undo, summary=summary(changes))


def _argv(args: str) -> List[str]:
    import shlex

    return shlex.split(args)


OWNER = DockerOwner()
