"""The JSON writer: the same JSON value whichever encoder writes it, indented only at a terminal."""

import io
import json

import pytest

from twinwall.report import json_out

DOC = {
    "schema": "twinwall.audit/1",
    "services": [{"port": 22, "process": "docker: dnat \u2192 192.0.2.7:80", "v6only": None, "ok": True}],
    "ratio": 0.5,
    7: "a non-string key, as json.dumps writes it",
}


def _value(blob: bytes):
    return json.loads(blob.decode("utf-8"))


def test_compact_and_pretty_encode_the_same_value():
    expected = json.loads(json.dumps(DOC))
    compact = json_out.dumps(DOC)
    pretty = json_out.dumps(DOC, pretty=True)
    assert _value(compact) == _value(pretty) == expected
    assert b"\n" not in compact
    assert b'\n  "schema"' in pretty


def test_values_orjson_refuses_fall_back_to_the_standard_library():
    # an IPv6 address as an integer is wider than 64 bits
    doc = {"address": (0x20010DB8 << 96) + 1}
    assert _value(json_out.dumps(doc)) == doc


def test_standard_library_path_gives_the_same_value(monkeypatch):
    fast = json_out.dumps(DOC)
    monkeypatch.setattr(json_out, "orjson", None)
    slow = json_out.dumps(DOC)
    assert _value(slow) == _value(fast)


class _Terminal(io.TextIOWrapper):
    def isatty(self):
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_write_json_to_a_byte_backed_stream(tty):
    raw = io.BytesIO()
    stream = (_Terminal if tty else io.TextIOWrapper)(raw, encoding="utf-8")
    stream.write("before ")  # text already buffered must come out first
    json_out.write_json(DOC, stream)
    text = raw.getvalue().decode("utf-8")
    assert text.startswith("before ")
    body = text[len("before "):]
    assert body.endswith("\n")
    assert json.loads(body) == json.loads(json.dumps(DOC))
    assert ("\n  " in body) == tty


def test_write_json_to_a_text_only_stream():
    out = io.StringIO()
    json_out.write_json(DOC, out)
    assert json.loads(out.getvalue()) == json.loads(json.dumps(DOC))


def test_the_pieces_join_into_the_same_bytes():
    doc = {"schema": "twinwall.audit/1", "services": [{"port": 22}, {"port": 80, "v6only": None}], "empty": [],
           "host": {"name": "h"}, "address": (0x20010DB8 << 96) + 1}
    pieces = list(json_out.dumps_pieces(doc))
    assert len(pieces) > 3 and b"".join(pieces) == json_out.dumps(doc)
    assert b"".join(json_out.dumps_pieces(DOC)) == json_out.dumps(DOC)  # (a non-string key: whole)
    assert list(json_out.dumps_pieces(doc, pretty=True)) == [json_out.dumps(doc, pretty=True)]


def test_a_long_list_in_a_list_is_written_in_pieces_of_the_same_bytes():
    for size in (json_out._PIECE_ITEMS, json_out._PIECE_ITEMS + 1, 3 * json_out._PIECE_ITEMS, 10_000):
        addresses = [f"192.0.2.{k % 256}/32" for k in range(size)]
        doc = {"schema": "twinwall.audit/2", "address_sets": [["198.51.100.0/24"], addresses, [], addresses[:5]],
               "mixed": [addresses, {"a": 1}, [1, None, "x"] * size]}
        pieces = list(json_out.dumps_pieces(doc))
        assert b"".join(pieces) == json_out.dumps(doc)
        assert max(map(len, pieces)) < len(json_out.dumps(addresses)) or size <= json_out._PIECE_ITEMS


def test_an_iterator_member_is_written_as_the_list_of_its_items_made_in_order():
    filled: list = []

    def services():
        for port in (22, 80, 443):
            filled.append(port)  # (what a later member reads: filled as the items are made)
            yield {"port": port}

    whole = {"schema": "s", "services": [{"port": p} for p in (22, 80, 443)], "empty": [], "sets": [22, 80, 443]}
    assert b"".join(json_out.dumps_pieces({"schema": "s", "services": services(), "empty": iter(()), "sets": filled})) == json_out.dumps(whole)
    filled.clear()
    assert list(json_out.dumps_pieces({"schema": "s", "services": services(), "empty": iter(()), "sets": filled}, pretty=True)) == [
        json_out.dumps(whole, pretty=True)]


def test_pieces_of_a_small_document_leave_orjson_unloaded(monkeypatch):
    # (its import is most of a small report's writing: the standard library writes it)
    monkeypatch.setattr(json_out, "orjson", json_out._UNLOADED)
    blob = b"".join(json_out.dumps_pieces({"schema": "x", "items": [DOC["services"][0]] * 10}))
    assert json_out.orjson is json_out._UNLOADED
    assert _value(blob) == {"schema": "x", "items": [DOC["services"][0]] * 10}


def test_pieces_past_the_standard_library_s_share_are_the_same_value(monkeypatch):
    # a document of both encoders' pieces: the same value as one written whole
    monkeypatch.setattr(json_out, "orjson", json_out._UNLOADED)
    monkeypatch.setattr(json_out, "_STDLIB_BYTES", 200)
    doc = {"schema": "x", "items": [{"n": i, "s": "\u2192 \"q\" \\ \n", "f": i / 7} for i in range(50)],
           "tail": {"k": [1, 2, None, True]}}
    blob = b"".join(json_out.dumps_pieces(doc))
    assert json_out.orjson is not json_out._UNLOADED  # (orjson wrote the rest, where installed)
    assert _value(blob) == json.loads(json.dumps(doc))
    assert blob == json_out.dumps(doc)  # (and both encoders spell plain values alike)


def test_an_iterator_member_longer_than_a_batch_is_the_same_bytes():
    # (encoded a batch of items at a time: the joins between batches, a batch's last item)
    for n in (json_out._BATCH - 1, json_out._BATCH, json_out._BATCH + 1, 3 * json_out._BATCH + 5):
        items = [{"port": p, "name": f"svc{p}"} for p in range(n)]
        got = b"".join(json_out.dumps_pieces({"services": iter(items), "after": len(items)}))
        assert got == json_out.dumps({"services": items, "after": n}), n
