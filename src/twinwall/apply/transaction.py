"""One firewall change as a transaction that knows how to undo itself.

``apply(candidate)`` validates the candidate, refuses it if it would cut the admin's own
connections (``lockout``), saves the current rules and arms a rollback *before* anything changes
(a transient systemd timer when systemd is PID 1 and can reach the network namespace, else a
detached watchdog in its own session that ignores SIGHUP), loads the candidate atomically (one
restore per family, both or none; one ``nft -f``), and returns the transaction *pending*.
``confirm`` stops the rollback and only then persists (``persist``); ``rollback`` reverts at
once; an unconfirmed transaction reverts itself at its deadline, whatever happened to the
process or the terminal that started it.

State lives in ``state_dir`` (``$TWINWALL_STATE_DIR`` or /var/lib/twinwall): ``last`` names the
newest transaction, ``tx/<id>/`` holds its ``transaction.json``, the candidate and the backups.
One transaction may be pending at a time; every state change happens under ``lock`` (flock).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from twinwall.apply.candidate import Candidate
from twinwall.errors import InputError, TwinwallError

PENDING, CONFIRMED, ROLLED_BACK, FAILED = "pending", "confirmed", "rolled-back", "failed"
STATES = (PENDING, CONFIRMED, ROLLED_BACK, FAILED)
DEFAULT_STATE_DIR = "/var/lib/twinwall"


class LockoutRefused(InputError):
    """The candidate would cut one of the admin's connections (the message names it)."""


class TransactionError(TwinwallError):
    """The transaction could not be carried out (a restore failed, a pending one exists)."""


@dataclass
class Transaction:
    id: str
    state: str
    created: float  # unix time
    deadline: Optional[float]  # unix time the rollback fires at; None when nothing was armed
    families: List[str]
    summary: str
    backend: str = "iptables"
    backups: Dict[str, str] = field(default_factory=dict)  # "ipv4"/"ipv6"/"nft" -> path
    rollback_by: str = ""  # "systemd:<unit>" or "watchdog:<pid>" or ""
    changed: bool = True  # False: the candidate was already loaded (nothing done, nothing armed)
    persisted: List[str] = field(default_factory=list)  # files written on confirm
    message: str = ""  # what happened last (why it failed / was rolled back)
    persist: bool = True  # write the persistence files on confirm
    root: str = "/"  # prefix of the persistence paths
    connections: List[str] = field(default_factory=list)  # the admin's connections the guard checked

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Transaction":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def default_state_dir(state_dir: Optional[str] = None) -> str:
    return state_dir or os.environ.get("TWINWALL_STATE_DIR") or DEFAULT_STATE_DIR


def default_root(root: Optional[str] = None) -> str:
    return root or os.environ.get("TWINWALL_ROOT") or "/"


# --------------------------------------------------------------------------------------------
# state on disk


def _tx_dir(state_dir: str, txid: str) -> str:
    if not txid or "/" in txid or txid.startswith("."):
        raise InputError(f"not a transaction id: {txid!r}")
    return os.path.join(state_dir, "tx", txid)


@contextmanager
def _locked(state_dir: str) -> Iterator[None]:
    """Every state change under one lock: apply, confirm, rollback and the watchdog never
    interleave."""
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(state_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise InputError(f"state directory {state_dir}: {exc.strerror} (TWINWALL_STATE_DIR sets another)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save(state_dir: str, tx: Transaction) -> None:
    _write_json(os.path.join(_tx_dir(state_dir, tx.id), "transaction.json"), tx.to_dict())


def load_transaction(state_dir: str, txid: str) -> Optional[Transaction]:
    try:
        with open(os.path.join(_tx_dir(state_dir, txid), "transaction.json"), encoding="utf-8") as f:
            return Transaction.from_dict(json.load(f))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise TransactionError(f"transaction {txid}: unreadable state ({exc})") from None


def _last_id(state_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(state_dir, "last"), encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def _find(state_dir: str, txid: Optional[str]) -> Transaction:
    wanted = txid or _last_id(state_dir)
    tx = load_transaction(state_dir, wanted) if wanted else None
    if tx is None:
        raise InputError(f"no transaction {txid} in {state_dir}" if txid else f"no transaction in {state_dir}")
    return tx


def _candidate(state_dir: str, txid: str) -> Candidate:
    with open(os.path.join(_tx_dir(state_dir, txid), "candidate.json"), encoding="utf-8") as f:
        return Candidate.from_dict(json.load(f))


def _backups(tx: Transaction) -> Dict[str, str]:
    out = {}
    for name, path in tx.backups.items():
        with open(path, encoding="utf-8") as f:
            out[name] = f.read()
    return out


def _new_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


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
    with _locked(state_dir):
        last = _find(state_dir, None) if _last_id(state_dir) else None
        if last is not None and last.state == PENDING:
            if watchdog.alive(last.rollback_by, last.id) or (last.deadline or 0) > time.time():
                raise TransactionError(f"transaction {last.id} is pending until its confirm or rollback "
                                       f"(twinwall confirm {last.id} / twinwall rollback {last.id}): one at a time")
            # its rollback is gone and its deadline past (the host rebooted): nothing is pending
            last.state, last.message = FAILED, "its rollback never ran (the host rebooted before the deadline?)"
            _save(state_dir, last)
        saved = backend.save()
        now = time.time()
        tx = Transaction(_new_id(), PENDING, now, None, backend.families(), candidate.summary,
                         backend.kind, persist=persist, root=root)
        if backend.already_loaded(saved):
            tx.state, tx.changed = CONFIRMED, False
            tx.message = "the candidate is already loaded: nothing changed, no rollback armed"
            os.makedirs(_tx_dir(state_dir, tx.id))
            _save(state_dir, tx)
            _write_text(os.path.join(state_dir, "last"), tx.id + "\n")
            return tx
        if not allow_lockout:  # 2. the admin's own connections, on the candidate's rules
            connections, problems = lockout.guard(backend, saved)
            if problems:
                raise LockoutRefused(problems[0] + "; nothing changed (--allow-lockout to apply anyway)")
            tx.connections = [f"{c} ({c.family})" for c in connections]
        # 3. backups and the rollback, before anything changes
        d = _tx_dir(state_dir, tx.id)
        os.makedirs(d, mode=0o700)
        _write_json(os.path.join(d, "candidate.json"), candidate.to_dict())
        for name, text in saved.items():
            path = os.path.join(d, f"backup.{name}")
            _write_text(path, text)
            tx.backups[name] = path
        tx.deadline = now + confirm_timeout
        _save(state_dir, tx)
        _write_text(os.path.join(state_dir, "last"), tx.id + "\n")
        tx.rollback_by = watchdog.arm(state_dir, tx.id, tx.deadline - time.time(), os.path.join(d, "rollback.log"))
        _save(state_dir, tx)
        try:  # 4. all or nothing
            backend.load(saved)
        except TwinwallError as exc:
            tx.state, tx.message = FAILED, str(exc)
            _save(state_dir, tx)
            watchdog.disarm(tx.rollback_by, tx.id)
            raise TransactionError(f"nothing applied: {exc}") from None
        tx.message = (f"loaded; rolls back at {_utc(tx.deadline)} unless confirmed "
                      f"(twinwall confirm {tx.id})")
        _save(state_dir, tx)
        return tx


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _utc(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "-"


def _pending(state_dir: str, txid: Optional[str]) -> Transaction:
    tx = _find(state_dir, txid)
    if tx.state != PENDING:
        raise InputError(f"transaction {tx.id} is {tx.state}, not pending" + (f" ({tx.message})" if tx.message else ""))
    return tx


def confirm(txid: Optional[str] = None, *, state_dir: Optional[str] = None,
            root: Optional[str] = None) -> Transaction:
    """Mark the pending transaction confirmed, stop its rollback, then persist."""
    from twinwall.apply import watchdog
    from twinwall.apply.backends import make_backend

    state_dir = default_state_dir(state_dir)
    with _locked(state_dir):
        tx = _pending(state_dir, txid)
        tx.state, tx.message = CONFIRMED, f"confirmed at {_utc(time.time())}"
        _save(state_dir, tx)
        watchdog.disarm(tx.rollback_by, tx.id)
        if tx.persist:
            root = root or (tx.root if tx.root != "/" else None)
            try:
                tx.persisted = make_backend(_candidate(state_dir, tx.id)).persist(default_root(root))
            except (TwinwallError, OSError) as exc:
                tx.message += f"; persisting failed: {exc}"
                _save(state_dir, tx)
                raise TransactionError(f"transaction {tx.id} confirmed (the rules stay loaded) but not persisted: {exc}") from None
            if tx.persisted:
                tx.message += "; persisted to " + ", ".join(tx.persisted)
        _save(state_dir, tx)
        return tx


def _revert(state_dir: str, tx: Transaction, why: str) -> Transaction:
    from twinwall.apply.backends import make_backend

    try:
        make_backend(_candidate(state_dir, tx.id)).restore(_backups(tx))
    except TwinwallError as exc:
        tx.state, tx.message = FAILED, f"{why}: restoring the saved rules failed: {exc}"
        _save(state_dir, tx)
        raise TransactionError(tx.message) from None
    tx.state, tx.message = ROLLED_BACK, f"{why} at {_utc(time.time())}: the saved rules are back"
    _save(state_dir, tx)
    return tx


def rollback(txid: Optional[str] = None, *, state_dir: Optional[str] = None) -> Transaction:
    """Revert the pending transaction now."""
    from twinwall.apply import watchdog

    state_dir = default_state_dir(state_dir)
    with _locked(state_dir):
        tx = _pending(state_dir, txid)
        _revert(state_dir, tx, "rolled back by twinwall rollback")
        watchdog.disarm(tx.rollback_by, tx.id)
        return tx


def expire(txid: str, *, state_dir: str, who: str) -> Optional[Transaction]:
    """The rollback at the deadline (the watchdog's or the systemd timer's): reverts the
    transaction if it is still pending, else does nothing."""
    with _locked(state_dir):
        tx = load_transaction(state_dir, txid)
        if tx is None or tx.state != PENDING:
            return None
        return _revert(state_dir, tx, f"not confirmed by {_utc(tx.deadline)}: rolled back by {who}")


def status(*, state_dir: Optional[str] = None) -> Optional[Transaction]:
    """The pending or last transaction (None when there has been none)."""
    state_dir = default_state_dir(state_dir)
    last = _last_id(state_dir)
    return load_transaction(state_dir, last) if last else None
