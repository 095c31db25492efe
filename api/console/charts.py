"""Server-rendered charts: the geometry of an SVG bar chart, no script."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT, LABEL_ROOM = 720, 180, 20


@dataclass(frozen=True)
class Bar:
    label: str
    x: float
    width: float
    passed: int
    failed: int
    passed_y: float
    passed_height: float
    failed_y: float
    failed_height: float


def stacked_bars(points: list[tuple[str, int, int]]) -> list[Bar]:
    """(label, passed, failed) per bucket → bars with failed stacked on passed, scaled to the tallest."""
    if not points:
        return []
    tallest = max(max(passed + failed for _, passed, failed in points), 1)
    plot = HEIGHT - LABEL_ROOM
    slot = WIDTH / len(points)
    bars = []
    for index, (label, passed, failed) in enumerate(points):
        passed_height = plot * passed / tallest
        failed_height = plot * failed / tallest
        bars.append(
            Bar(
                label=label,
                x=index * slot + slot * 0.1,
                width=slot * 0.8,
                passed=passed,
                failed=failed,
                passed_y=plot - passed_height,
                passed_height=passed_height,
                failed_y=plot - passed_height - failed_height,
                failed_height=failed_height,
            )
        )
    return bars
