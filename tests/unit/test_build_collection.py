"""scripts/build_ansible_collection.py: the collection's module_utils are twinwall's collector with
its imports rewritten, and the build refuses a collector that needs more than the stdlib."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import build_ansible_collection as bac  # noqa: E402


def test_built_collection_ships_the_collector_stdlib_only(tmp_path: Path) -> None:
    target = bac.build(tmp_path)
    assert (target / "galaxy.yml").is_file() and (target / "playbooks" / "fleet.yml").is_file()
    utils = sorted(p.name for p in (target / "plugins" / "module_utils").glob("*.py"))
    assert utils == sorted(f"{n}.py" for n in bac.SHIPPED.values())
    for path in (target / "plugins" / "module_utils").glob("*.py"):
        text = path.read_text()
        tree = ast.parse(text)  # valid Python
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("twinwall"), (path.name, node.module)
                top = node.module.split(".")[0]
                assert top in sys.stdlib_module_names or node.module.startswith(bac.MODULE_UTILS), node.module
    # the shipped source is the current source, not a fork
    host = (target / "plugins/module_utils/twinwall_host.py").read_text()
    assert "def collect_host(" in host and (REPO / "src/twinwall/sources/host.py").read_text().split(
        "def collect_host(")[1] == host.split("def collect_host(")[1]


@pytest.mark.parametrize("text, complaint", [
    ("import requests\n", "not in Python's standard library"),
    ("from twinwall.analysis.audit import audit_snapshot\n", "does not ship"),
    ("import twinwall.model\n", "does not ship"),
    ("from .model import X\n", "relative import"),
    ("def f():\n    import yaml\n", "not in Python's standard library"),
])
def test_non_stdlib_collector_is_refused(text: str, complaint: str) -> None:
    with pytest.raises(bac.NotStdlibOnly, match=complaint):
        bac.check_imports(text, "x.py")


def test_optional_import_and_shipped_modules_are_allowed() -> None:
    text = ("try:\n    import orjson\nexcept ImportError:\n    orjson = None\n"
            "import json, subprocess\nfrom twinwall.model import IPV4\n")
    assert bac.check_imports(text, "x.py") == ["twinwall.model"]
