#!/usr/bin/env python3
"""Keeps each crate's layering: `python3 dev/layers.py` (run by .ci/run).

Every path into the crate (`crate::x` and `super::` chains that reach the crate root), in code
and `use` lines alike (comments are skipped), names the top-level module it depends on. A module
may depend on modules of its own layer or lower ones, never a higher one, and no two top-level
modules may depend on each other, directly or around a loop. Exits 1 listing every breach.

The known breaches of today are listed in `TODAY`, each with the issue that removes it; the
check fails when one of them is gone (so the list only shrinks) as well as on any new one.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lower number = lower layer. Each crate's table names every top-level module.
LAYERS = {
    "bridge/src": {
        # storage knows nothing of fan-out or the wire
        "storage": 0,
        # the wire protocol and the grants
        "protocol": 1,
        "auth": 1,
        # fan-out: records and opaque frames
        "fanout": 2,
        # use cases
        "admit": 3,
        "session": 3,
        "catchup": 3,
        "queries": 3,
        "retained_store": 3,
        "retention": 3,
        "ingest": 3,
        "follower": 3,
        "error": 3,
        # opening a client's subscription (the stream core's entry)
        "subscription": 4,
        # the HTTP edge and its drivers
        "state": 5,
        "http": 5,
        "ws": 5,
        "served": 5,
        "metrics": 5,
        "logging": 5,
        # wiring and the crate's own tools
        "lib": 6,
        "main": 6,
        "tools": 6,
        "testkit": 6,
        "fuzzing": 6,
        "benching": 6,
    },
    "broker/src": {
        "error": 0,
        "users": 0,
        "tls": 0,
        "ports": 0,
        "served": 0,
        "link": 1,
        "proxy": 2,
        "embedded": 3,
        "lib": 4,
        "fuzzing": 4,
    },
}

# Breaches known today: (crate dir, from, to) -> why it is still there.
TODAY: dict = {}

# Comments and string and char literals, whose braces and paths are not code: one pass, left
# to right, so `//` inside a string and a quote inside a comment are each read as what they are.
NOT_CODE = re.compile(
    r"//[^\n]*|/\*[\s\S]*?\*/"
    r'|(?<![A-Za-z0-9_])b?r(#*)"[\s\S]*?"\1'
    r'|b?"(?:\\.|[^"\\])*"'
    r"|b?'(?:\\.|[^'\\])'"
)
TOKEN = re.compile(r"\bmod\s+([a-z_][a-z0-9_]*)\s*\{|[{}]|\b(crate|(?:super::)+)(?:::)?([a-z_][a-z0-9_]*)")


def module_path(rel):
    """The module path of a source file relative to the crate's src (`a/b.rs` -> [a, b])."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return []
    return parts


def top_module(rel):
    parts = rel[:-3].split(os.sep)
    return parts[0]


def targets(rel, text):
    """The top-level modules a file's paths reach, minding inline `mod x { … }` blocks."""
    file_depth = len(module_path(rel))
    text = NOT_CODE.sub(" ", text)
    depth = 0
    inline = []  # brace depth at which each open inline module started
    for m in TOKEN.finditer(text):
        if m.group(1):
            inline.append(depth)
            depth += 1
        elif m.group(0) == "{":
            depth += 1
        elif m.group(0) == "}":
            depth -= 1
            if inline and inline[-1] == depth:
                inline.pop()
        elif m.group(2) == "crate":
            yield m.group(3)
        else:
            # A `super` chain that climbs out of every module reaches the crate root, and
            # names a top-level module next.
            if m.group(2).count("super::") == file_depth + len(inline):
                yield m.group(3)


def edges(src_dir):
    out = set()
    base = os.path.join(ROOT, src_dir)
    for d, _, files in os.walk(base):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            rel = os.path.relpath(path, base)
            me = top_module(rel)
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            for t in targets(rel, text):
                if t != me:
                    out.add((me, t))
    return out


def cycles(graph):
    """Pairs (a, b) where b reaches a again, so a -> b lies on a loop."""
    reach = {}

    def reachable(start):
        if start in reach:
            return reach[start]
        seen, todo = set(), [start]
        while todo:
            n = todo.pop()
            for m in graph.get(n, ()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        reach[start] = seen
        return seen

    return {(a, b) for a in graph for b in graph[a] if a in reachable(b)}


def check():
    problems = []
    found_today = set()
    for src_dir, layers in LAYERS.items():
        es = edges(src_dir)
        found_today |= {(src_dir, a, b) for a, b in es if (src_dir, a, b) in TODAY}
        graph = {}
        for a, b in sorted(es):
            if a not in layers or b not in layers:
                missing = a if a not in layers else b
                problems.append(f"{src_dir}: module `{missing}` has no layer in dev/layers.py")
                continue
            if (src_dir, a, b) in TODAY:
                continue
            graph.setdefault(a, set()).add(b)
            if layers[b] > layers[a]:
                problems.append(
                    f"{src_dir}: `{a}` (layer {layers[a]}) imports `{b}` (layer {layers[b]}), "
                    "a higher layer"
                )
        for a, b in sorted(cycles(graph)):
            problems.append(f"{src_dir}: `{a}` imports `{b}`, from which `{a}` is reached again (a loop)")
    for key in sorted(set(TODAY) - found_today):
        problems.append(
            f"{key[0]}: `{key[1]}` -> `{key[2]}` is gone: remove it from TODAY in dev/layers.py"
        )
    return problems


def main():
    problems = check()
    for p in problems:
        print(f"layers: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"layers: ok ({len(TODAY)} known breaches left, listed in dev/layers.py)")


if __name__ == "__main__":
    main()
