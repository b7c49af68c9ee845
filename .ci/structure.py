#!/usr/bin/env python3
"""Checks the structure of server/src, so that anyone can repeat it:

1. Layering: the modules in LAYERS, top first; a module may use modules of
   lower layers only (never one above it), and no two modules of one layer
   may use each other (no cycle). Reads `use crate::...` lines and
   `crate::name::` paths (test modules at the end of a file are left out:
   tests may reach anywhere).
2. Size: no file over MAX_LINES lines, not counting its unit tests at the
   end, except the data tables in LARGE_DATA_FILES.

Prints every problem and exits 1, or a summary and exits 0.

    python3 .ci/structure.py
"""

import pathlib
import re
import sys

# Top first. Each line is one layer; a module may use any module of a lower line.
LAYERS = [
    ["main", "cli"],
    ["server"],
    ["config"],
    ["flight"],
    ["engine"],
    ["auth"],
    ["catalog"],
    ["lake"],
    ["delta", "lineage"],
    ["footers", "storage", "demo", "runtime", "sql_text", "names", "identity"],
    ["telemetry", "traces"],
    ["lib"],
]

MAX_LINES = 600
LARGE_DATA_FILES = {"flight/sql_info.rs"}

SRC = pathlib.Path(__file__).resolve().parents[1] / "server" / "src"
USE = re.compile(r"\bcrate::([a-z_]+)")


def module_of(path: pathlib.Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def without_tests(text: str) -> str:
    cut = text.find("\n#[cfg(test)]\nmod tests")
    return text if cut < 0 else text[:cut]


def main() -> int:
    layer_of = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    edges = {}
    for path in sorted(SRC.rglob("*.rs")):
        source = module_of(path)
        if source == "lib":
            continue
        for target in USE.findall(without_tests(path.read_text())):
            if target != source:
                edges.setdefault((source, target), set()).add(str(path.relative_to(SRC.parents[1])))
    problems = []
    for (source, target), files in sorted(edges.items()):
        if source not in layer_of or target not in layer_of:
            problems.append(f"{source} -> {target}: a module missing from LAYERS in .ci/structure.py ({', '.join(sorted(files))})")
        elif layer_of[target] <= layer_of[source] and layer_of[target] != layer_of[source]:
            problems.append(f"{source} -> {target}: imports upward ({', '.join(sorted(files))})")
        elif layer_of[target] == layer_of[source] and (target, source) in edges:
            problems.append(f"{source} <-> {target}: a cycle within a layer ({', '.join(sorted(files))})")
    for path in sorted(SRC.rglob("*.rs")):
        relative = str(path.relative_to(SRC))
        lines = without_tests(path.read_text()).count("\n")
        if lines > MAX_LINES and relative not in LARGE_DATA_FILES:
            problems.append(f"server/src/{relative}: {lines} lines (without its tests); split it by concept (at most {MAX_LINES})")
    for problem in problems:
        print(problem)
    if problems:
        return 1
    for i, layer in enumerate(LAYERS):
        print(f"{i}: {', '.join(layer)}")
    print(f"{len(edges)} imports between modules, none upward, no cycle; no file over {MAX_LINES} lines but {', '.join(sorted(LARGE_DATA_FILES))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
