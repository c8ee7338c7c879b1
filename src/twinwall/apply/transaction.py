"""One firewall change as a transaction that knows how to undo itself.

``apply(candidate)`` validates the candidate, refuses it if it would cut the admin's own
connections (``lockout``), saves the current rules and arms a rollback *before* anything changes
(a transient systemd timer when systemd is PID 1 and can reach the network namespace, else a
detached watchdog in its own session that ignores SIGHUP), loads the candidate atomically (one
restore per family, both or none; one ``nft -f``), and returns the transaction *pending*.
``confirm`` stops the rollback and only then persists (``persist``); ``rollback`` reverts at
once; an unconfirmed transaction reverts itself at its deadline, whatever happened to the
process or the terminal that started it.

State (``twinwall.apply.state``) lives in ``state_dir`` (``$TWINWALL_STATE_DIR`` or
/var/lib/twinwall); one transaction may be pending at a time; every state change happens under
its lock (flock).
"""

from __future__ import annotations

import os
import time
from typing import Optional

from twinwall.apply import state
from twinwall.apply.candidate import Candidate
from twinwall.apply.state import (  # noqa: F401 (the transaction's names, as callers import them)
    CONFIRMED, DEFAULT_STATE_DIR, FAILED, PENDING, ROLLED_BACK, STATES, LockoutRefused, Transaction,
    TransactionError, default_root, default_state_dir, expire, load_transaction)
from twinwall.errors import InputError, TwinwallError

# --------------------------------------------------------------------------------------------
# the transaction


def apply(candidate: Candidate, *, confirm_timeout: float = 60.0, allow_lockout: bool = False,
          state_dir: Optional[str] = None, root: Optional[str] = None,
          persist: bool = True) -> Transaction:
    """Validate, guard, arm the rollback, load; returns the transaction pending (or, when the
    candidate is already what is loaded, ``changed=False``, confirmed, nothing armed)."""
    from twinwall.apply import lockout, watchdog
    from twinwall.apply.backends import make_backend

    if not confirm_timeout or confirm_timeout <= 0:
        raise InputError(f"--confirm-timeout must be more than 0 seconds, not {confirm_timeout}")
    state_dir = default_state_dir(state_dir)
    root = default_root(root)
    backend = make_backend(candidate)
    backend.validate()  # 1. the kernel's own check, nothing changed yet
    with state.locked(state_dir):
        last = state.find(state_dir, None) if state.last_id(state_dir) else None
        if last is not None and last.state == PENDING:
            if watchdog.alive(last.rollback_by, last.id) or (last.deadline or 0) > time.time():
                raise TransactionError(f"transaction {last.id} is pending until its confirm or rollback "
                                       f"(twinwall confirm {last.id} / twinwall rollback {last.id}): one at a time")
            # its rollback is gone and its deadline past (the host rebooted): nothing is pending
            last.state, last.message = FAILED, "its rollback never ran (the host rebooted before the deadline?)"
            state.save(state_dir, last)
        saved = backend.save()
        now = time.time()
        tx = Transaction(state.new_id(), PENDING, now, None, backend.families(), candidate.summary,
                         backend.kind, persist=persist, root=root)
        if backend.already_loaded(saved):
            tx.state, tx.changed = CONFIRMED, False
            tx.message = "the candidate is already loaded: nothing changed, no rollback armed"
            os.makedirs(state.tx_dir(state_dir, tx.id))
            state.save(state_dir, tx)
            state.write_text(os.path.join(state_dir, "last"), tx.id + "\n")
            return tx
        if not allow_lockout:  # 2. the admin's own connections, on the candidate's rules
            connections, problems = lockout.guard(backend, saved)
            if problems:
                raise LockoutRefused(problems[0] + "; nothing changed (--allow-lockout to apply anyway)")
            tx.connections = [f"{c} ({c.family})" for c in connections]
        # 3. backups and the rollback, before anything changes
        d = state.tx_dir(state_dir, tx.id)
        os.makedirs(d, mode=0o700)
        state.write_json(os.path.join(d, "candidate.json"), candidate.to_dict())
        for name, text in saved.items():
            path = os.path.join(d, f"backup.{name}")
            state.write_text(path, text)
            tx.backups[name] = path
        tx.deadline = now + confirm_timeout
        state.save(state_dir, tx)
        state.write_text(os.path.join(state_dir, "last"), tx.id + "\n")
        tx.rollback_by = watchdog.arm(state_dir, tx.id, tx.deadline - time.time(), os.path.join(d, "rollback.log"))
        state.save(state_dir, tx)
        try:  # 4. all or nothing
            backend.load(saved)
        except TwinwallError as exc:
            tx.state, tx.message = FAILED, str(exc)
            state.save(state_dir, tx)
            watchdog.disarm(tx.rollback_by, tx.id)
            raise TransactionError(f"nothing applied: {exc}") from None
        tx.message = (f"loaded; rolls back at {state.utc(tx.deadline)} unless confirmed "
                      f"(twinwall confirm {tx.id})")
        state.save(state_dir, tx)
        return tx


def _pending(state_dir: str, txid: Optional[str]) -> Transaction:
    tx = state.find(state_dir, txid)
    if tx.state != PENDING:
        raise InputError(f"transaction {tx.id} is {tx.state}, not pending" + (f" ({tx.message})" if tx.message else ""))
    return tx


def confirm(txid: Optional[str] = None, *, state_dir: Optional[str] = None,
            root: Optional[str] = None) -> Transaction:
    """Mark the pending transaction confirmed, stop its rollback, then persist."""
    from twinwall.apply import watchdog
    from twinwall.apply.backends import make_backend

    state_dir = default_state_dir(state_dir)
    with state.locked(state_dir):
        tx = _pending(state_dir, txid)
        tx.state, tx.message = CONFIRMED, f"confirmed at {state.utc(time.time())}"
        state.save(state_dir, tx)
        watchdog.disarm(tx.rollback_by, tx.id)
        if tx.persist:
            root = root or (tx.root if tx.root != "/" else None)
            try:
                tx.persisted = make_backend(state.candidate(state_dir, tx.id)).persist(default_root(root))
            except (TwinwallError, OSError) as exc:
                tx.message += f"; persisting failed: {exc}"
                state.save(state_dir, tx)
                raise TransactionError(f"transaction {tx.id} confirmed (the rules stay loaded) but not persisted: {exc}") from None
            if tx.persisted:
                tx.message += "; persisted to " + ", ".join(tx.persisted)
        state.save(state_dir, tx)
        return tx


def rollback(txid: Optional[str] = None, *, state_dir: Optional[str] = None) -> Transaction:
    """Revert the pending transaction now."""
    from twinwall.apply import watchdog

    state_dir = default_state_dir(state_dir)
    with state.locked(state_dir):
        tx = _pending(state_dir, txid)
        state.revert(state_dir, tx, "rolled back by twinwall rollback")
        watchdog.disarm(tx.rollback_by, tx.id)
        return tx


def status(*, state_dir: Optional[str] = None) -> Optional[Transaction]:
    """The pending or last transaction (None when there has been none)."""
    state_dir = default_state_dir(state_dir)
    last = state.last_id(state_dir)
    return state.load_transaction(state_dir, last) if last else None
