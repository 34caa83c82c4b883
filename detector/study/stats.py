"""The numbers of a study report: per-variant tables over seeds, paired deltas, bootstrap CIs,
error analysis, localisation curves, learning curves and model facts (all of ``report.json``
but the extras :func:`detector.study.report.write_report` adds).

Statistics
----------
- *mean ± std* - over the seeds that finished (sample std, ddof=1; "±0" is not claimed for a
  single seed, it is left blank).
- *Δ vs baseline* - the mean over seeds of the paired difference ``variant(seed s) -
  baseline(seed s)``, over the seeds both finished.
- *95% CI* - paired bootstrap over validation images
  (:func:`detector.evaluation.bootstrap.bootstrap_runs`): each resample draws the validation
  images with replacement once and re-evaluates *every* run on that same draw; the variant's
  delta in that resample is the mean over the paired seeds of ``variant(s) - baseline(s)``, and
  the CI is the bootstrap's default interval for differences of it (``DEFAULT_DELTA_CI`` of
  :mod:`detector.evaluation.bootstrap`, the 2.5-97.5 percentile range, chosen by its measured
  coverage: docs/bootstrap_coverage.md; ``report.json`` names it). So the CI is about the
  image sample (would the difference hold on other images like these?), for the seed-averaged
  difference; the spread across seeds is shown separately as the ± std. All compared runs must
  be evaluated on the same ground-truth file, else no CI is given.

The per-run input is ``study_eval.json`` (see :mod:`.collect` for what is required and what
is optional in it).
"""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path
from typing import Any

from detector.utils.files import read_json_or

from .collect import is_num
from .layout import SETTINGS_FILE
from .spec import StudySpec

MAIN_METRICS = ["AP", "AP50", "AP75"]  # plus AR@<largest max_dets>


# ------------------------------------------------------------------------ metric accessors


def _first_eval(recs: list[dict]) -> dict | None:
    return next((r["eval"] for r in recs if r["eval"]), None)


def bins_of(recs: list[dict]) -> list[str]:
    """Bin names in evaluation order, ``all`` first (from the first finished run): the
    evaluator's ``eval.bins``, else - a custom ``eval_command`` may write only the summary - the
    ``AP_<bin>`` keys of the summary."""
    ev = _first_eval(recs)
    if ev is None:
        return ["all"]
    if ev.get("eval", {}).get("bins"):
        return [b["name"] for b in ev["eval"]["bins"]]
    return ["all", *dict.fromkeys(k[3:] for k in ev["summary"] if k.startswith("AP_"))]


def ar_key(recs: list[dict]) -> str:
    """``AR@<largest max_dets>`` as found in the summary of the first finished run."""
    ev = _first_eval(recs)
    dets = [int(k[3:]) for k in (ev["summary"] if ev else {}) if k.startswith("AR@")]
    return f"AR@{max(dets) if dets else 100}"


def summary_key(metric: str, bin_name: str) -> str:
    """Flat summary key: ``AP_small``, ``AR_small@100``; the ``all`` bin has no suffix."""
    if bin_name == "all":
        return metric
    if "@" in metric:
        m, at = metric.split("@", 1)
        return f"{m}_{bin_name}@{at}"
    return f"{metric}_{bin_name}"


def value(rec: dict, key: str) -> float | None:
    """A run's summary number, None when the run has none (no eval, or no objects in the bin)."""
    v = (rec["eval"] or {}).get("summary", {}).get(key)
    return float(v) if is_num(v) else None


def median(xs: list) -> float | None:
    xs = [x for x in xs if is_num(x)]
    return statistics.median(xs) if xs else None


def mean_std(vals: list[float]) -> tuple[float | None, float | None]:
    if not vals:
        return None, None
    mean = statistics.fmean(vals)
    return mean, (statistics.stdev(vals) if len(vals) > 1 else None)


def errors_of(rec: dict) -> dict[str, dict[str, float]]:
    """``{bin: {error_type: dAP}}`` from the evaluator's TIDE-style ``errors`` section (absent
    when the run was evaluated without error analysis; dAP is None in a bin without objects)."""
    node = rec["eval"].get("eval", {}).get("errors", {})
    return {
        b: {t: float(v) for t, v in entry["dAP"].items() if is_num(v)} for b, entry in node.items()
    }


def ap_vs_iou(rec: dict) -> tuple[list[float], dict[str, list[float | None]]]:
    """IoU thresholds and ``{bin: [AP at each threshold]}`` (None where the bin is empty);
    nothing without the evaluator's full report."""
    ev = rec["eval"].get("eval", {})
    if not ev.get("bins"):
        return [], {}
    thrs = [float(t) for t in ev["params"]["iou_thrs"]]
    curves = {
        b["name"]: [float(v) if is_num(v) else None for v in b["AP_at_iou"].values()]
        for b in ev["bins"]
    }
    return thrs, curves


# ---------------------------------------------------------------------------------- bootstrap


def _eval_cfg(rec: dict) -> dict:
    """The bins and max_dets the run was evaluated with (from its recorded settings)."""
    ev = read_json_or(Path(rec["run_dir"]) / SETTINGS_FILE, {})["resolved"]["eval"]
    return {"bins": ev["bins"], "max_dets": ev["max_dets"]}


def bootstrap_cis(spec: StudySpec, recs: list[dict], keys: list[str]) -> dict[str, dict]:
    """``{variant: {"seeds": [...], "ci": {key: (delta, lo, hi)}, "note": str}}``.

    All finished runs go into one bootstrap: every resample draws the validation images once,
    with replacement, and evaluates every run on that same draw (matching is done once per
    run). Per resample, a variant's delta is the mean over the paired seeds of ``variant(s) -
    baseline(s)``; the CI is the bootstrap's interval for differences of that (for BCa the
    jackknife values are combined the same way), and the point value is the mean of the
    per-seed deltas (the Δ of the tables).
    """
    if spec.bootstrap <= 0:
        return {}
    import numpy as np

    by = {(r["variant"], r["seed"]): r for r in recs}
    usable = {k: r for k, r in by.items() if r["eval"] and r["results"]}
    out: dict[str, dict] = {}
    pairs: dict[str, list[int]] = {}
    for v in spec.variants:
        if v == spec.baseline:
            continue
        seeds = [s for s in spec.seeds if (spec.baseline, s) in usable and (v, s) in usable]
        if seeds:
            pairs[v] = seeds
            out[v] = {"seeds": seeds, "ci": {}, "note": ""}
    if not pairs:
        return out
    needed = sorted(
        {(spec.baseline, s) for ss in pairs.values() for s in ss}
        | {(v, s) for v, ss in pairs.items() for s in ss},
        key=lambda k: (list(spec.variants).index(k[0]), k[1]),
    )
    gts = {usable[k]["eval"].get("gt_path") for k in needed}

    def note_all(msg: str) -> dict:
        for entry in out.values():
            entry["note"] = msg
        return out

    if len(gts) != 1 or None in gts:
        return note_all(f"runs were evaluated on different ground truths: {sorted(map(str, gts))}")
    try:
        from detector.evaluation.bootstrap import bootstrap_runs, interval

        ev_cfg = _eval_cfg(usable[needed[0]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: empty bins
            res = bootstrap_runs(
                next(iter(gts)),
                [usable[k]["results"] for k in needed],
                keys,
                n=spec.bootstrap,
                seed=spec.bootstrap_seed,
                bins=ev_cfg["bins"],
                max_dets=ev_cfg["max_dets"],
            )
    except Exception as err:  # noqa: BLE001 - a report without CIs beats no report
        return note_all(f"bootstrap failed: {type(err).__name__}: {err}")
    values, samples, jack = res["values"], res["samples"], res["jackknife"]
    idx = {k: i for i, k in enumerate(needed)}
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: empty bins
        for v, seeds in pairs.items():
            ib = [idx[(spec.baseline, s)] for s in seeds]
            iv = [idx[(v, s)] for s in seeds]
            point = np.nanmean(values[iv] - values[ib], axis=0)  # (K,)
            d = np.nanmean(samples[:, iv] - samples[:, ib], axis=1)  # (n, K)
            dj = None if jack is None else np.nanmean(jack[:, iv] - jack[:, ib], axis=1)
            ci = interval(d, point, dj, res["level"], res["delta_method"], bounds=(-1.0, 1.0))
            lo, hi = np.moveaxis(ci, -1, 0)
            for j, k in enumerate(res["keys"]):
                if np.isfinite(point[j]) and np.isfinite(lo[j]) and np.isfinite(hi[j]):
                    out[v]["ci"][k] = (float(point[j]), float(lo[j]), float(hi[j]))
    return out


def _ci_method() -> str:
    """The interval the CIs of differences use (the bootstrap's default), for report.json."""
    from detector.evaluation.bootstrap import DEFAULT_DELTA_CI

    return DEFAULT_DELTA_CI


# ------------------------------------------------------------------------------- aggregation


def _table(spec: StudySpec, by: dict, keys: list[str]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for v in spec.variants:
        done = [by[(v, s)] for s in spec.seeds_of(v) if by[(v, s)]["eval"]]
        row: dict[str, Any] = {"seeds_done": [r["seed"] for r in done], "metrics": {}}
        for k in keys:
            vals = [x for x in (value(r, k) for r in done) if x is not None]
            mean, std = mean_std(vals)
            delta = None
            if v != spec.baseline:
                diffs = []
                for s in spec.seeds_of(v):
                    if (spec.baseline, s) not in by:
                        continue
                    va, vb = value(by[(spec.baseline, s)], k), value(by[(v, s)], k)
                    if va is not None and vb is not None:
                        diffs.append(vb - va)
                delta = statistics.fmean(diffs) if diffs else None
            row["metrics"][k] = {"mean": mean, "std": std, "n": len(vals), "delta": delta}
        table[v] = row
    return table


def _errors(done: list[dict]) -> dict[str, dict[str, float]]:
    """Mean over seeds of each bin's dAP per error type."""
    pooled: dict[str, dict[str, list[float]]] = {}
    for r in done:
        for b, errs in errors_of(r).items():
            for t, x in errs.items():
                pooled.setdefault(b, {}).setdefault(t, []).append(x)
    return {b: {t: statistics.fmean(xs) for t, xs in errs.items()} for b, errs in pooled.items()}


def _curves(done: list[dict]) -> dict | None:
    """Mean over seeds of AP at each IoU threshold, per bin."""
    per_seed = [c for c in map(ap_vs_iou, done) if c[1]]
    if not per_seed:
        return None
    thrs = per_seed[0][0]
    cb: dict[str, list[float | None]] = {}
    for b in per_seed[0][1]:
        rows = [c[1][b] for c in per_seed if b in c[1] and len(c[1][b]) == len(thrs)]
        cb[b] = [
            statistics.fmean(ok) if (ok := [x for x in col if x is not None]) else None
            for col in zip(*rows)
        ]
    return {"iou": thrs, "ap": cb}


def _eval_memory(peak: dict) -> float:
    """CUDA max allocated when the eval used CUDA (the worker writes ``cuda_mb`` only then),
    else the process's peak RSS."""
    return peak.get("cuda_mb") or peak.get("rss_mb")


def _facts(done: list[dict]) -> dict:
    """Model facts of the first seed, timings and memory as medians over the seeds."""
    if not done:
        return {}
    ev0 = done[0]["eval"]
    info = ev0.get("model_info", {})  # model_info's dict, or {"error": ...}
    return {
        "params": info.get("params"),
        "flops": info.get("flops"),
        "input_size": info.get("input_size"),
        "output_stride": info.get("output_stride"),
        "receptive_field": info.get("receptive_field"),
        "hdc": info.get("hdc"),
        "model_info_error": info.get("error"),
        "train_img_per_s": median([r["train"]["img_per_s"] for r in done]),
        "train_memory_mb": median([r["train"]["memory_mb"] for r in done]),
        "inference_s_per_img": median([r["eval"].get("inference_s_per_img") for r in done]),
        "eval_memory_mb": median([_eval_memory(r["eval"].get("peak_memory", {})) for r in done]),
        "device": ev0.get("device"),
    }


def learning_curves(spec: StudySpec, recs: list[dict]) -> dict | None:
    """AP vs iteration per variant, mean ± std over the seeds that have each point; None unless
    some run has two points or more (the trainer's one ``eval.final`` row is no curve).

    Only what the run directories already hold is read (the trainer's eval rows, the points
    ``smalldet curve`` cached): the report is rebuilt often and never scores a checkpoint
    itself. Metrics: AP, AP50 and the smallest bin's AP (:func:`.curves.default_metrics`).
    """
    from .curves import default_metrics, read_curve

    runs = [(r["variant"], r["seed"], pts) for r in recs if (pts := read_curve(r["run_dir"]))]
    if not any(len(pts) > 1 for *_, pts in runs):
        return None
    metrics = default_metrics([p for *_, pts in runs for p in pts])
    variants: dict[str, dict] = {}
    for v in spec.variants:
        mine = [(s, {p["iteration"]: p for p in pts}) for vv, s, pts in runs if vv == v]
        if not mine:
            continue
        rows = []
        for it in sorted({it for _, by_it in mine for it in by_it}):
            row: dict[str, Any] = {"iteration": it}
            for m in metrics:
                vals = [x for _, by_it in mine if is_num(x := by_it.get(it, {}).get(m))]
                mean, std = mean_std(vals)
                row[m] = {"mean": mean, "std": std, "n": len(vals)}
            rows.append(row)
        variants[v] = {"seeds": [s for s, _ in mine], "points": rows}
    return {
        "metrics": metrics,
        "variants": variants,
        "runs": [
            {
                "variant": v,
                "seed": s,
                "points": [
                    {k: p.get(k) for k in ("iteration", *metrics, "source", "checkpoint")}
                    for p in pts
                ],
            }
            for v, s, pts in runs
        ],
    }


def aggregate(spec: StudySpec, recs: list[dict]) -> dict:
    """All numbers of the report, as plain data (this is ``report.json``)."""
    bins = bins_of(recs)
    metrics = [*MAIN_METRICS, ar_key(recs)]
    keys = [summary_key(m, b) for b in bins for m in metrics]
    by = {(r["variant"], r["seed"]): r for r in recs}
    done = {v: [by[(v, s)] for s in spec.seeds_of(v) if by[(v, s)]["eval"]] for v in spec.variants}
    curves = {v: c for v in spec.variants if (c := _curves(done[v])) is not None}
    return {
        "name": spec.name,
        "description": spec.description,
        "baseline": spec.baseline,
        "seeds": spec.seeds,
        "variants": {
            v: {"label": x.label, "config": str(x.config), "overrides": x.overrides}
            for v, x in spec.variants.items()
        },
        "common": spec.common,
        "bins": bins,
        "metrics": metrics,
        "table": _table(spec, by, keys),
        "bootstrap": {
            "n": spec.bootstrap,
            "seed": spec.bootstrap_seed,
            "method": _ci_method(),
            "variants": bootstrap_cis(spec, recs, keys),
        },
        "errors": {v: _errors(done[v]) for v in spec.variants},
        "curves": curves,
        "learning_curves": learning_curves(spec, recs),
        "facts": {v: _facts(done[v]) for v in spec.variants},
        "runs": [
            {
                k: r.get(k)
                for k in ("variant", "seed", "run_dir", "state", "status", "failure", "changed")
            }
            for r in recs
        ],
    }
