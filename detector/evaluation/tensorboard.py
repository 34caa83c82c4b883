"""Write an :class:`EvalReport` to TensorBoard.

Scalars are named ``<prefix>/<metric>/<bin>`` (``eval/AP/small``, ``eval/AR@100/tiny``) so that
TensorBoard charts all bins of a metric together; PR curves and error bars go in as figures.
"""

from __future__ import annotations

from .report import EvalReport
from .summary import IOU_METRICS


def report_scalars(report: EvalReport, prefix: str = "eval") -> dict[str, float]:
    """The scalar tags and values :func:`log_report` writes (empty bins are skipped)."""
    out: dict[str, float] = {}
    for name, m in report.per_bin.items():
        if m["status"] != "ok":
            continue
        for metric in IOU_METRICS:
            if m.get(metric) is not None:
                out[f"{prefix}/{metric}/{name}"] = m[metric]
        for md, v in m["AR"].items():
            if v is not None:
                out[f"{prefix}/AR@{md}/{name}"] = v
    if report.errors:
        for name, e in report.errors.items():
            if e.get("status") != "ok":
                continue
            for etype, v in e["dAP"].items():
                if v is not None:
                    out[f"{prefix}/errors_dAP50/{name}/{etype}"] = v
    return out


def log_report(writer, report: EvalReport, step: int, prefix: str = "eval", figures: bool = True):
    """Log scalars, PR-curve figures and the error bars to a ``SummaryWriter``."""
    for tag, v in report_scalars(report, prefix).items():
        writer.add_scalar(tag, v, step)
    if not figures:
        return
    from .plots import _plt, errors_figure, pr_figure, recall_iou_figure

    plt = _plt()
    figs = {
        f"{prefix}/pr_curves_iou50": pr_figure(report, 0.5),
        f"{prefix}/recall_vs_iou": recall_iou_figure(report),
    }
    ef = errors_figure(report)
    if ef is not None:
        figs[f"{prefix}/errors"] = ef
    for tag, fig in figs.items():
        writer.add_figure(tag, fig, step, close=True)
    plt.close("all")
    writer.flush()
