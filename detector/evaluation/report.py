"""The evaluation report: every number, as a flat summary, a JSON dict and Markdown tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from detector.utils.bins import SizeBin, fmt_px

from .errors import ERROR_TYPES
from .summary import IOU_METRICS, bin_metrics, flat_summary, per_class_ap, thr_label


def _num(v: float | None, scale: float = 100.0, digits: int = 1) -> str:
    return "–" if v is None else f"{v * scale:.{digits}f}"


@dataclass
class EvalReport:
    """Result of :func:`detector.evaluation.evaluate`.

    ``precision`` is [T, R, K, A, M] and ``recall`` [T, K, A, M] in pycocotools' layout (A in the
    order of ``bins``, ``all`` first; -1 where a cell has no GT).
    """

    bins: list[SizeBin]
    max_dets: tuple[int, ...]
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    cat_ids: list[int]
    cat_names: list[str]
    precision: np.ndarray
    recall: np.ndarray
    gt_counts: np.ndarray  # (K, A)
    backend: str = "fast"
    errors: dict | None = None
    warnings: list[str] = field(default_factory=list)
    preset: str | None = None  # the scoring preset named by the caller, if any
    recall_caps: dict | None = None  # :func:`.capacity.check_recall_caps`: images maxDets cut
    per_bin: dict[str, dict] = field(init=False)
    summary: dict[str, float | None] = field(init=False)

    def __post_init__(self) -> None:
        self.per_bin = {
            b.name: bin_metrics(
                self.precision,
                self.recall,
                self.iou_thrs,
                self.max_dets,
                a,
                int(self.gt_counts[:, a].sum()),
            )
            for a, b in enumerate(self.bins)
        }
        self.summary = flat_summary(self.per_bin, self.max_dets)

    # ------------------------------------------------------------------ numbers
    def empty_bins(self) -> list[str]:
        return [n for n, m in self.per_bin.items() if m["status"] == "no objects"]

    def per_class(self) -> dict[str, dict[str, float | None]]:
        """AP per class and bin: ``{class_name: {bin: AP}}`` (None where the class has no GT)."""
        table = {name: {} for name in self.cat_names}
        for a, b in enumerate(self.bins):
            for name, v in zip(self.cat_names, per_class_ap(self.precision, a)):
                table[name][b.name] = v
        return table

    def pr_curve(self, bin_name: str, iou: float = 0.5) -> tuple[np.ndarray, np.ndarray] | None:
        """Class-averaged interpolated precision at each recall threshold (largest maxDets)."""
        a = [b.name for b in self.bins].index(bin_name)
        t = int(np.argmin(np.abs(self.iou_thrs - iou)))
        p = self.precision[t, :, :, a, -1]
        valid = (p > -1).all(axis=0)
        if not valid.any():
            return None
        return self.rec_thrs, p[:, valid].mean(axis=1)

    def to_dict(self) -> dict:
        """Everything, JSON-serialisable. The flat summary is at the top level."""
        bins = []
        for b in self.bins:
            entry = {"name": b.name, "lo_px": _json_float(b.lo), "hi_px": _json_float(b.hi)}
            entry["area_range"] = [float(x) for x in b.area_range]
            entry.update(self.per_bin[b.name])
            for thr in (0.25, 0.5, 0.75):
                if np.any(np.abs(self.iou_thrs - thr) < 1e-9):
                    curve = self.pr_curve(b.name, thr)
                    entry[f"pr_curve_iou{round(thr * 100)}"] = (
                        None if curve is None else [float(v) for v in curve[1]]
                    )
            bins.append(entry)
        out: dict = dict(self.summary)
        out.update(
            {
                "bins": bins,
                "per_class_AP": self.per_class(),
                "params": {
                    "backend": self.backend,
                    "iou_thrs": [float(t) for t in self.iou_thrs],
                    "max_dets": list(self.max_dets),
                    "rec_thrs": [float(r) for r in self.rec_thrs],
                    "categories": dict(zip([str(c) for c in self.cat_ids], self.cat_names)),
                    "ap_max_dets": self.max_dets[-1],
                    "preset": self.preset,
                },
                "empty_bins": self.empty_bins(),
                "warnings": list(self.warnings),
            }
        )
        if self.recall_caps is not None:
            out["recall_caps"] = self.recall_caps
        if self.errors is not None:
            out["errors"] = self.errors
            out["dominant_errors_small"] = self.dominant_small_errors()
        return out

    def dominant_small_errors(self) -> dict[str, str | None]:
        """Dominant error (largest dAP) of each bin whose objects are at most 32 px."""
        if not self.errors:
            return {}
        return {
            b.name: self.errors[b.name]["dominant"]
            for b in self.bins
            if b.name != "all" and b.hi <= 32 and b.name in self.errors
        }

    # ------------------------------------------------------------------ markdown
    def markdown(self) -> str:
        md = self.max_dets
        preset = f", preset {self.preset}" if self.preset else ""
        title = f"### Size-stratified COCO bbox evaluation (AP at maxDets={md[-1]}{preset})"
        lines = [title, ""]
        aps = [k for k in IOU_METRICS if k in self.per_bin[self.bins[0].name]]
        head = ["bin", "size px", "GT", *aps, *[f"AR@{m}" for m in md]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for b in self.bins:
            m = self.per_bin[b.name]
            rng = f"{fmt_px(b.lo)}–{fmt_px(b.hi)}"
            if m["status"] == "no objects":
                row = [b.name, rng, "0", "no objects", *[""] * (len(aps) - 1 + len(md))]
            else:
                row = [b.name, rng, str(m["gt_count"]), *[_num(m[k]) for k in aps]]
                row += [_num(m["AR"][str(x)]) for x in md]
            lines.append("| " + " | ".join(row) + " |")
        caps = self.recall_caps
        if caps and caps.get("images_capped"):
            lines += [
                "",
                f"**Recall capped on {caps['images_capped']} image(s)** by maxDets or the "
                "model's caps (see the warnings below).",
            ]
        lines += ["", "#### Localisation: AP and recall at each IoU threshold", ""]
        thr = [thr_label(t) for t in self.iou_thrs]
        head = ["bin", "metric", *thr]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for b in self.bins:
            m = self.per_bin[b.name]
            if m["status"] == "no objects":
                continue
            lines.append(
                "| " + " | ".join([b.name, "AP", *[_num(m["AP_at_iou"][t]) for t in thr]]) + " |"
            )
            rec = [_num(m["recall_at_iou"][t]) for t in thr]
            lines.append("| " + " | ".join([b.name, f"recall@{md[-1]}", *rec]) + " |")
        lines += ["", "#### AP per class and bin", ""]
        head = ["class", *[b.name for b in self.bins]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, row in self.per_class().items():
            lines.append("| " + " | ".join([name, *[_num(row[b.name]) for b in self.bins]]) + " |")
        if self.errors:
            lines += ["", "#### Errors per bin (TIDE, dAP50 in points gained by fixing each)", ""]
            head = ["bin", "AP50", *ERROR_TYPES, "dominant"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for b in self.bins:
                e = self.errors.get(b.name)
                if e is None or e.get("status") == "no objects":
                    continue
                cells = [f"{_num(e['dAP'][k])} ({e['count'][k]})" for k in ERROR_TYPES]
                lines.append(
                    "| "
                    + " | ".join([b.name, _num(e["base_AP50"]), *cells, str(e["dominant"])])
                    + " |"
                )
            dom = self.dominant_small_errors()
            if dom:
                lines += [
                    "",
                    "Dominant error in the small bins: "
                    + ", ".join(f"{k}: **{v}**" for k, v in dom.items()),
                ]
        if self.empty_bins():
            lines += ["", "Bins with no objects: " + ", ".join(self.empty_bins())]
        for w in self.warnings:
            lines += ["", f"> warning: {w}"]
        return "\n".join(lines) + "\n"


def _json_float(v: float) -> float | str:
    return "inf" if math.isinf(v) else float(v)
