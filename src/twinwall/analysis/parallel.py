"""Run independent jobs side by side: the first in this process, the others in forked children.

IPv4 and IPv6 are separate questions over separate rulesets, and a large host's two halves each
take most of a second; on a machine with two cores they can take it at the same time. A forked
child inherits everything already loaded (the snapshot, the imported modules), computes its
job, and sends the result back pickled through a pipe, so results must be plain picklable data.

Errors cross the pipe too: a ``TwinwallError`` in a child is raised again here with its own type
and message (a one-line error for the user); anything else comes back as a ``RuntimeError``
carrying the child's traceback. A child is always waited for; if this process's own job fails,
the children it started are killed (by their PIDs) first.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence, TypeVar

from twinwall.errors import TwinwallError
from twinwall.model import FAMILIES

T = TypeVar("T")


def can_fork() -> bool:
    """Whether forking is available and safe here (no other thread that a child would copy
    in the middle of its work; TWINWALL_JOBS=1 turns it off)."""
    import threading  # (here, like pickle below: a run too small to fork never loads them)

    return (
        hasattr(os, "fork")
        and os.environ.get("TWINWALL_JOBS") != "1"
        and threading.active_count() == 1
    )


# rules (both families together) from which each family is worth a process of its own: below
# this, a fork costs more than it saves
FORK_MIN_RULES = 20_000
# the diff's walks cost more per rule than the audit's (every hook path, every address role,
# the rules that name prefixes followed both ways): from half as many rules a walk each side
# by side pays for the fork (a router's 5,000 + 6,000 rules: 0.41 -> 0.38 s), while the audit,
# whose own walks are a few milliseconds there, keeps FORK_MIN_RULES
DIFF_FORK_MIN_RULES = 10_000
# before parsing, a dump's rules are estimated from its size: iptables-save prints a rule in
# about 100 bytes (nft -j in more, which only errs towards not forking)
BYTES_PER_RULE = 100


def estimated_rules(snapshot, family: Optional[str] = None) -> int:
    """Rules in a snapshot's dumps (of one family, or all), estimated from their size."""
    texts = snapshot.rulesets if family is None else snapshot.rulesets_for(family)
    return sum(len(t.text) for t in texts) // BYTES_PER_RULE


def counted_rules(snapshot, family: str, lines: bool = True) -> int:
    """Rules in a family's dumps before parsing: an iptables-save dump's "-A" lines, counted (in
    C: a 100k-rule dump in a few milliseconds), where the size estimate says fewer (many small
    chains' "-s ADDR -j ACCEPT" lines are half the 100 bytes, and would not fork at 20,000
    rules); the size estimate for the others. ``lines=False``: the size estimates alone, which
    the count only ever raises."""
    total = 0
    for t in snapshot.rulesets_for(family):
        estimate = len(t.text) // BYTES_PER_RULE
        total += max(estimate, t.text.count("\n-A ")) if lines and t.format == "iptables-save" else estimate
    return total


def worth_forking(snapshot, min_rules: int = FORK_MIN_RULES) -> bool:
    """Whether a snapshot's two families are big enough (``min_rules`` together) to be worth a
    process each."""
    # (the size estimates alone decide a large host: counting the "-A" lines of a 100k-rule
    # blocklist's two dumps took 6 ms, all of it before the fork; the count only ever adds)
    estimates = [counted_rules(snapshot, f, lines=False) for f in FAMILIES]
    if all(estimates) and sum(estimates) >= min_rules:
        return True
    sizes = [counted_rules(snapshot, f) for f in FAMILIES]
    return all(sizes) and sum(sizes) >= min_rules


# whether the job running now has a process of its own (run_jobs forked for it): what it
# alone reads it may then let go of what the other jobs read (they hold copies)
_forked = False


def job_alone() -> bool:
    """Whether the job running now runs in a process of its own, its sibling jobs in others
    (True within run_jobs's jobs once it has forked them, in the children and in this one)."""
    return _forked


def run_jobs(jobs: Sequence[Callable[[], T]], parallel: bool = True,
             meanwhile: Optional[Callable[[], object]] = None) -> List[T]:
    """``[job() for job in jobs]``, with ``parallel`` (and :func:`can_fork`) the jobs after the
    first in forked children. ``meanwhile``: work the caller does next anyway (importing its
    output's writer), done here once this process's own job is over if a child's is not yet:
    in the time it would otherwise wait (not at all when nothing is forked)."""
    global _forked
    if not parallel or len(jobs) < 2 or not can_fork():
        return [job() for job in jobs]
    import pickle
    import signal

    children = []
    try:
        for job in jobs[1:]:
            children.append(_start(job))
        _forked = True
        try:
            mine = jobs[0]()
        finally:
            _forked = False
        if meanwhile is not None and _still_working(children):
            meanwhile()
    except BaseException:
        for pid, fd in children:
            os.close(fd)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    results = [mine]
    failure = None
    for pid, fd in children:
        payload = None
        with os.fdopen(fd, "rb") as inp:
            if failure is None:
                # read as the child writes it, before waiting: the child's exit (freeing a
                # large heap) overlaps with this. (Nothing at all: the child failed before
                # writing, as its status says.)
                try:
                    payload = pickle.load(inp)
                except EOFError:
                    pass
                except BaseException as exc:
                    failure = exc
        _, status = os.waitpid(pid, 0)
        if failure is not None:
            continue
        try:
            results.append(_unpack(payload, status))
        except BaseException as exc:  # raised once every child has been waited for
            failure = exc
    if failure is not None:
        raise failure
    return results


def _still_working(children) -> bool:
    """Whether some child has not begun to send its result (its pipe has nothing to read yet)."""
    import select

    poll = select.poll()  # (not select.select: it refuses descriptors from 1,024 on)
    for _, fd in children:
        poll.register(fd, select.POLLIN)
    return len(poll.poll(0)) < len(children)


def _start(job: Callable[[], object]):
    import pickle

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return pid, read_fd
    # the child: compute, send, and leave without running the parent's cleanup handlers
    global _forked
    _forked = True
    status = 0
    try:
        os.close(read_fd)
        payload: tuple
        try:
            payload = ("ok", job())
        except TwinwallError as exc:
            payload = ("error", type(exc), str(exc))
        except BaseException:
            import traceback

            payload = ("crash", traceback.format_exc())
        # written as it is pickled (frames of 64 KiB): a blocklist's result is megabytes of
        # pickle, which as one bytes object on top of the pickler's memo was this process's
        # peak. (The parent reads once its own job is done: a child done first waits for it.)
        with os.fdopen(write_fd, "wb") as out:
            pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _unpack(payload, status: int):
    if payload is None:
        raise RuntimeError(f"a worker process ended without a result (wait status {status})")
    if payload[0] == "ok":
        return payload[1]
    if payload[0] == "error":
        raise payload[1](payload[2])
    raise RuntimeError("a worker process failed:\n" + payload[1])
