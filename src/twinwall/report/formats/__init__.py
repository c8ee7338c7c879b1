"""One module per output format; see twinwall.report.registry. Here: what a format is and what
it is given besides the document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional


@dataclass(frozen=True)
class RenderOptions:
    """What a renderer may need beyond the document. ``fail_on``: the severity threshold
    (JUnit failures, exit codes); ``location``: the path SARIF cites when a finding has no rules
    file of its own (a live audit: the snapshot path); ``color``: ANSI colour in text output;
    ``extra``: format-specific settings."""

    fail_on: str = "medium"
    location: Optional[str] = None
    color: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Format:
    """``render(document, options)`` returns the output as text (a trailing newline
    included). ``documents``: the schemas it renders."""

    name: str
    help: str
    documents: FrozenSet[str]
    render: Callable[[Dict[str, Any], RenderOptions], str]
