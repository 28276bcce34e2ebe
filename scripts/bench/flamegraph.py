#!/usr/bin/env python3
"""Draws a flame graph (SVG) from `perf script` output, offline, with the standard library only.

    perf record -e cpu-clock -F 2000 -g -o perf.data <program>
    perf script -i perf.data -F comm,ip,sym | scripts/bench/flamegraph.py > flame.svg
    perf script -i perf.data -F comm,ip,sym | scripts/bench/flamegraph.py --folded > perf.folded

Each sample's stack becomes a column of boxes, the program at the bottom and the sampled
function on top; a box's width is the share of samples whose stack passes through it. Hover a
box for its full name and share. --folded prints the collapsed stacks instead
("outer;inner;leaf count", one per line, hottest first), the input of other flame-graph tools.
"""

import html
import sys
import zlib

WIDTH = 1200
ROW = 17
FONT = 11
CHAR = FONT * 0.59  # average glyph width of a sans font at that size


def collapse(lines):
    """perf script text -> {"outer;...;leaf": samples}."""
    counts = {}
    comm, frames = None, []

    def flush():
        if comm is not None and frames:
            key = ";".join([comm] + frames[::-1])
            counts[key] = counts.get(key, 0) + 1

    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            flush()
            comm, frames = None, []
        elif not line[0].isspace():
            flush()
            comm, frames = line.split()[0], []
        else:
            parts = line.strip().split(" ", 1)
            symbol = parts[1] if len(parts) == 2 else parts[0]
            if symbol.endswith(")") and " (" in symbol and symbol.rsplit(" (", 1)[1].startswith("/"):
                symbol = symbol.rsplit(" (", 1)[0]  # drop "(/path/to/dso)" if -F dso was given
            frames.append(symbol)
    flush()
    return counts


def tree(counts):
    root = {"name": "all", "value": 0, "children": {}}
    for stack, n in counts.items():
        root["value"] += n
        node = root
        for name in stack.split(";"):
            child = node["children"].setdefault(name, {"name": name, "value": 0, "children": {}})
            child["value"] += n
            node = child
    return root


def colour(name):
    h = zlib.crc32(name.encode())
    if "kincir::" in name:
        return f"rgb({200 + h % 55},{90 + h % 70},{40 + (h >> 8) % 40})"  # warm: kincir's own code
    return f"rgb({215 + h % 40},{170 + (h >> 4) % 60},{80 + (h >> 8) % 50})"


def svg(root):
    depth = 0

    def measure(node, level):
        nonlocal depth
        depth = max(depth, level)
        for child in node["children"].values():
            measure(child, level + 1)

    measure(root, 0)
    height = (depth + 1) * ROW + 40
    total = root["value"] or 1
    scale = (WIDTH - 20) / total
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="{FONT}">',
           f'<rect width="100%" height="100%" fill="#fdfdf6"/>',
           f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="14">Flame graph: {total} samples</text>']

    def draw(node, x, level):
        w = node["value"] * scale
        if w < 0.3:
            return
        y = height - (level + 1) * ROW - 4
        share = 100.0 * node["value"] / total
        title = html.escape(f"{node['name']} ({node['value']} samples, {share:.1f} %)")
        out.append(f'<g><title>{title}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 1}" '
                   f'fill="{colour(node["name"])}" rx="2"/>')
        fits = int((w - 6) / CHAR)
        if fits >= 3:
            label = node["name"] if len(node["name"]) <= fits else node["name"][: fits - 2] + ".."
            out.append(f'<text x="{x + 3:.1f}" y="{y + ROW - 5}">{html.escape(label)}</text>')
        out.append("</g>")
        cx = x
        for child in sorted(node["children"].values(), key=lambda c: c["name"]):
            draw(child, cx, level + 1)
            cx += child["value"] * scale

    draw(root, 10, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    counts = collapse(sys.stdin)
    if not counts:
        print("flamegraph.py: no stack in the input (record with -g, print with -F comm,ip,sym)", file=sys.stderr)
        return 1
    if "--folded" in argv:
        for stack, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(stack, n)
    else:
        sys.stdout.write(svg(tree(counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
