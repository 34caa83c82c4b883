"""The report's figures: AP per size bin, AP vs IoU threshold for the smallest bins, and AP vs
iteration (learning curves, also drawn by ``smalldet curve --plot``)."""

from __future__ import annotations

import math
from pathlib import Path

from .stats import summary_key


def plot(agg: dict, out_dir: Path) -> list[str]:
    """Write the PNGs of :func:`detector.study.stats.aggregate`'s ``agg`` into ``out_dir``;
    returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    bins = agg["bins"]
    # variants with no finished run get no bars (rather than bars of height 0)
    variants = [v for v, row in agg["table"].items() if row["seeds_done"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(bins) * max(1, len(variants)) / 2), 4))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        ms = [agg["table"][v]["metrics"][summary_key("AP", b)] for b in bins]
        means = [100 * m["mean"] if m["mean"] is not None else math.nan for m in ms]
        errs = [100 * m["std"] if m["std"] is not None else 0 for m in ms]
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(bins))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=v)
    ax.set_xticks(range(len(bins)), bins)
    ax.set_ylabel("AP (%)")
    ax.set_xlabel("size bin")
    ax.set_title(f"{agg['name']}: AP by size bin (mean ± std over seeds)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out_dir / "ap_by_size.png", dpi=120)
    plt.close(fig)
    written.append("ap_by_size.png")

    # localisation curves for the smallest bins (and "all")
    small = [b for b in bins if b != "all"][:2] or ["all"]
    for b in small:
        series = {
            v: c
            for v, c in agg["curves"].items()
            if b in c["ap"] and any(x is not None for x in c["ap"][b])
        }
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for v, c in series.items():
            pts = [(t, 100 * a) for t, a in zip(c["iou"], c["ap"][b]) if a is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
        ax.set_xlabel("IoU threshold")
        ax.set_ylabel("AP (%)")
        ax.set_title(f"localisation: AP vs IoU, bin '{b}'")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"localisation_{b}.png"
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(name)
    return written


# ---------------------------------------------------------------------------- learning curves

LEARNING_CURVES_PNG = "learning_curves.png"


def learning_curve_figure(
    series: dict[str, dict[str, list[tuple[int, float | None]]]], path: str | Path, title: str
) -> Path:
    """``{metric: {line label: [(iteration, value 0-1 or None)]}}`` as one panel per metric,
    AP in % against iteration (shared by ``smalldet curve --plot`` and the study report)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(series))
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for ax, (metric, lines) in zip(axes[0], series.items()):
        for label, pts in lines.items():
            pts = sorted((it, 100 * v) for it, v in pts if v is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if any(ax.get_lines()):
            ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_learning_curves(agg: dict, out_dir: Path) -> str:
    """The report's learning curves (variant means over seeds); returns the file name."""
    lc = agg["learning_curves"]
    series = {
        m: {
            v: [(row["iteration"], row[m]["mean"]) for row in entry["points"]]
            for v, entry in lc["variants"].items()
        }
        for m in lc["metrics"]
    }
    learning_curve_figure(
        series,
        Path(out_dir) / LEARNING_CURVES_PNG,
        f"{agg['name']}: learning curves (mean over seeds)",
    )
    return LEARNING_CURVES_PNG
