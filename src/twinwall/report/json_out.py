"""JSON reports on standard output: indented at a terminal, compact (and fast) in a pipe.

An audit of a large host is a 10 MB document; the standard library's encoder spends longer on
it than the whole rest of the report. orjson (a dependency) writes it in a tenth of the time.
Where orjson is not installed (a ``--no-deps`` install) or refuses a value (an integer wider
than 64 bits), the standard library writes the same JSON value.

orjson is imported when it is first used, not with this module: its import (with the uuid,
dataclasses and inspect modules it loads) is ~17 ms and 3.5 MiB, while the standard library
writes a small document (a router's audit: 54 KB) in half a millisecond. ``dumps_pieces``
writes a document's first ``_STDLIB_BYTES`` with the standard library and only the rest with
orjson: a small document never loads it, a large one pays the import once (~4 ms of the
standard library's encoding more than orjson alone)."""

from __future__ import annotations

import sys
from itertools import islice
from typing import IO, Any, Iterator, Optional

# the orjson module: _UNLOADED until dumps() first needs it, None where it is not installed
_UNLOADED: Any = object()
orjson: Any = _UNLOADED
# the bytes of a document dumps_pieces writes with the standard library before orjson: the
# standard library encodes ~30 MB/s here, so 128 KiB cost ~4 ms of the ~17 ms orjson's import
# saves a document that stays below it
_STDLIB_BYTES = 128 * 1024


def _orjson():
    """orjson, imported on first use (None: not installed)."""
    global orjson
    if orjson is _UNLOADED:
        try:
            import orjson as module
        except ImportError:  # pragma: no cover - orjson is a declared dependency
            module = None  # type: ignore[assignment]  # dumps() falls back to the standard library
        orjson = module
    return orjson


def load_encoders() -> None:
    """Import both encoders dumps_pieces may use now (orjson, the standard library's), not when
    the document is written: for a caller with time to spare before (see
    analysis.parallel.run_jobs's ``meanwhile``) and a large document to write."""
    import json  # noqa: F401

    _orjson()


def dumps(data, pretty: bool = False, stdlib: bool = False) -> bytes:
    """UTF-8 JSON of ``data`` (plain dicts, lists, strings, numbers, None); ``stdlib``: by the
    standard library's encoder even where orjson is installed (the same JSON value)."""
    fast = None if stdlib else _orjson()
    if fast is not None:
        option = fast.OPT_NON_STR_KEYS | (fast.OPT_INDENT_2 if pretty else 0)
        try:
            return fast.dumps(data, option=option)
        except TypeError:  # orjson.JSONEncodeError: e.g. a 128-bit integer
            pass
    import json  # (the fallback only: orjson writes the report when it is installed)

    # reports are trees built fresh for output (a shared leaf is fine, a cycle impossible): the
    # encoder's cycle check would only cost a dictionary operation per object. Without indent
    # json.dumps runs the C encoder; json.dump would not.
    if pretty:
        text = json.dumps(data, indent=2, check_circular=False, ensure_ascii=False)
    else:
        text = json.dumps(data, separators=(",", ":"), check_circular=False, ensure_ascii=False)
    return text.encode("utf-8")


def dumps_pieces(data, pretty: bool = False) -> Iterator[bytes]:
    """``dumps(data, pretty)`` in pieces, one after the other: compact, a document's members
    and the items of its lists one by one (an audit of a 10k-rule host is 3 MB of JSON, nearly
    all of it its services: written whole, it is held once more as bytes). The same bytes
    joined, except that a value orjson refuses is written by the standard library alone. A
    member of a document may be an iterator (AuditReport.to_json(stream=True)): written as the
    list of its items, each item made as it is written. The first ``_STDLIB_BYTES`` are the
    standard library's (see the module's docstring)."""
    if pretty or not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        yield dumps(_listed(data), pretty)
        return
    written = 0

    def encode(value) -> bytes:  # dumps, by the standard library while little is written
        nonlocal written
        blob = dumps(value, stdlib=written < _STDLIB_BYTES)
        written += len(blob)
        return blob

    yield b"{"
    for i, (key, value) in enumerate(data.items()):
        yield (b"," if i else b"") + encode(key) + b":"
        if isinstance(value, Iterator):
            # (encoded _BATCH items at a time, as one list less its brackets: an audit's 2,000
            # services one call each were ~5 ms of calls and small pieces)
            yield b"["
            first = True
            while True:
                batch = list(islice(value, _BATCH))
                if not batch:
                    break
                yield (b"" if first else b",") + encode(batch)[1:-1]
                first = False
            yield b"]"
        elif isinstance(value, list) and value:
            yield b"["
            for j, item in enumerate(value):
                if j:
                    yield b","
                if isinstance(item, list) and len(item) > _PIECE_ITEMS:
                    # a long list in a list (an audit's address_sets: 100,000 addresses of a
                    # blocklist) in pieces too: written whole it was megabytes of bytes at once,
                    # twice that while the encoder grew its buffer
                    yield b"["
                    for k in range(0, len(item), _PIECE_ITEMS):
                        yield (b"," if k else b"") + encode(item[k:k + _PIECE_ITEMS])[1:-1]
                    yield b"]"
                else:
                    yield encode(item)
            yield b"]"
        else:
            yield encode(value)
    yield b"}"


# the items of a list in a list dumps_pieces writes at a time
_PIECE_ITEMS = 4096
# the items of an iterator member (a streamed audit's services) it encodes at a time
_BATCH = 64


def _listed(data):
    """A document whose iterator members (see dumps_pieces) are lists, in the order of the
    members (each read before the next: a later member may be what an earlier one fills)."""
    if isinstance(data, dict) and any(isinstance(v, Iterator) for v in data.values()):
        return {k: list(v) if isinstance(v, Iterator) else v for k, v in data.items()}
    return data


def write_json(data, stream: Optional[IO[str]] = None, pretty: Optional[bool] = None) -> None:
    """Write ``data`` and a newline to a text stream (default: standard output), indented for
    a person at a terminal (``pretty`` None) or as ``pretty`` says."""
    out = sys.stdout if stream is None else stream
    # (in pieces, and the newline after them: never a copy of the whole document)
    pieces = dumps_pieces(data, pretty=out.isatty() if pretty is None else pretty)
    buffer = getattr(out, "buffer", None)
    if buffer is None:  # a text-only stream (io.StringIO in a test)
        for piece in pieces:
            out.write(piece.decode("utf-8"))
        out.write("\n")
        return
    out.flush()
    for piece in pieces:
        buffer.write(piece)
    buffer.write(b"\n")
    buffer.flush()
