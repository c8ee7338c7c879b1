"""--format json: the versioned document itself."""

from __future__ import annotations

from twinwall.report.json_out import dumps
from twinwall.report.formats import Format, RenderOptions
from twinwall.report.registry import AUDIT, AUDIT_VERBOSE, DIFF, DIFF_VERBOSE, FLEET, SCAN


def _render(document, options: RenderOptions) -> str:
    return dumps(document, pretty=bool(options.extra.get("pretty"))).decode("utf-8") + "\n"


FORMAT = Format("json", "the versioned JSON document", frozenset({AUDIT, AUDIT_VERBOSE, DIFF, DIFF_VERBOSE, SCAN, FLEET}), _render)
