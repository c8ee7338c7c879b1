"""Measuring helpers shared by the benchmarks in bench/ (bench_audit.py, later bench_diff.py and
bench_nft.py).

What is measured, for each command: wall-clock seconds and the peak resident set size (KiB) of
that command's own process, from ``os.wait4`` on it (never the cumulative RUSAGE_CHILDREN).

Every command is started by a small helper process (``python -I -S -c _CHILD_CODE``) that forks,
execs the command, waits for it with ``os.wait4`` and prints the figures as JSON. The helper is
there for two reasons:

* Linux records the high-water RSS of the address space a process had *before* exec in its
  ``maxrss``; a child forked straight from a large benchmark process would inherit that figure.
  Forked from the small helper, the floor is the helper's few MiB.
* Commands that must not touch the host's tables (``iptables-restore --test``) run in a
  throw-away network namespace: ``ip netns exec NS <python> -c _CHILD_CODE -- CMD``. The
  helper runs inside the namespace, so the figures are the restore tool's own, not those of
  ``ip netns exec``.

A measured set of commands is run round-robin ``repeat`` times (A B C, A B C, ...) so that a
drift of the machine affects all of them alike; each command's time is the median of its runs and
its memory the maximum.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

STDERR_TAIL = 4000


class MeasureError(RuntimeError):
    """A measured command failed (exit code not accepted) or could not be started."""


@dataclass
class Command:
    """One command to measure.

    ``ok_codes``: exit codes that count as success. ``netns``: run inside the throw-away network
    namespace. ``stdout_path``: where the command's standard output goes (default /dev/null).
    ``env``: extra environment variables for the command. ``timeout_s``: kill it (SIGKILL) after
    that many seconds and report the run as failed.
    """

    name: str
    argv: List[str]
    ok_codes: Sequence[int] = (0,)
    netns: bool = False
    stdout_path: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    timeout_s: Optional[float] = None


@dataclass
class Run:
    wall_s: float
    maxrss_kib: int
    user_s: float
    sys_s: float
    returncode: int
    stderr: str
    timed_out: bool = False


@dataclass
class Measurement:
    """All runs of one command; ``wall_s`` is the median, ``maxrss_kib`` the maximum."""

    name: str
    argv: List[str]
    runs: List[Run]

    @property
    def wall_s(self) -> float:
        return statistics.median(r.wall_s for r in self.runs)

    @property
    def maxrss_kib(self) -> int:
        return max(r.maxrss_kib for r in self.runs)

    def to_dict(self) -> Dict[str, object]:
        return {
            "argv": self.argv,
            "wall_s": round(self.wall_s, 4),
            "maxrss_kib": self.maxrss_kib,
            "runs": [
                {"wall_s": round(r.wall_s, 4), "maxrss_kib": r.maxrss_kib, "user_s": round(r.user_s, 4),
                 "sys_s": round(r.sys_s, 4), "returncode": r.returncode}
                for r in self.runs
            ],
        }


@dataclass
class Combined:
    """Several measurements taken together, e.g. the IPv4 and IPv6 restore tools: times add up,
    peak memory is the larger of the peaks (they run one after the other)."""

    name: str
    parts: List[Measurement]

    @property
    def wall_s(self) -> float:
        return sum(m.wall_s for m in self.parts)

    @property
    def maxrss_kib(self) -> int:
        return max(m.maxrss_kib for m in self.parts)

    def to_dict(self) -> Dict[str, object]:
        return {"wall_s": round(self.wall_s, 4), "maxrss_kib": self.maxrss_kib, "parts": [m.name for m in self.parts]}


# --------------------------------------------------------------------------------------------
# network namespace
# --------------------------------------------------------------------------------------------


class NetNamespace:
    """``with NetNamespace() as ns:`` - a fresh namespace ``tw-bench-<hex>``, deleted on exit
    even when the body fails. Nothing run in it touches the host's own tables."""

    def __init__(self, prefix: str = "tw-bench"):
        self.name = f"{prefix}-{secrets.token_hex(4)}"
        self._created = False

    def __enter__(self) -> "NetNamespace":
        if os.geteuid() != 0:
            raise MeasureError("the reference runs need root: they use a throw-away network namespace (ip netns add)")
        if shutil.which("ip") is None:
            raise MeasureError("'ip' (iproute2) is not installed")
        res = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if res.returncode != 0:
            raise MeasureError(f"ip netns add {self.name} failed: {res.stderr.strip()}")
        self._created = True
        return self

    def __exit__(self, *exc) -> None:
        if self._created:
            res = subprocess.run(["ip", "netns", "del", self.name], capture_output=True, text=True)
            if res.returncode != 0:
                print(f"warning: could not delete network namespace {self.name}: {res.stderr.strip()}", file=sys.stderr)
            self._created = False

    def wrap(self, argv: List[str]) -> List[str]:
        return ["ip", "netns", "exec", self.name] + argv


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def _helper_argv(cmd: Command) -> List[str]:
    helper = [sys.executable, "-I", "-S", "-c", _CHILD_CODE]
    if cmd.timeout_s:
        helper += ["--timeout", str(cmd.timeout_s)]
    if cmd.stdout_path:
        helper += ["--stdout", cmd.stdout_path]
    return helper + ["--"] + list(cmd.argv)


def run_once(cmd: Command, ns: Optional[NetNamespace] = None) -> Run:
    """Run ``cmd`` once through the helper and return its own figures."""
    argv = _helper_argv(cmd)
    if cmd.netns:
        if ns is None:
            raise MeasureError(f"{cmd.name}: needs a network namespace")
        argv = ns.wrap(argv)
    env = dict(os.environ)
    env.update(cmd.env)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        out, err = proc.communicate()
    except BaseException:
        # interrupted (Ctrl-C, SIGTERM): the helper kills the measured command, then exits
        proc.terminate()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise MeasureError(f"{cmd.name}: the measuring helper failed (exit {proc.returncode}): {err.strip()[-STDERR_TAIL:]}")
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise MeasureError(f"{cmd.name}: unreadable helper output {out[-500:]!r}: {exc}") from exc
    if "error" in data:
        raise MeasureError(f"{cmd.name}: {data['error']}")
    run = Run(
        wall_s=float(data["wall_s"]), maxrss_kib=int(data["maxrss_kib"]), user_s=float(data["user_s"]),
        sys_s=float(data["sys_s"]), returncode=int(data["returncode"]), stderr=data.get("stderr", ""),
        timed_out=bool(data.get("timed_out")),
    )
    if run.timed_out:
        raise MeasureError(f"{cmd.name} did not finish within {cmd.timeout_s:g} s (killed): {' '.join(cmd.argv)}")
    if run.returncode not in cmd.ok_codes:
        raise MeasureError(
            f"{cmd.name} failed (exit {run.returncode}): {' '.join(cmd.argv)}\n--- its stderr ---\n{run.stderr.rstrip()}"
        )
    return run


def _term_to_exit(_sig, _frame):
    raise SystemExit("terminated")


def measure(
    commands: Sequence[Command], repeat: int = 3, progress=None, ns: Optional["NetNamespace"] = None
) -> Dict[str, Measurement]:
    """Run every command ``repeat`` times, round-robin. The commands that need a namespace run in
    ``ns`` (one the caller prepared), else in one made (and deleted) here if any needs it.
    SIGTERM ends the run cleanly (the namespace is deleted). Raises MeasureError on the first
    failure."""
    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    runs: Dict[str, List[Run]] = {c.name: [] for c in commands}
    old_term = signal.signal(signal.SIGTERM, _term_to_exit)
    try:
        with contextlib.ExitStack() as stack:
            if ns is None and any(c.netns for c in commands):
                ns = stack.enter_context(NetNamespace())
            for i in range(repeat):
                for c in commands:
                    if progress:
                        progress(f"[{i + 1}/{repeat}] {c.name} ...")
                    r = run_once(c, ns)
                    runs[c.name].append(r)
                    if progress:
                        progress(f"[{i + 1}/{repeat}] {c.name}: {r.wall_s:.3f} s, {r.maxrss_kib} KiB")
    finally:
        signal.signal(signal.SIGTERM, old_term)
    return {c.name: Measurement(c.name, list(c.argv), runs[c.name]) for c in commands}


def load_json_output(path: str, what: str) -> Dict:
    """A measured command's JSON output (an object), or MeasureError saying what is wrong."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise MeasureError(f"{what} did not print valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MeasureError(f"{what} printed JSON that is not an object")
    return doc


def byte_compile(python: str, package_dir: str) -> None:
    """Byte-compile twinwall's sources before measuring, as ``pip install`` does at install
    time: the runs then load cached bytecode like an installed twinwall, also where
    PYTHONDONTWRITEBYTECODE keeps the interpreter from caching it on its own."""
    subprocess.run([python, "-m", "compileall", "-q", package_dir], stdout=subprocess.DEVNULL, check=False)


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------


def ratio(candidate: float, reference: float) -> float:
    return candidate / reference if reference > 0 else float("inf")


def verdicts(candidate, reference, time_target: Optional[float], mem_target: Optional[float]) -> Dict[str, object]:
    """Ratios candidate/reference for time and memory and PASS/FAIL against the targets (a target
    of None is not checked)."""
    t = ratio(candidate.wall_s, reference.wall_s)
    m = ratio(candidate.maxrss_kib, reference.maxrss_kib)
    out: Dict[str, object] = {"time_ratio": round(t, 3), "memory_ratio": round(m, 3),
                              "time_target": time_target, "memory_target": mem_target}
    out["time_pass"] = None if time_target is None else t <= time_target
    out["memory_pass"] = None if mem_target is None else m <= mem_target
    return out


def fmt_kib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def table(rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def verdict_text(passed: Optional[bool]) -> str:
    return "-" if passed is None else ("PASS" if passed else "FAIL")


def comparison_rows(ref: "Combined", cand: Optional["Measurement"], label: str, verdict) -> List[List[str]]:
    """The figures table of a benchmark: each reference tool, their combination, the candidate,
    the ratios with their targets and verdicts (a target of None prints as "-")."""
    rows = [["", "time", "peak RSS"]]
    for m in ref.parts:
        rows.append([m.name, f"{m.wall_s:.3f} s", fmt_kib(m.maxrss_kib)])
    rows.append(["reference (sum, max)", f"{ref.wall_s:.3f} s", fmt_kib(ref.maxrss_kib)])
    if cand is not None:
        rows.append([label, f"{cand.wall_s:.3f} s", fmt_kib(cand.maxrss_kib)])
        rows.append(["ratio twinwall/reference", f"{verdict['time_ratio']:.2f}x", f"{verdict['memory_ratio']:.2f}x"])
        rows.append(["target"] + [
            "-" if verdict[k] is None else f"<= {verdict[k]:.2f}x" for k in ("time_target", "memory_target")
        ])
        rows.append(["verdict", verdict_text(verdict["time_pass"]), verdict_text(verdict["memory_pass"])])
    return rows


# --------------------------------------------------------------------------------------------
# helper side: a tiny program run as ``python -I -S -c _CHILD_CODE [--stdout FILE] -- CMD...``,
# possibly inside the namespace. It imports only builtin modules before forking, so the child's
# inherited pre-exec high-water RSS (the floor of every figure) stays small.
# --------------------------------------------------------------------------------------------

_CHILD_CODE = r"""
import os, signal, sys, time
args = sys.argv[1:]
out_path = os.devnull
timeout = 0.0
if args[:1] == ["--timeout"]:
    timeout = float(args[1])
    args = args[2:]
if args[:1] == ["--stdout"]:
    out_path = args[1]
    args = args[2:]
if args[:1] == ["--"]:
    args = args[1:]
err_path = "/tmp/tw-bench-stderr-%d" % os.getpid()
out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
err_fd = os.open(err_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.unlink(err_path)
null_fd = os.open(os.devnull, os.O_RDONLY)
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.dup2(null_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.execvp(args[0], args)
    except BaseException as exc:
        os.write(2, ("cannot start %s: %s\n" % (args[0], exc)).encode())
    os._exit(127)
timed_out = []
def on_alarm(_sig, _frame):
    timed_out.append(True)
    os.kill(pid, signal.SIGKILL)
def on_term(_sig, _frame):
    os.kill(pid, signal.SIGKILL)
signal.signal(signal.SIGALRM, on_alarm)
signal.signal(signal.SIGTERM, on_term)
if timeout > 0:
    signal.setitimer(signal.ITIMER_REAL, timeout)
_pid, status, usage = os.wait4(pid, 0)
signal.setitimer(signal.ITIMER_REAL, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
os.lseek(err_fd, 0, 0)
chunks = []
while True:
    b = os.read(err_fd, 65536)
    if not b:
        break
    chunks.append(b)
stderr = b"".join(chunks)[-TAIL:].decode("utf-8", "replace")
import json
print(json.dumps({"wall_s": wall, "maxrss_kib": usage.ru_maxrss, "user_s": usage.ru_utime,
                  "sys_s": usage.ru_stime, "returncode": code, "stderr": stderr,
                  "timed_out": bool(timed_out)}))
""".replace("TAIL", str(STDERR_TAIL))


def progress_log(quiet: bool) -> Callable[[str], None]:
    """The benchmarks' progress lines: on stderr, none with --quiet."""

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return log
