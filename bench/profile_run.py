#!/usr/bin/env python3
"""Profile one twinwall command in-process (cProfile), single process (TWINWALL_JOBS=1):

    .venv/bin/python bench/profile_run.py OUT.prof audit --iptables ... --format json

prints the top functions by own time and by cumulative time on stderr (a development tool: the
benchmarks never run it)."""
import cProfile
import io
import os
import pstats
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
os.environ["TWINWALL_JOBS"] = "1"
from twinwall.cli import main

out, argv = sys.argv[1], sys.argv[2:]
prof = cProfile.Profile()
real_stdout = sys.stdout
sys.stdout = io.StringIO()
try:
    prof.runcall(main, argv)
finally:
    sys.stdout = real_stdout
prof.dump_stats(out)
st = pstats.Stats(out, stream=sys.stderr)
st.sort_stats("tottime").print_stats(int(os.environ.get("TOP", "25")))
st.sort_stats("cumtime").print_stats(int(os.environ.get("TOP", "25")) + 15)
