"""Where a report goes: standard output, or a file replaced atomically.

A report file is often read by something else while twinwall writes it: node_exporter's textfile
collector scrapes ``*.prom`` every few seconds, a CI step uploads the SARIF file. A reader must see
the old file or the new one, never half of one, and a crash must not leave a truncated report
behind: the text goes to a temporary file in the same directory (same file system, so the rename
is atomic), is flushed to disk, and is renamed over the target.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import Iterable, Optional, Sequence, Union

from twinwall.errors import InputError
from twinwall.report import registry


def write_atomic(path: str, data: Union[bytes, Iterable[bytes]]) -> None:
    """Replace ``path`` with ``data`` (bytes, or pieces of it written one after the other: a
    large document is never held whole as bytes): temp file beside it, fsync, rename,
    fsync the directory. The file gets the mode a plain ``open(path, "w")`` would give it (0666
    minus the umask): a textfile collector running as another user must be able to read it."""
    import tempfile  # (only a report written to a file needs it: not an audit on standard output)

    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in (data,) if isinstance(data, bytes) else data:
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # the rename is done; a directory we cannot open cannot be synced
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def emit(text: str, output: Optional[str]) -> None:
    """``text`` to standard output (``output`` None or ``-``) or atomically to the file."""
    if output is None or output == "-":
        sys.stdout.write(text)
        return
    write_atomic(output, text.encode("utf-8"))


def emit_json(document, output: Optional[str]) -> None:
    """A JSON document: on standard output as ``write_json`` always wrote it (indented at a
    terminal), compact into ``output``."""
    from twinwall.report.json_out import dumps_pieces, write_json

    if output is None or output == "-":
        write_json(document)
        return
    write_atomic(output, itertools.chain(dumps_pieces(document), (b"\n",)))


def add_format_arguments(
    p: argparse.ArgumentParser, schema: str, extra: Sequence[str] = ("table",), default: Optional[str] = "table"
) -> None:
    """``--format`` (choices from the registry: the formats that render ``schema`` documents,
    after the command's own ``extra`` ones) and ``--output``."""
    names = registry.choices(schema, tuple(extra))
    p.add_argument(
        "--format",
        choices=names,
        default=default,
        required=default is None,
        help=f"output format: {', '.join(names)}" + (f" (default: {default})" if default else "")
        + "; see 'Reports' in the README",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write the report to FILE instead of standard output, atomically (a temporary file "
        "in the same directory, flushed to disk, renamed over FILE): a reader such as "
        "node_exporter's textfile collector never sees half a report",
    )
