"""run_jobs: results and errors come back from forked workers as if the jobs ran here."""

from __future__ import annotations

import os

import pytest

from twinwall.analysis.parallel import run_jobs
from twinwall.errors import InputError


def test_results_come_back_in_order_and_from_other_processes():
    got = run_jobs([lambda: ("first", os.getpid()), lambda: ("second", os.getpid()), lambda: ("third", os.getpid())])
    assert [name for name, _ in got] == ["first", "second", "third"]
    pids = [pid for _, pid in got]
    assert pids[0] == os.getpid()
    assert len(set(pids)) == 3  # the second and third ran in children of their own


def test_serial_when_not_parallel():
    assert {pid for pid in run_jobs([os.getpid, os.getpid], parallel=False)} == {os.getpid()}


def test_a_user_error_in_a_worker_keeps_its_type_and_message():
    def bad():
        raise InputError("v6.rules: line 3: not iptables-save syntax")

    with pytest.raises(InputError, match="line 3: not iptables-save syntax"):
        run_jobs([lambda: 1, bad])


def test_a_crash_in_a_worker_carries_its_traceback():
    def crash():
        return {}["missing"]

    with pytest.raises(RuntimeError, match="KeyError: 'missing'"):
        run_jobs([lambda: 1, crash])


def test_a_failure_here_still_reaps_the_workers():
    def here():
        raise InputError("this side failed")

    before = _children()
    with pytest.raises(InputError, match="this side failed"):
        run_jobs([here, lambda: sum(range(10))])
    assert _children() == before  # no worker left behind, not even a zombie


def _children() -> set:
    path = f"/proc/self/task/{os.getpid()}/children"
    if not os.path.exists(path):
        pytest.skip("this kernel does not list a process's children in /proc")
    with open(path) as f:
        return set(f.read().split())


def test_a_job_knows_when_it_runs_alone():
    from twinwall.analysis.parallel import can_fork, job_alone

    assert not job_alone()
    assert run_jobs([job_alone, job_alone], parallel=False) == [False, False]
    if can_fork():
        assert run_jobs([job_alone, job_alone, job_alone]) == [True, True, True]
    assert not job_alone()  # (once the jobs are done)
    with pytest.raises(ValueError):
        run_jobs([lambda: int("x"), job_alone])
    assert not job_alone()


def test_rules_are_counted_where_their_lines_are_short():
    """An iptables-save dump's rules are its "-A" lines (many small chains' are half the size
    estimate's 100 bytes), never fewer than the estimate; an nft -j dump is estimated."""
    from twinwall.analysis.parallel import BYTES_PER_RULE, FORK_MIN_RULES, counted_rules, worth_forking
    from twinwall.model import HostSnapshot, RulesetText

    def dump(n, line):
        return "*filter\n:INPUT ACCEPT [0:0]\n" + "".join(f"{line}\n" for _ in range(n)) + "COMMIT\n"

    half = FORK_MIN_RULES // 2
    short = {f: dump(half, "-A INPUT -s 192.0.2.1/32 -j ACCEPT") for f in ("ipv4", "ipv6")}
    snap = HostSnapshot(rulesets=[RulesetText(f, "iptables-save", "nft", f"{f}.rules", t) for f, t in short.items()])
    assert counted_rules(snap, "ipv4") == half and worth_forking(snap)
    few = {f: dump(half - 1, "-A INPUT -s 192.0.2.1/32 -j ACCEPT") for f in ("ipv4", "ipv6")}
    snap = HostSnapshot(rulesets=[RulesetText(f, "iptables-save", "nft", f"{f}.rules", t) for f, t in few.items()])
    assert not worth_forking(snap)
    counters = dump(100, "[0:0] -A INPUT -m comment --comment " + "x" * 400 + " -j ACCEPT")  # (-c: no "-A" line)
    snap = HostSnapshot(rulesets=[RulesetText("ipv4", "iptables-save", "nft", "4.rules", counters)])
    assert counted_rules(snap, "ipv4") == len(counters) // BYTES_PER_RULE
    nft = RulesetText("inet", "nft-json", "nft", "nft.json", '{"nftables": []}' + " " * 5000)
    assert counted_rules(HostSnapshot(rulesets=[nft]), "ipv6") == len(nft.text) // BYTES_PER_RULE


def test_forking_is_decided_as_by_the_count_where_the_size_estimate_decides_it():
    """worth_forking takes a large host's size estimate as its answer, without counting its
    lines: the answer the count gives, for dumps of either size of line, around the threshold."""
    from twinwall.analysis.parallel import FORK_MIN_RULES, counted_rules, worth_forking
    from twinwall.model import HostSnapshot, RulesetText

    def dump(n, line):
        return "*filter\n:INPUT ACCEPT [0:0]\n" + "".join(f"{line}\n" for _ in range(n)) + "COMMIT\n"

    lines = ("-A INPUT -s 192.0.2.1/32 -j ACCEPT", "-A INPUT -m comment --comment " + "x" * 200 + " -j ACCEPT")
    for line in lines:
        for n in (FORK_MIN_RULES // 2 - 1, FORK_MIN_RULES // 2, FORK_MIN_RULES // 4, FORK_MIN_RULES // 8):
            for split in (False, True):  # one dump per family, or the IPv4 rules in two dumps
                texts = [("ipv4", dump(n // 2, line)), ("ipv4", dump(n - n // 2, line))] if split else [("ipv4", dump(n, line))]
                snap = HostSnapshot(rulesets=[RulesetText(f, "iptables-save", "nft", f"{f}-{k}.rules", t)
                                              for k, (f, t) in enumerate(texts + [("ipv6", dump(n, line))])])
                counted = [counted_rules(snap, f) for f in ("ipv4", "ipv6")]
                assert worth_forking(snap) == (all(counted) and sum(counted) >= FORK_MIN_RULES), (line[:30], n, split)


def test_a_forked_family_lets_the_other_familys_dump_go():
    """audit_family in a process of its own empties the other family's dumps (the other
    process reads them) when texts are not kept; run alone, it leaves them."""
    from twinwall.analysis import audit, parallel
    from twinwall.model import HostSnapshot, RulesetText

    dumps = {f: "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n" for f in ("ipv4", "ipv6")}
    for alone in (False, True):
        snap = HostSnapshot(rulesets=[RulesetText(f, "iptables-save", "nft", f"{f}.rules", text) for f, text in dumps.items()])
        parallel._forked = alone
        try:
            audit.audit_family(snap, "ipv4", [], keep_text=False)
        finally:
            parallel._forked = False
        assert [r.text for r in snap.rulesets] == ["", "" if alone else dumps["ipv6"]]


def test_a_result_too_big_for_the_pipe_comes_back_whole_and_one_that_cannot_be_pickled_fails():
    # (pickled into the pipe as it is made: megabytes the parent reads once its own job is done)
    big = [f"2001:db8::{k:x}/128" for k in range(200_000)]
    assert run_jobs([lambda: 1, lambda: big]) == [1, big]
    unpicklable = [f"{k}" for k in range(100_000)] + [lambda: None]  # (fails after 100,000 items)
    with pytest.raises(RuntimeError, match="ended without a result"):  # (as when nothing was written)
        run_jobs([lambda: 1, lambda: unpicklable])


def test_meanwhile_runs_while_a_child_works_and_not_once_it_is_done():
    """run_jobs's ``meanwhile`` runs in this process after its own job, while a forked job is
    still at work (the child here waits for it: it would time out without it); not when the
    children have already sent their results, nor when nothing was forked."""
    import select
    import time

    from twinwall.analysis.parallel import can_fork

    if not can_fork():
        pytest.skip("this process cannot fork (another thread runs, or TWINWALL_JOBS=1)")
    calls: list = []
    release_r, release_w = os.pipe()
    try:
        def waiting_child():
            ready, _, _ = select.select([release_r], [], [], 20)
            return "released" if ready else "timed out"

        def meanwhile():
            calls.append(os.getpid())
            os.write(release_w, b"x")

        assert run_jobs([lambda: "here", waiting_child], meanwhile=meanwhile) == ["here", "released"]
        assert calls == [os.getpid()]
    finally:
        os.close(release_r)
        os.close(release_w)

    calls.clear()
    done_r, done_w = os.pipe()
    try:
        def quick_child():
            os.write(done_w, b"x")
            return "quick"

        def slow_here():  # (until the child's job is over, then time for it to send its result)
            select.select([done_r], [], [], 20)
            time.sleep(0.5)
            return "here"

        assert run_jobs([slow_here, quick_child], meanwhile=lambda: calls.append(1)) == ["here", "quick"]
        assert calls == []
    finally:
        os.close(done_r)
        os.close(done_w)
    assert run_jobs([lambda: 1, lambda: 2], parallel=False, meanwhile=lambda: calls.append(1)) == [1, 2]
    assert calls == []
