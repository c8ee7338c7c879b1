"""JSON reports on standard output: indented at a terminal, compact (and fast) in a pipe.

An audit of a large host is a 10 MB document; the standard library's encoder spends longer on
it than the whole rest of the report. orjson (a dependency) writes it in a tenth of the time.
Where orjson is not installed (a ``--no-deps`` install) or refuses a value (an integer wider
than 64 bits), the standard library writes the same JSON value."""

from __future__ import annotations

import json
import sys
from typing import IO, Optional

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None  # type: ignore[assignment]  # dumps() falls back to the standard library


def dumps(data, pretty: bool = False) -> bytes:
    """UTF-8 JSON of ``data`` (plain dicts, lists, strings, numbers, None)."""
    if orjson is not None:
        option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if pretty else 0)
        try:
            return orjson.dumps(data, option=option)
        except TypeError:  # orjson.JSONEncodeError: e.g. a 128-bit integer
            pass
    # reports are trees built fresh for output (a shared leaf is fine, a cycle impossible): the
    # encoder's cycle check would only cost a dictionary operation per object. Without indent
    # json.dumps runs the C encoder; json.dump would not.
    if pretty:
        text = json.dumps(data, indent=2, check_circular=False, ensure_ascii=False)
    else:
        text = json.dumps(data, separators=(",", ":"), check_circular=False, ensure_ascii=False)
    return text.encode("utf-8")


def write_json(data, stream: Optional[IO[str]] = None, pretty: Optional[bool] = None) -> None:
    """Write ``data`` and a newline to a text stream (default: standard output), indented for
    a person at a terminal (``pretty`` None) or as ``pretty`` says."""
    out = sys.stdout if stream is None else stream
    # (the newline written after the document, not appended to it: that would copy it)
    blob = dumps(data, pretty=out.isatty() if pretty is None else pretty)
    buffer = getattr(out, "buffer", None)
    if buffer is None:  # a text-only stream (io.StringIO in a test)
        out.write(blob.decode("utf-8"))
        out.write("\n")
        return
    out.flush()
    buffer.write(blob)
    buffer.write(b"\n")
    buffer.flush()
