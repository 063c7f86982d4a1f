"""Folded stacks -> a flame graph's boxes, drawn as static SVG by the report's template (pure).

Each box is one function in one calling context: its width is the share of the samples in which
that context was on the stack, the box below it is its caller, the bottom row the command name.
Boxes narrower than MIN_SHARE are left out (they could not carry a label and only make the file
large); the tooltip (an SVG <title>) of each box names the function and its share. No script: the
graph is read, not clicked, and the report stays self-contained.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Mapping

from splicebench.report import format as fmt
from splicebench.results.perf import KERNEL_SUFFIX

WIDTH = 1160.0
ROW = 16.0
MIN_SHARE = 0.002
CHAR_PX = 6.6  # average glyph width at the template's 11px font


@dataclass
class _Node:
    count: int = 0
    children: dict[str, "_Node"] = field(default_factory=dict)


@dataclass(frozen=True)
class FlameBox:
    x: float
    y: float
    w: float
    label: str  # what fits in the box ("" if nothing does)
    title: str  # the tooltip: function, samples, share
    fill: str
    kernel: bool


@dataclass(frozen=True)
class FlameGraph:
    width: float
    height: float
    boxes: list[FlameBox]
    samples: int


def _fill(name: str, kernel: bool, depth: int) -> str:
    """Warm colours for the kernel, cool for user space, grey for the command row; the shade is
    fixed by the name so that a function keeps its colour across graphs."""
    h = zlib.crc32(name.encode()) % 1000 / 1000
    if depth == 0:
        return f"hsl(0, 0%, {78 + 10 * h:.0f}%)"
    if kernel:
        return f"hsl({10 + 35 * h:.0f}, 85%, {60 + 10 * h:.0f}%)"
    return f"hsl({190 + 40 * h:.0f}, 60%, {65 + 10 * h:.0f}%)"


def _fit(name: str, width_px: float) -> str:
    chars = int((width_px - 6) / CHAR_PX)
    if chars < 3:
        return ""
    return name if len(name) <= chars else name[: chars - 2] + ".."


def layout(folded: Mapping[str, int]) -> FlameGraph:
    """The boxes of a flame graph of `folded` (results/perf.fold), root row at the bottom."""
    root = _Node()
    for stack, n in folded.items():
        root.count += n
        node = root
        for frame in stack.split(";"):
            node = node.children.setdefault(frame, _Node())
            node.count += n
    total = root.count
    placed: list[tuple[float, int, float, str, int]] = []  # x, depth, w, frame, count
    depth_max = 0

    def walk(node: _Node, x: float, depth: int) -> None:
        nonlocal depth_max
        for frame in sorted(node.children):
            child = node.children[frame]
            w = WIDTH * child.count / total
            if child.count / total >= MIN_SHARE:
                placed.append((x, depth, w, frame, child.count))
                depth_max = max(depth_max, depth)
                walk(child, x, depth + 1)
            x += w

    if total:
        walk(root, 0.0, 0)
    height = (depth_max + 1) * ROW if placed else ROW
    boxes = []
    for x, depth, w, frame, count in placed:
        kernel = frame.endswith(KERNEL_SUFFIX)
        name = frame.removesuffix(KERNEL_SUFFIX)
        where = "kernel" if kernel else ("command" if depth == 0 else "user")
        boxes.append(FlameBox(x=round(x, 2), y=round(height - (depth + 1) * ROW, 2), w=round(w, 2),
                              label=_fit(name, w), fill=_fill(name, kernel, depth), kernel=kernel,
                              title=f"{name} ({where}): {count} samples, {fmt.share(count / total, total)}"))
    return FlameGraph(WIDTH, height, boxes, total)
