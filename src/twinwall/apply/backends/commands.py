"""A front-end's own commands (ufw, firewall-cmd): the front-end keeps owning its rules.

``commands`` make the change, ``undo_commands`` revert it. A failing command undoes what ran.
What the commands will produce is still proved and guarded through the candidate's predicted
``ipv4``/``ipv6``/``nft`` texts (the transaction's lockout guard reads those).

ufw has no runtime-only change: each command rewrites its rules files, which a boot loads. So
that a reboot before ``twinwall confirm`` is a rollback (as for every other backend), the files
ufw wrote go aside (``user.rules.twinwall-pending``) and the files as they were go back at once;
confirm puts the new ones in place, and a rollback puts them back first so that ufw's undo
commands find the rules they delete.
"""

from __future__ import annotations

import os
from typing import Dict, List

from twinwall.apply.backends import Backend, first_error_line, run_tool
from twinwall.apply.persist import write_synced
from twinwall.errors import InputError, TwinwallError


class CommandFailed(TwinwallError):
    pass


UFW_FILES = ("/etc/ufw/user.rules", "/etc/ufw/user6.rules")  # what ufw's rule commands rewrite
PENDING = ".twinwall-pending"


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


class CommandsBackend(Backend):
    kind = "commands"

    def __init__(self, candidate):
        super().__init__(candidate)
        if not candidate.commands:
            raise InputError("the commands candidate holds no command")
        for cmd in list(candidate.commands) + list(candidate.undo_commands):
            if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
                raise InputError(f"a candidate command must be a list of strings, not {cmd!r}")

    def _ufw(self) -> bool:
        return any(os.path.basename(cmd[0]) == "ufw" for cmd in self.candidate.commands)

    def save(self) -> Dict[str, str]:
        if not self._ufw():
            return {}
        return {"ufw-" + os.path.basename(p): _read(p) for p in UFW_FILES if os.path.exists(p)}

    def _set_aside(self, saved: Dict[str, str]) -> None:
        """The files ufw just wrote go aside; the ones a boot should load (as before) go back."""
        for path in UFW_FILES:
            old = saved.get("ufw-" + os.path.basename(path))
            if old is None or not os.path.exists(path):
                continue
            new = _read(path)
            if new != old:
                # (whole files: ufw finds the old or the new one, never half)
                write_synced(path + PENDING, new.encode(), mode_of=path)
                write_synced(path, old.encode())
            elif os.path.exists(path + PENDING):
                os.remove(path + PENDING)  # left by a transaction a reboot ended: not this one's

    def _take_back(self) -> List[str]:
        """The set-aside files in place: what ufw has loaded is what its files say again."""
        done = []
        for path in UFW_FILES:
            if os.path.exists(path + PENDING):
                os.replace(path + PENDING, path)
                done.append(path)
        return done

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
        if self._ufw():
            self._set_aside(saved)

    def restore(self, saved: Dict[str, str]) -> None:
        if self._ufw():
            self._take_back()  # ufw's undo deletes rules it must find in its files
        errors = self._run_all(self.candidate.undo_commands, stop_on_error=False)
        if errors:
            raise CommandFailed("; ".join(errors))

    def persist(self, root: str) -> List[str]:
        # ufw's new rules files were set aside at load; firewalld's runtime changes become
        # permanent only now
        if self._ufw():
            return [p + " (ufw)" for p in self._take_back()]
        if any(cmd[0].endswith("firewall-cmd") for cmd in self.candidate.commands):
            errors = self._run_all([["firewall-cmd", "--runtime-to-permanent"]], stop_on_error=True)
            if errors:
                raise CommandFailed(errors[0])
            return ["firewalld permanent configuration"]
        return []
