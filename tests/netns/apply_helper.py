"""Run inside a namespace by test_apply_netns.py: the admin's side of a transaction.

    apply_helper.py apply CANDIDATE.json [--timeout S] [--allow-lockout] [--wait]
        twinwall.apply.transaction.apply() of the candidate (state and root from
        TWINWALL_STATE_DIR / TWINWALL_ROOT); prints ``TX <json>`` of the transaction; with
        ``--wait`` then sleeps as a twinwall waiting for its confirm would (the tests kill it or
        hang up its terminal). A twinwall error: ``twinwall: <message>`` on stderr, exit 2.

    apply_helper.py hold ADDRESS PORT
        The admin's session: connects, prints ``CONNECTED``, then for every line on stdin sends
        it and prints what comes back (``ECHO <line>``, or ``LOST <reason>`` after 3 s).

    apply_helper.py echo ADDRESS PORT V6ONLY
        A real listener standing in for sshd: echoes every line of every connection.

    apply_helper.py session PORT sshd|sudo APPLY-ARGS...
        A login standing in for sshd's session process: listens on [::]:PORT (dual-stack), prints
        ``READY``, accepts one connection, stops listening, echoes on it, then runs
        ``apply APPLY-ARGS`` the way an admin's twinwall runs: ``sshd``: as a child of this process
        renamed "sshd" (comm), with no SSH_CONNECTION anywhere; ``sudo``: under a shell whose
        environment holds SSH_CONNECTION while twinwall's own does not (sudo drops it). Prints
        apply's output, then ``RC <code>``; serves until stdin closes.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time


def apply_main(argv):
    from twinwall.apply.candidate import Candidate
    from twinwall.apply.transaction import apply
    from twinwall.errors import TwinwallError

    with open(argv[0]) as f:
        cand = Candidate.from_dict(json.load(f))
    timeout = float(argv[argv.index("--timeout") + 1]) if "--timeout" in argv else 60.0
    try:
        tx = apply(cand, confirm_timeout=timeout, allow_lockout="--allow-lockout" in argv)
    except TwinwallError as exc:
        print(f"twinwall: {exc}", file=sys.stderr, flush=True)
        return 2
    print("TX " + json.dumps(tx.to_dict()), flush=True)
    if "--wait" in argv:
        while True:
            time.sleep(3600)
    return 0


def hold_main(argv):
    addr, port = argv[0], int(argv[1])
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((addr, port))
    print("CONNECTED " + json.dumps(list(s.getsockname()[:2])), flush=True)
    s.settimeout(3)
    f = s.makefile("rb")
    for line in sys.stdin:
        try:
            s.sendall(line.encode())
            back = f.readline().decode().strip()
            print(f"ECHO {back}" if back else "LOST closed", flush=True)
        except OSError as exc:
            print(f"LOST {exc}", flush=True)
    return 0


def echo_main(argv):
    addr, port, v6only = argv[0], int(argv[1]), argv[2] == "1"
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
    srv.bind((addr, port))
    srv.listen(16)
    print("READY", flush=True)

    def serve(c):
        with c:
            while True:
                data = c.recv(4096)
                if not data:
                    return
                c.sendall(data)

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def session_main(argv):
    import ctypes
    import os
    import subprocess

    port, how, apply_args = int(argv[0]), argv[1], argv[2:]
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", port))
    srv.listen(1)
    print("READY", flush=True)
    conn, peer = srv.accept()
    srv.close()  # (not an SSH port any more: only the process tree can tell this is a session)
    local = conn.getsockname()

    def serve():
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
    cmd = [sys.executable, __file__, "apply", *apply_args]
    if how == "sshd":
        ctypes.CDLL(None).prctl(15, b"sshd", 0, 0, 0)  # PR_SET_NAME: comm "sshd"
    else:
        env["SSH_CONNECTION"] = f"{peer[0]} {peer[1]} {local[0]} {local[1]}"
        # the shell keeps SSH_CONNECTION; the command under it (sudo's child) does not
        cmd = ["sh", "-c", 'env -u SSH_CONNECTION "$@"; exit $?', "sh", *cmd]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    sys.stdout.write(res.stdout)
    sys.stdout.write(res.stderr)
    print(f"RC {res.returncode}", flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    sys.exit({"apply": apply_main, "hold": hold_main, "echo": echo_main, "session": session_main}[cmd](rest))
