"""Presenting runs side by side: a Rich table, plain data for JSON, and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from imagefleet.scheduling.simulator.metrics import RunResult

SPLIT_COLOURS = {
    "generating": "#2e7d32",
    "loading": "#f9a825",
    "downloading": "#c62828",
    "lost": "#6a1b9a",
    "idle": "#b0bec5",
}


def table(results: list[RunResult], title: str = "Fleet simulation") -> Table:
    """One column per policy, one row per measure."""
    grid = Table(title=title, show_lines=False)
    grid.add_column("measure", style="bold")
    for result in results:
        grid.add_column(result.policy, justify="right")

    def row(label: str, values: list[str]) -> None:
        grid.add_row(label, *values)

    row("jobs / images", [f"{r.jobs:,} / {r.images:,}" for r in results])
    row("images / hour", [f"{r.images_per_hour:,.0f}" for r in results])
    row("images / $ (fleet)", [f"{r.images_per_dollar:,.1f}" for r in results])
    row("images / $ (busy GPU time)", [f"{r.images_per_busy_dollar:,.1f}" for r in results])
    for part in SPLIT_COLOURS:
        row(f"GPU time {part}", [f"{r.time_split()[part]:.1%}" for r in results])
    row("loads / 1,000 images", [f"{r.loads_per_1000_images:.1f}" for r in results])
    row("downloads / 1,000 images", [f"{r.downloads_per_1000_images:.1f}" for r in results])
    tiers = list(results[0].wait) if results else []
    for tier in tiers:
        for name in ("p50", "p95", "p99"):
            row(f"{tier} wait {name} (s)", [f"{getattr(r.wait[tier], name):,.1f}" for r in results])
    row("max wait (s)", [f"{r.max_wait_s:,.0f}" for r in results])
    row("makespan (h)", [f"{r.makespan_s / 3600:.2f}" for r in results])
    row("interrupted attempts", [f"{r.lost_attempts:,}" for r in results])
    if any(r.unfinished for r in results):
        row("never ran", [f"{r.unfinished:,}" for r in results])
    return grid


def document(results: list[RunResult], workload: dict[str, Any]) -> dict[str, Any]:
    """What `--json` writes: the workload's parameters and each policy's figures."""
    return {"workload": workload, "policies": [r.summary() for r in results]}


def chart(results: list[RunResult], path: Path, title: str = "Fleet simulation") -> None:
    """A 2x2 PNG: images per dollar, GPU time split, p95 wait per tier, loads per 1,000 images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.policy for r in results]
    positions = list(range(len(results)))
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    figure.suptitle(title, fontsize=14)

    ax = axes[0][0]
    width = 0.38
    ax.bar(
        [p - width / 2 for p in positions],
        [r.images_per_busy_dollar for r in results],
        width,
        label="busy GPU time",
        color="#1565c0",
    )
    ax.bar(
        [p + width / 2 for p in positions],
        [r.images_per_dollar for r in results],
        width,
        label="whole fleet",
        color="#90caf9",
    )
    ax.set_title("Images per dollar (higher is better)")
    ax.set_xticks(positions, names)
    top = max([r.images_per_busy_dollar for r in results] + [1.0])
    ax.set_ylim(0, 1.2 * top)
    ax.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)

    ax = axes[0][1]
    bottoms = [0.0] * len(results)
    for part, colour in SPLIT_COLOURS.items():
        values = [100 * r.time_split()[part] for r in results]
        ax.bar(positions, values, 0.6, bottom=bottoms, label=part, color=colour)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.set_title("GPU time (%)")
    ax.set_xticks(positions, names)
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(loc="upper center", ncol=5, fontsize=8, frameon=False)

    ax = axes[1][0]
    tiers = list(results[0].wait) if results else []
    width = 0.8 / max(1, len(tiers))
    for index, tier in enumerate(tiers):
        offset = (index - (len(tiers) - 1) / 2) * width
        values = [max(r.wait[tier].p95, 0.01) for r in results]
        bars = ax.bar([p + offset for p in positions], values, width, label=f"{tier} p95")
        ax.bar_label(bars, labels=[_seconds(v) for v in values], fontsize=7)
    ax.set_yscale("log")
    ax.set_title("p95 wait (s, log scale; lower is better)")
    ax.set_xticks(positions, names)
    ax.legend(fontsize=8)

    ax = axes[1][1]
    bars = ax.bar(
        positions,
        [r.loads_per_1000_images for r in results],
        0.6,
        color="#f9a825",
        label="checkpoint loads",
    )
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.plot(
        positions,
        [r.downloads_per_1000_images for r in results],
        "o--",
        color="#c62828",
        label="downloads",
    )
    ax.set_title("Per 1,000 images (lower is better)")
    ax.set_xticks(positions, names)
    ax.legend(fontsize=8)

    for row in axes:
        for ax in row:
            ax.tick_params(axis="x", labelsize=8)
            ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"
