"""A transaction's state on disk, and the rollback itself: what ``transaction`` (apply, confirm,
rollback) and the rollback's own process (``watchdog``, the systemd timer's service) share.

State lives in ``state_dir`` (``$TWINWALL_STATE_DIR`` or /var/lib/twinwall): ``last`` names the
newest transaction, ``tx/<id>/`` holds its ``transaction.json``, the candidate and the backups.
Every state change happens under ``locked`` (flock). Below both ``transaction`` (which arms the
watchdog) and ``watchdog`` (which calls ``expire``), so neither imports the other's caller.
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


def tx_dir(state_dir: str, txid: str) -> str:
    if not txid or "/" in txid or txid.startswith("."):
        raise InputError(f"not a transaction id: {txid!r}")
    return os.path.join(state_dir, "tx", txid)


@contextmanager
def locked(state_dir: str) -> Iterator[None]:
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


def write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(state_dir: str, tx: Transaction) -> None:
    write_json(os.path.join(tx_dir(state_dir, tx.id), "transaction.json"), tx.to_dict())


def load_transaction(state_dir: str, txid: str) -> Optional[Transaction]:
    try:
        with open(os.path.join(tx_dir(state_dir, txid), "transaction.json"), encoding="utf-8") as f:
            return Transaction.from_dict(json.load(f))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise TransactionError(f"transaction {txid}: unreadable state ({exc})") from None


def last_id(state_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(state_dir, "last"), encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def find(state_dir: str, txid: Optional[str]) -> Transaction:
    wanted = txid or last_id(state_dir)
    tx = load_transaction(state_dir, wanted) if wanted else None
    if tx is None:
        raise InputError(f"no transaction {txid} in {state_dir}" if txid else f"no transaction in {state_dir}")
    return tx


def candidate(state_dir: str, txid: str) -> Candidate:
    with open(os.path.join(tx_dir(state_dir, txid), "candidate.json"), encoding="utf-8") as f:
        return Candidate.from_dict(json.load(f))


def backups(tx: Transaction) -> Dict[str, str]:
    out = {}
    for name, path in tx.backups.items():
        with open(path, encoding="utf-8") as f:
            out[name] = f.read()
    return out


def new_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def utc(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "-"


def revert(state_dir: str, tx: Transaction, why: str) -> Transaction:
    from twinwall.apply.backends import make_backend

    try:
        make_backend(candidate(state_dir, tx.id)).restore(backups(tx))
    except TwinwallError as exc:
        tx.state, tx.message = FAILED, f"{why}: restoring the saved rules failed: {exc}"
        save(state_dir, tx)
        raise TransactionError(tx.message) from None
    tx.state, tx.message = ROLLED_BACK, f"{why} at {utc(time.time())}: the saved rules are back"
    save(state_dir, tx)
    return tx


def expire(txid: str, *, state_dir: str, who: str) -> Optional[Transaction]:
    """The rollback at the deadline (the watchdog's or the systemd timer's): reverts the
    transaction if it is still pending, else does nothing."""
    with locked(state_dir):
        tx = load_transaction(state_dir, txid)
        if tx is None or tx.state != PENDING:
            return None
        return revert(state_dir, tx, f"not confirmed by {utc(tx.deadline)}: rolled back by {who}")
