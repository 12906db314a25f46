"""Small matplotlib helpers (Agg backend: no display on these machines)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def new_figure(title: str, *, width: float = 8.0, height: float = 4.5) -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    return fig, ax


def bars(ax: Axes, labels: Sequence[str], values: Sequence[float], *, fmt: str = "{:.0f}") -> None:
    """A bar per label, its value written on top."""
    colors = [f"C{i}" for i in range(len(labels))]
    drawn = ax.bar(labels, values, color=colors)
    for bar, value in zip(drawn, values, strict=True):
        ax.annotate(
            fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center", va="bottom", fontsize=9,
        )  # fmt: skip


def save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
