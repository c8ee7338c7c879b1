#!/usr/bin/env python3
"""Build twinwall.pyz: the whole of twinwall in one file that any Python 3.9+ runs, no install.

    python3 scripts/build_pyz.py [-o dist/twinwall.pyz]
    scp dist/twinwall.pyz host:/tmp/ && ssh host sudo python3 /tmp/twinwall.pyz collect -o - > host.json

The archive holds the package's sources only (stdlib zipapp): on a host without orjson the JSON
writer falls back to the standard library, so collect, audit and every other command work with
nothing but Python's standard library. See docs/fleet.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "src" / "twinwall"

MAIN = """\
# twinwall.pyz entry point (scripts/build_pyz.py)
from twinwall.cli import entry

entry()
"""


def build(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="twinwall-pyz-") as tmp:
        root = Path(tmp)
        shutil.copytree(PACKAGE, root / "twinwall", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (root / "__main__.py").write_text(MAIN, encoding="utf-8")
        # written next to the target, then renamed: a half-built archive never takes its place
        partial = output.with_name(output.name + ".partial")
        zipapp.create_archive(root, partial, interpreter="/usr/bin/env python3", compressed=True)
        partial.replace(output)
    return output


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", type=Path, default=REPO / "dist" / "twinwall.pyz",
                   help="where to write the archive (default: dist/twinwall.pyz)")
    args = p.parse_args(argv)
    out = build(args.output)
    print(f"wrote {out} ({out.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
