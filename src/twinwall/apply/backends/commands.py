"""A front-end's own commands (ufw, firewall-cmd): the front-end keeps owning its rules.

``commands`` make the change, ``undo_commands`` revert it. A failing command undoes what ran.
What the commands will produce is still proved and guarded through the candidate's predicted
``ipv4``/``ipv6``/``nft`` texts (the transaction's lockout guard reads those).
"""

from __future__ import annotations

from typing import Dict, List

from twinwall.apply.backends import Backend, first_error_line, run_tool
from twinwall.errors import InputError, TwinwallError


class CommandFailed(TwinwallError):
    pass


class CommandsBackend(Backend):
    kind = "commands"

    def __init__(self, candidate):
        super().__init__(candidate)
        if not candidate.commands:
            raise InputError("the commands candidate holds no command")
        for cmd in list(candidate.commands) + list(candidate.undo_commands):
            if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
                raise InputError(f"a candidate command must be a list of strings, not {cmd!r}")

    def families(self) -> List[str]:
        fams = [f for f in ("ipv4", "ipv6") if getattr(self.candidate, f) is not None]
        return fams or ["ipv4", "ipv6"]

    def _run_all(self, commands: List[List[str]], stop_on_error: bool) -> List[str]:
        errors = []
        for cmd in commands:
            res = run_tool(cmd)
            if res.returncode != 0:
                errors.append(f"{' '.join(cmd)}: {first_error_line(res)}")
                if stop_on_error:
                    break
        return errors

    def load(self, saved: Dict[str, str], fail_hook=None) -> None:
        if fail_hook:
            fail_hook("commands")
        errors = self._run_all(self.candidate.commands, stop_on_error=True)
        if errors:
            # the whole undo, as the planner wrote it: an undo of a command that never ran
            # fails harmlessly (`iptables -D`, `ufw delete` of a rule that is not there)
            undo = self._run_all(self.candidate.undo_commands, stop_on_error=False)
            raise CommandFailed(f"{errors[0]}; the undo commands ran" +
                                (f" ({len(undo)} refused, as for commands that never ran: {undo[0]})" if undo else ""))

    def restore(self, saved: Dict[str, str]) -> None:
        errors = self._run_all(self.candidate.undo_commands, stop_on_error=False)
        if errors:
            raise CommandFailed("; ".join(errors))

    def persist(self, root: str) -> List[str]:
        # ufw writes its rules files as each command runs; firewalld's runtime changes become
        # permanent only now
        if any(cmd[0].endswith("firewall-cmd") for cmd in self.candidate.commands):
            errors = self._run_all([["firewall-cmd", "--runtime-to-permanent"]], stop_on_error=True)
            if errors:
                raise CommandFailed(errors[0])
            return ["firewalld permanent configuration"]
        return []
