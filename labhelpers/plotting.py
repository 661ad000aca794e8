"""Shared matplotlib helpers: one look for every figure in the course.

Figures that belong to one topic live beside it (``toy.plot_feature_geometry``); this
module holds what several notebooks draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


def axes(ax: Axes | None = None, figsize: tuple[float, float] = (5, 4)) -> Axes:
    """Return ``ax``, or a fresh one when None."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def arrows_2d(
    vectors: Mapping[str, Sequence[float]], ax: Axes | None = None, title: str = ""
) -> Axes:
    """Draw named 2-D vectors as arrows from the origin, on equal axes."""
    ax = axes(ax, (4.5, 4.5))
    points = np.array([[0.0, 0.0], *[list(v) for v in vectors.values()]])
    for (name, v), color in zip(vectors.items(), COLORS):
        ax.annotate("", xy=v, xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=color, lw=2))
        ax.text(v[0], v[1], f" {name}", color=color, va="bottom")
    pad = 0.4
    ax.set_xlim(points[:, 0].min() - pad, points[:, 0].max() + pad + 0.6)
    ax.set_ylim(points[:, 1].min() - pad, points[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("axis A (neuron 0)")
    ax.set_ylabel("axis B (neuron 1)")
    ax.set_title(title)
    return ax


def sweep(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    ax: Axes | None = None,
    title: str = "",
) -> Axes:
    """Line plot of several named series against one sweep variable (alpha, lambda, ...)."""
    ax = axes(ax)
    for (name, y), color in zip(series.items(), COLORS):
        ax.plot(x, y, marker="o", color=color, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return ax


def bars(values: Mapping[str, float], ylabel: str, ax: Axes | None = None, title: str = "") -> Axes:
    """Bar chart of named values, each bar labelled with its number."""
    ax = axes(ax)
    names = list(values)
    heights = [values[n] for n in names]
    drawn = ax.bar(names, heights, color=COLORS[: len(names)])
    ax.bar_label(drawn, fmt="%.2f")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="0.5", lw=0.8)
    return ax


def flow(steps: Sequence[str], ax: Axes | None = None, title: str = "") -> Axes:
    """A left-to-right chain of boxes: a procedure drawn as a diagram."""
    ax = axes(ax, (2.3 * len(steps), 1.6))
    for i, step in enumerate(steps):
        ax.text(
            i,
            0,
            step,
            ha="center",
            va="center",
            wrap=True,
            fontsize=9,
            bbox=dict(boxstyle="round,pad=0.5", fc="#eef3fb", ec=COLORS[0]),
        )
        if i:
            ax.annotate(
                "",
                xy=(i - 0.38, 0),
                xytext=(i - 0.62, 0),
                arrowprops=dict(arrowstyle="-|>", color="0.3"),
            )
    ax.set_xlim(-0.6, len(steps) - 0.4)
    ax.set_ylim(-0.6, 0.6)
    ax.axis("off")
    ax.set_title(title)
    return ax
