"""The plot `beatless local` leaves when it ends: queue depth and workers over the run.

`Timeline` records one point per reading (the runner's grid); `plot_png` draws pending
and reserved per queue above the workers running and desired, on one time axis, with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

NAN = float("nan")


@dataclass(frozen=True)
class Point:
    elapsed: float
    pending: Mapping[str, int]  # per queue; empty when Redis was unreadable
    reserved: Mapping[str, int]
    running: int
    desired: int


@dataclass
class Timeline:
    points: list[Point] = field(default_factory=list)

    def add(self, point: Point) -> None:
        self.points.append(point)

    def queues(self) -> list[str]:
        seen: dict[str, None] = {}
        for point in self.points:
            seen.update(dict.fromkeys(point.pending))
        return list(seen)


def plot_png(timeline: Timeline, path: Path, title: str = "beatless local") -> Path:
    """Write the plot to `path` (PNG); raises ValueError on an empty timeline."""
    if not timeline.points:
        raise ValueError("timeline: no readings to plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    times = [p.elapsed for p in timeline.points]
    figure, (depth, workers) = plt.subplots(2, 1, sharex=True, figsize=(10, 6), height_ratios=(2, 1))
    try:
        for queue in timeline.queues():
            # A reading without depth (Redis unreadable) is a gap, not a zero.
            pending = [p.pending.get(queue, NAN) for p in timeline.points]
            reserved = [p.reserved.get(queue, NAN) for p in timeline.points]
            (line,) = depth.plot(times, pending, label=f"{queue} pending")
            depth.plot(times, reserved, linestyle="--", color=line.get_color(), label=f"{queue} reserved")
        depth.set_ylabel("tasks")
        depth.set_title(title)
        depth.legend(loc="upper right", fontsize="small", ncols=2)
        depth.grid(alpha=0.3)
        running, desired = [p.running for p in timeline.points], [p.desired for p in timeline.points]
        workers.step(times, running, where="post", label="running")
        workers.step(times, desired, where="post", linestyle=":", label="desired")
        workers.yaxis.set_major_locator(MaxNLocator(integer=True))
        workers.set_ylabel("workers")
        workers.set_xlabel("seconds since the burst")
        workers.legend(loc="upper right", fontsize="small")
        workers.grid(alpha=0.3)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=100)
    finally:
        plt.close(figure)
    return path
