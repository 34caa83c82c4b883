"""Matplotlib figures of a report: PR curves and recall-vs-IoU per bin, TIDE error bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ERROR_TYPES
from .report import EvalReport


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def pr_figure(report: EvalReport, iou: float = 0.5):
    """Class-averaged interpolated PR curve of each bin at one IoU threshold."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for b in report.bins:
        curve = report.pr_curve(b.name, iou)
        if curve is None:
            continue
        ax.plot(curve[0], curve[1], label=f"{b.name} (mean P {np.mean(curve[1]) * 100:.1f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"Precision-recall per size bin, IoU {iou:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recall_iou_figure(report: EvalReport):
    """Recall (largest maxDets) and AP against the IoU threshold for each bin."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    thr = report.iou_thrs
    for b in report.bins:
        m = report.per_bin[b.name]
        if m["status"] != "ok":
            continue
        rec = [v if v is not None else np.nan for v in m["recall_at_iou"].values()]
        ap = [v if v is not None else np.nan for v in m["AP_at_iou"].values()]
        axes[0].plot(thr, rec, marker="o", label=b.name)
        axes[1].plot(thr, ap, marker="o", label=b.name)
    axes[0].set(xlabel="IoU threshold", ylabel=f"recall @ {report.max_dets[-1]}", ylim=(0, 1))
    axes[1].set(xlabel="IoU threshold", ylabel="AP", ylim=(0, 1))
    axes[0].set_title("Localisation: recall vs IoU")
    axes[1].set_title("Localisation: AP vs IoU")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def errors_figure(report: EvalReport):
    """Grouped bars: dAP50 of each error type per bin."""
    if not report.errors:
        return None
    plt = _plt()
    names = [b.name for b in report.bins if report.errors.get(b.name, {}).get("status") == "ok"]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names) + 2), 4))
    width = 0.8 / len(ERROR_TYPES)
    x = np.arange(len(names))
    for i, e in enumerate(ERROR_TYPES):
        vals = [(report.errors[n]["dAP"][e] or 0.0) * 100 for n in names]
        ax.bar(x + (i - len(ERROR_TYPES) / 2 + 0.5) * width, vals, width, label=e)
    ax.set_xticks(x, names)
    ax.set(ylabel="dAP50 (points)", title="TIDE errors per size bin")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    return fig


def save_plots(report: EvalReport, out_dir: str | Path) -> list[Path]:
    """Write pr_iou50.png, pr_iou75.png, recall_vs_iou.png and errors.png; return the paths."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = {"pr_iou50.png": pr_figure(report, 0.5), "recall_vs_iou.png": recall_iou_figure(report)}
    if np.any(np.abs(report.iou_thrs - 0.75) < 1e-9):
        figs["pr_iou75.png"] = pr_figure(report, 0.75)
    ef = errors_figure(report)
    if ef is not None:
        figs["errors.png"] = ef
    paths = []
    for name, fig in figs.items():
        p = out / name
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
