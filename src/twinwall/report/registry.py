"""The output-format registry: every `--format NAME` twinwall knows, in one table.

A format renders a *versioned document* (``twinwall.audit/2``, ``twinwall.diff/2``,
``twinwall.scan/1``, ``twinwall.fleet/1``: plain JSON-shaped dicts), never analysis objects, so
it works the same on a fresh run, on a saved JSON file (``twinwall report FILE.json --format
NAME``) and on many hosts at once (a fleet document holds one audit document per host).

Each format is one module under ``twinwall.report.formats`` exposing ``FORMAT``, a
:class:`twinwall.report.formats.Format`. The registry imports a format's module only when that
format is chosen, so a command pays only for the format it prints (and a command's parser, which
asks for its ``--format`` choices, for no format at all).

A command asks :func:`choices` for its ``--format`` choices and calls :func:`render`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Optional, Tuple

if TYPE_CHECKING:
    from twinwall.report.formats import Format, RenderOptions

AUDIT = "twinwall.audit/2"  # (address lists written once, in a shared table; /1: inline, --verbose)
AUDIT_VERBOSE = "twinwall.audit/1"
DIFF = "twinwall.diff/2"  # (rules cited once, in a shared table; /1: cited in full, --verbose)
DIFF_VERBOSE = "twinwall.diff/1"
SCAN = "twinwall.scan/1"
FLEET = "twinwall.fleet/1"


_ALL = frozenset({AUDIT, AUDIT_VERBOSE, DIFF, DIFF_VERBOSE, SCAN, FLEET})
# what the host formats render: an audit in either form, a fleet of them
HOSTS = frozenset({AUDIT, AUDIT_VERBOSE, FLEET})

# name -> module, in the order --help lists them. A format module not listed here is not a format.
_MODULES: Dict[str, str] = {
    "json": "twinwall.report.formats.json_doc",
    "sarif": "twinwall.report.formats.sarif",
    "junit": "twinwall.report.formats.junit",
    "prometheus": "twinwall.report.formats.prometheus",
    "html": "twinwall.report.formats.html",
}

# What each shipped format renders, known without importing it: --format choices are built for
# every command's parser, and importing every renderer there would cost each run. A test checks
# this table against each module's FORMAT.documents.
_DOCUMENTS: Dict[str, FrozenSet[str]] = {
    "json": _ALL,
    "sarif": HOSTS,
    "junit": HOSTS,
    "prometheus": HOSTS,
    "html": HOSTS,
}

_loaded: Dict[str, Format] = {}


def register_module(name: str, module: str) -> None:
    """Add a format module (used by the format modules' own tests; the shipped formats are
    listed in ``_MODULES``)."""
    _MODULES[name] = module
    _DOCUMENTS.pop(name, None)


def get(name: str) -> Format:
    if name not in _MODULES:
        from twinwall.errors import InputError

        raise InputError(f"unknown format {name!r} (known: {', '.join(_MODULES)})")
    if name not in _loaded:
        module = importlib.import_module(_MODULES[name])
        _loaded[name] = module.FORMAT
    return _loaded[name]


def names() -> List[str]:
    return list(_MODULES)


def choices(schema: str, extra: Tuple[str, ...] = ()) -> List[str]:
    """The --format choices for a command printing ``schema`` documents: ``extra`` (formats the
    command renders itself, such as the table) first, then every registered format for it."""
    return list(extra) + [n for n in _MODULES if n not in extra and schema in documents(n)]


def documents(name: str) -> FrozenSet[str]:
    """The schemas format ``name`` renders (without importing it when it is a shipped one)."""
    known = _DOCUMENTS.get(name)
    return known if known is not None else get(name).documents


def render(name: str, document: Dict[str, Any], options: Optional[RenderOptions] = None) -> str:
    fmt = get(name)
    schema = document.get("schema")
    if schema not in fmt.documents:
        from twinwall.errors import InputError

        raise InputError(f"format {name!r} does not render {schema!r} documents "
                         f"(it renders: {', '.join(sorted(fmt.documents))})")
    if options is None:
        from twinwall.report.formats import RenderOptions

        options = RenderOptions()
    return fmt.render(document, options)
