"""Docker: published ports are decided in FORWARD after Docker's DNAT, in chains Docker owns and
rewrites; the only place for an admin's rule is DOCKER-USER, in both families. A rule there
sees the container's address and port, not the published one (``--ctorigdstport`` does), which
twinwall's planner does not write yet: such changes are refused with that reason."""

from __future__ import annotations

from typing import Sequence

from twinwall.fix.model import Change, Refused


class DockerOwner:
    name = "docker"

    def render(self, snapshot, changes: Sequence[Change]):
        raise Refused("published through Docker: the rule belongs in DOCKER-USER of both families "
                      "(-m conntrack --ctorigdstport PORT); not planned automatically")


OWNER = DockerOwner()
