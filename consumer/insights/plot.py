"""The charts a person would rather look at than read: one PNG with the peak hours as bars,
the records per window as a line, and each measure's mean per window as lines (matplotlib,
headless). Needs the ``plot`` extra (``pip install 'telemax[plot]'``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from consumer.insights.report import by_hour_of_day, by_window
from consumer.insights.windows import InsightSpec
from kernel.errors import ConfigError

SIZE_IN, DPI = (12.0, 10.0), 100  # 1200 x 1000 pixels


def render(
    spec: InsightSpec, found: Sequence[Mapping[str, Any]], path: Path, feed: str
) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'telemax[plot]'") from None
    panels = 2 + len(spec.measures)
    figure, axes = plt.subplots(panels, 1, figsize=SIZE_IN, dpi=DPI)
    try:
        hours = sorted(by_hour_of_day(found))
        peak = axes[0]
        peak.bar([f"{h:02d}" for h, _ in hours], [n for _, n in hours], color="#2b6cb0")
        peak.set_title(f"{feed}: records by hour of day (peak hours)")
        peak.set_xlabel("hour (UTC)")
        trend = by_window(spec, found)
        when = [datetime.fromisoformat(t["window"].replace("Z", "+00:00")) for t in trend]
        axes[1].plot(when, [t["count"] for t in trend], marker=".", color="#2f855a")
        axes[1].set_title(f"records per {spec.window_s // 60}-minute window")
        for axis, measure in zip(axes[2:], spec.measures, strict=True):
            means = [t[f"{measure.name}_mean"] for t in trend]
            points = [(w, float(m)) for w, m in zip(when, means, strict=True) if m is not None]
            axis.plot([w for w, _ in points], [m for _, m in points], marker=".", color="#c05621")
            axis.set_title(f"{measure.name}: mean per window")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=DPI)
    finally:
        plt.close(figure)
    return [path]
