"""The snapshot file: a HostSnapshot as versioned JSON (documented in docs/snapshot.md).

``write_snapshot`` / ``read_snapshot`` are the only way in and out; ``read_snapshot`` checks the
schema and every field's type and says in one line what is wrong, so ``twinwall audit --snapshot``
never fails with a traceback on a hand-edited or foreign file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import sys
import typing
from typing import Any, Dict, List

from twinwall.errors import InputError
from twinwall.model import FAMILIES, HostSnapshot, InterfaceAddress, ListeningSocket

__all__ = ["SCHEMA", "snapshot_to_json", "snapshot_from_json", "write_snapshot", "read_snapshot"]

SCHEMA = "twinwall.snapshot/1"


def snapshot_to_json(snap: HostSnapshot) -> Dict[str, Any]:
    """The JSON document of a snapshot: ``{"schema": SCHEMA, **snap.to_dict()}``."""
    doc: Dict[str, Any] = {"schema": SCHEMA}
    doc.update(snap.to_dict())
    return doc


def write_snapshot(snap: HostSnapshot, path: str) -> None:
    """Write the snapshot as JSON to ``path`` ("-" = stdout)."""
    blob = _json_bytes(snapshot_to_json(snap)) + b"\n"
    if path == "-":
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a text-only stream (io.StringIO in a test)
            sys.stdout.write(blob.decode("utf-8"))
            return
        sys.stdout.flush()
        buffer.write(blob)
        buffer.flush()
        return
    try:
        with open(path, "wb") as fh:
            fh.write(blob)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _json_bytes(doc: Dict[str, Any]) -> bytes:
    """Indented UTF-8 JSON. The standard library's encoder: the collector runs on audited hosts
    and needs nothing else (the same bytes report.json_out's orjson writes)."""
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


def read_snapshot(path: str) -> HostSnapshot:
    """Read and check a snapshot file ("-" = stdin); InputError with a one-line reason."""
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                raw = fh.read()
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not a snapshot file") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not a twinwall snapshot: not UTF-8 text (byte {exc.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}: not a twinwall snapshot: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        # no snapshot nests more than four levels; a document this deep is not one
        raise InputError(f"{name}: not a twinwall snapshot: the JSON is nested too deeply") from None
    return snapshot_from_json(doc, name)


def snapshot_from_json(doc: Any, name: str = "snapshot") -> HostSnapshot:
    """A HostSnapshot from a parsed JSON document, checking the schema and every field."""
    if not isinstance(doc, dict):
        raise InputError(
            f"{name}: not a twinwall snapshot: the top level is {_kind(doc)}, expected an object "
            f'with "schema": "{SCHEMA}"'
        )
    if "schema" not in doc:
        raise InputError(f'{name}: not a twinwall snapshot: no "schema" field (expected "{SCHEMA}")')
    if doc["schema"] != SCHEMA:
        raise InputError(
            f'{name}: unsupported snapshot schema {json.dumps(doc["schema"])} (expected "{SCHEMA}")'
        )
    c = _Checker(name)
    c.fields(doc, "", _TOP)
    sockets = c.items(doc, "sockets", _SOCKET)
    addresses = c.items(doc, "addresses", _ADDRESS)
    rulesets = c.items(doc, "rulesets", _RULESET)
    c.items(doc, "table_sources", _TABLE_SOURCE)
    ipv6 = doc.get("ipv6", {"enabled": None, "evidence": []})
    c.check(ipv6, "ipv6", dict)
    c.fields(ipv6, "ipv6.", _IPV6)
    for i, s in enumerate(sockets):
        c.enum(s, f"sockets[{i}].", "protocol", ("tcp", "udp"))
        c.enum(s, f"sockets[{i}].", "family", FAMILIES)
        c.port(s, f"sockets[{i}].port")
        c.address(s, f"sockets[{i}].")
    for i, a in enumerate(addresses):
        c.enum(a, f"addresses[{i}].", "family", FAMILIES)
        c.address(a, f"addresses[{i}].")
        if not 0 <= a["prefixlen"] <= (32 if a["family"] == "ipv4" else 128):
            c.fail(f"addresses[{i}].prefixlen", f"{a['prefixlen']} is out of range")
    for i, r in enumerate(rulesets):
        c.enum(r, f"rulesets[{i}].", "family", FAMILIES + ("inet",))
    for key, value in doc.get("sysctls", {}).items():
        c.check(value, f"sysctls.{key}", str)
    return HostSnapshot.from_dict(doc)


# field -> (type, required, nullable); "list:str" is a list of strings, "list" a list of objects.
_Spec = Dict[str, tuple]


def _spec_of(cls: type) -> _Spec:
    """The spec of a model dataclass, read from its fields: the type from the annotation,
    required when there is no default, nullable when the annotation is Optional."""
    hints = typing.get_type_hints(cls)
    out: _Spec = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        nullable = type(None) in args
        kind = next(a for a in args if a is not type(None)) if nullable else hint
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out[f.name] = (kind, required, nullable)
    return out


_TOP: _Spec = {
    "hostname": (str, False, False),
    "collected_at": (str, False, False),
    "kernel": (str, False, False),
    "sockets": ("list", False, False),
    "sockets_known": (bool, False, False),
    "addresses": ("list", False, False),
    "addresses_known": (bool, False, False),
    "interfaces": ("list:str", False, False),
    "ipv6": (dict, False, False),
    "rulesets": ("list", False, False),
    "missing": ("list:str", False, False),
    "table_sources": ("list", False, False),
    "sysctls": (dict, False, False),
    "ipsets": (str, False, False),
}
_SOCKET: _Spec = _spec_of(ListeningSocket)
_ADDRESS: _Spec = _spec_of(InterfaceAddress)
_IPV6: _Spec = {
    "enabled": (bool, False, True),
    "evidence": ("list:str", False, False),
    "disabled_interfaces": ("list:str", False, False),
}
_RULESET: _Spec = {
    "family": (str, True, False),
    "format": (str, True, False),
    "backend": (str, False, True),
    "source": (str, False, True),
    "text": (str, True, False),
    "netlink": (str, False, True),
}
_TABLE_SOURCE: _Spec = {
    "table": (str, True, False),
    "source": (str, True, False),
    "reason": (str, False, False),
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", dict: "an object",
               "list": "a list", "list:str": "a list of strings"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Checker:
    def __init__(self, name: str):
        self.name = name

    def fail(self, where: str, why: str) -> None:
        raise InputError(f"{self.name}: bad snapshot field {where}: {why}")

    def check(self, value: Any, where: str, expected: Any) -> None:
        if expected == "list:str":
            if not isinstance(value, list):
                self.fail(where, f"expected a list of strings, found {_kind(value)}")
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    self.fail(f"{where}[{i}]", f"expected a string, found {_kind(item)}")
            return
        if expected == "list":
            ok = isinstance(value, list)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, expected)
        if not ok:
            self.fail(where, f"expected {_TYPE_NAMES[expected]}, found {_kind(value)}")

    def fields(self, obj: Dict[str, Any], prefix: str, spec: _Spec) -> None:
        for key, (expected, required, nullable) in spec.items():
            if key not in obj:
                if required:
                    self.fail(f"{prefix}{key}", "missing")
                continue
            value = obj[key]
            if value is None and nullable:
                continue
            self.check(value, f"{prefix}{key}", expected)

    def items(self, doc: Dict[str, Any], key: str, spec: _Spec) -> List[Dict[str, Any]]:
        values = doc.get(key, [])
        out = []
        for i, item in enumerate(values):
            where = f"{key}[{i}]"
            if not isinstance(item, dict):
                self.fail(where, f"expected an object, found {_kind(item)}")
            self.fields(item, where + ".", spec)
            out.append(item)
        return out

    def enum(self, obj: Dict[str, Any], prefix: str, key: str, allowed: tuple) -> None:
        if obj[key] not in allowed:
            self.fail(
                f"{prefix}{key}",
                f"{json.dumps(obj[key])} is not one of " + ", ".join(json.dumps(a) for a in allowed),
            )

    def address(self, obj: Dict[str, Any], prefix: str) -> None:
        """``address`` is a numeric address of the object's ``family``, as ``twinwall collect``
        writes it (a socket's wildcard is ``0.0.0.0`` or ``::``)."""
        value, family = obj["address"], obj["family"]
        if value == "*" and "port" in obj:
            return  # ss's spelling of a dual-stack wildcard socket, read as such by the model
        try:
            version = ipaddress.ip_address(value).version
        except ValueError:
            self.fail(f"{prefix}address", f"{json.dumps(value)} is not an IP address")
        if version != (4 if family == "ipv4" else 6):
            self.fail(f"{prefix}address", f"{json.dumps(value)} is not an {family} address (family is {family})")

    def port(self, obj: Dict[str, Any], where: str) -> None:
        value = obj["port"]
        if not 0 <= value <= 65535:
            self.fail(where, f"{value} is not a port number (0-65535)")

