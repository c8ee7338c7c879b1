"""The import graph of src/twinwall: no circle, and no import from a lower layer to a higher one.

Every module's imports are read with ``ast``, those inside functions included (an import moved
into a function to break a circle still counts); imports under ``if TYPE_CHECKING:`` are left
out, since they never run. The layers, lowest first:

  floor      the model (model, errors, vocabulary, gc_pause, netfilter: packet sets, interfaces, the
             typed ruleset), then what reads into it (parsers, loader, findings catalogue, twins)
  analysis   analysis/, and the parts built on it: scan/, apply/, fix/, policy/
  report     report/
  commands   commands/, cli, __main__, scan.cli

A module may import its own layer or lower ones. netfilter/ imports only vocabulary, model and errors;
the collector (sources/, run on audited hosts with nothing but the stdlib) only the
stdlib, the model and errors.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Set, Tuple

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")
PKG = "twinwall"

FLOOR, ANALYSIS, REPORT, COMMANDS = 0, 1, 2, 3
LAYER_NAMES = {FLOOR: "floor", ANALYSIS: "analysis", REPORT: "report", COMMANDS: "commands"}
# module (or package prefix) -> layer; the longest matching prefix wins
LAYERS = {
    "twinwall": FLOOR,  # the package itself (__version__)
    "twinwall.model": FLOOR,
    "twinwall.errors": FLOOR,
    "twinwall.netfilter": FLOOR,
    "twinwall.parsers": FLOOR,
    "twinwall.loader": FLOOR,
    "twinwall.findings": FLOOR,
    "twinwall.twins": FLOOR,
    "twinwall.vocabulary": FLOOR,
    "twinwall.gc_pause": FLOOR,
    "twinwall.sources": FLOOR,
    "twinwall.analysis": ANALYSIS,
    "twinwall.scan": ANALYSIS,
    "twinwall.apply": ANALYSIS,
    "twinwall.fix": ANALYSIS,
    "twinwall.policy": ANALYSIS,
    "twinwall.report": REPORT,
    "twinwall.commands": COMMANDS,
    "twinwall.cli": COMMANDS,
    "twinwall.__main__": COMMANDS,
    "twinwall.scan.cli": COMMANDS,
}
# packages held to a narrower rule than their layer: prefix -> the twinwall modules they may use
RESTRICTED = {
    "twinwall.netfilter": ("twinwall.netfilter", "twinwall.vocabulary", "twinwall.model", "twinwall.errors"),
    "twinwall.sources": ("twinwall.sources", "twinwall.model", "twinwall.errors"),
}


def modules() -> Dict[str, str]:
    """Module name -> file, for every .py file under src/twinwall."""
    out = {}
    root = os.path.join(SRC, PKG)
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
            out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: str, known: Dict[str, str]) -> List[Tuple[str, int]]:
    """The twinwall modules a module imports, with line numbers. ``from a.b import c`` counts as
    an import of ``a.b.c`` when that is a module, else of ``a.b``."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found: List[Tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in known else base, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return list(dict.fromkeys((m, line) for m, line in found if m == PKG or m.startswith(PKG + ".")))


def _prefix_lookup(name: str, table: Dict[str, object]) -> Optional[str]:
    best = None
    for prefix in table:
        if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def layer_of(name: str) -> Optional[int]:
    prefix = _prefix_lookup(name, LAYERS)
    if prefix is None or (prefix == PKG and name != PKG):
        return None
    return LAYERS[prefix]


def graph() -> Dict[str, List[Tuple[str, int]]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in sorted(known.items())}


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer_of(m) is None]
    assert not missing, f"modules with no layer (add their package to LAYERS in {__file__}): {missing}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    wrong = []
    for name, imported in graph().items():
        mine = layer_of(name)
        restricted = _prefix_lookup(name, RESTRICTED)
        for target, line in imported:
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{name}:{line} ({LAYER_NAMES[mine]}) imports {target} ({LAYER_NAMES[theirs]})")
            elif restricted and not any(target == a or target.startswith(a + ".") for a in RESTRICTED[restricted]):
                wrong.append(f"{name}:{line} imports {target}: {restricted} may use only {RESTRICTED[restricted]}")
    assert not wrong, "\n".join(wrong)


def find_cycle(edges: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import circle of the graph (a list of modules, first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in edges}
    stack: List[str] = []

    def dfs(n: str) -> Optional[List[str]]:
        colour[n] = GREY
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if colour.get(m, BLACK) == GREY:
                return stack[stack.index(m):] + [m]
            if colour.get(m) == WHITE:
                found = dfs(m)
                if found:
                    return found
        stack.pop()
        colour[n] = BLACK
        return None

    for n in sorted(edges):
        if colour[n] == WHITE:
            found = dfs(n)
            if found:
                return found
    return None


def _edges() -> Dict[str, Set[str]]:
    g = graph()
    # a package's __init__ importing its own submodules is how packages re-export: not a circle
    # with the submodules importing their siblings
    return {
        name: {t for t, _ in imported if t != name and not (t.startswith(name + ".") and name != PKG)}
        for name, imported in g.items()
    }


# Circles known and owned, each with the edge that closes it (left out of the check). The test
# below fails once one is gone, so the entry is removed with the circle.
KNOWN_CIRCLES: Set[Tuple[str, str]] = set()


def test_no_import_circle():
    edges = _edges()
    for a, b in KNOWN_CIRCLES:
        edges[a] = edges[a] - {b}
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def _reaches(edges: Dict[str, Set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n == goal:
            return True
        if n not in seen:
            seen.add(n)
            todo.extend(edges.get(n, ()))
    return False


def test_known_circles_still_exist():
    edges = _edges()
    for a, b in KNOWN_CIRCLES:
        assert b in edges.get(a, ()) and _reaches(edges, b, a), (
            f"{a} -> {b} no longer closes a circle: remove it from KNOWN_CIRCLES"
        )


def test_the_checks_can_fail():
    """The circle finder and the layer lookup are not vacuous."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("twinwall.scan.cli") == COMMANDS and layer_of("twinwall.scan.engine") == ANALYSIS
    assert layer_of("twinwall.newthing") is None
    known = modules()
    assert ("twinwall.analysis.evaluator", 1) not in imports_of("x", __file__, known)
    # imports inside functions count
    imported = dict(imports_of("twinwall.analysis.audit", known["twinwall.analysis.audit"], known))
    assert "twinwall.analysis.diff.compare" in imported
