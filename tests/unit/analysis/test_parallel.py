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
