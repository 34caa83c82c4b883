"""Gridding analysis of a stack of dilated convs: which input positions reach one output.

The coverage map counts, for one output unit, how many paths lead back to each input position
(kernel ``k`` convs with rates ``d_1..d_n``, all weights one). It is built by back-projecting a
single unit through the stack, last layer first. A square kernel makes it separable, so the 2-D
map is the outer product of the 1-D one. A position inside the receptive field with count 0 is
a hole: ``[2, 2, 2]`` leaves holes (only even offsets are ever seen), ``[1, 2, 5]`` none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Coverage:
    kernel: int
    dilations: list[int]
    map1d: np.ndarray  # path counts over offsets -(rf//2)..rf//2
    map2d: np.ndarray  # outer product: rf x rf

    @property
    def receptive_field(self) -> int:
        return int(self.map1d.size)

    @property
    def holes(self) -> int:
        """Input positions in the rf x rf window that no path reaches."""
        return int((self.map2d == 0).sum())

    @property
    def holes_1d(self) -> int:
        return int((self.map1d == 0).sum())

    @property
    def used_fraction(self) -> float:
        return float((self.map2d > 0).mean())


def coverage(kernel: int, dilations: list[int]) -> Coverage:
    """The coverage map of one output unit through convs of size ``kernel`` with ``dilations``."""
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd positive int, got {kernel!r}")
    if not dilations:
        raise ValueError("give at least one dilation rate")
    for d in dilations:
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise ValueError(f"dilation rates must be positive ints, got {list(dilations)}")
    counts = np.ones(1, dtype=np.int64)
    for d in reversed(dilations):
        taps = np.zeros((kernel - 1) * d + 1, dtype=np.int64)
        taps[::d] = 1
        counts = np.convolve(counts, taps)
    return Coverage(kernel, list(dilations), counts, np.outer(counts, counts))


def plot_coverage(cov: Coverage, path: str | Path, title: str | None = None) -> Path:
    """Save the 2-D coverage map as a PNG heatmap (holes drawn in white)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ma.masked_equal(cov.map2d, 0)
    half = cov.receptive_field // 2
    fig, ax = plt.subplots(figsize=(5, 4.4))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    im = ax.imshow(data, cmap=cmap, extent=(-half - 0.5, half + 0.5, half + 0.5, -half - 0.5))
    fig.colorbar(im, ax=ax, label="paths to the output unit")
    rates = ",".join(map(str, cov.dilations))
    ax.set_title(
        title or f"k={cov.kernel}, rates [{rates}]: RF {cov.receptive_field}, {cov.holes} holes"
    )
    ax.set_xlabel("input offset x")
    ax.set_ylabel("input offset y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
