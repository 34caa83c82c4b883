"""The comparison report of a study: ``report.md``, ``report.json``, plots and TensorBoard HParams.

Everything is read back from the run directories (``study_eval.json``, ``results_val.json``,
``metrics.jsonl``, ``study_status.json``), so the report can be rebuilt at any time
(``tools/study.py STUDY --report-only``), also while some runs are missing or failed.

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
  the CI is the 2.5-97.5 percentile interval of it over the resamples. So the CI is about the
  image sample (would the difference hold on other images like these?), for the seed-averaged
  difference; the spread across seeds is shown separately as the ± std. All compared runs must
  be evaluated on the same ground-truth file, else no CI is given.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import warnings
from pathlib import Path
from typing import Any

from .layout import EVAL_FILE, LOG_FILE, RESULTS_FILE, SETTINGS_FILE, STATUS_FILE
from .runner import log_tail, read_json, run_state, settings_changed
from .spec import DEFAULT_HPARAMS, StudySpec

MAIN_METRICS = ["AP", "AP50", "AP75"]  # plus AR@<largest max_dets>


# ------------------------------------------------------------------------------ collecting


def _metrics_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        continue  # a line cut by a crash
    except OSError:
        pass
    return rows


def _find_number(row: dict, names: tuple[str, ...]) -> float | None:
    for k, v in row.items():
        if any(k == n or k.endswith("/" + n) for n in names) and _is_num(v):
            return float(v)
    return None


def train_facts(run_dir: Path) -> dict:
    """Train throughput (median img/s over the logged windows, the first one - warm-up - left
    out when there are more) and the peak memory the trainer logged."""
    rows = _metrics_jsonl(Path(run_dir) / "metrics.jsonl")
    speeds, mems = [], []
    for r in rows:
        if r.get("type", "train") != "train":
            continue
        s = _find_number(r, ("img_per_s", "imgs_per_s", "images_per_s", "throughput"))
        if s is not None:
            speeds.append(s)
        m = _find_number(r, ("memory_mb", "max_mem_mb", "mem_mb"))
        if m is not None:
            mems.append(m)
    if len(speeds) > 1:
        speeds = speeds[1:]
    return {
        "img_per_s": statistics.median(speeds) if speeds else None,
        "memory_mb": max(mems) if mems else None,
    }


def collect(spec: StudySpec) -> list[dict]:
    """One record per run of the study, whatever its state."""
    recs = []
    for run in spec.runs():
        d = Path(run.run_dir)
        status = read_json(d / STATUS_FILE, {}) or {}
        state = run_state(d)
        ev = read_json(d / EVAL_FILE) if state == "finished" else None
        rec: dict[str, Any] = {
            "variant": run.variant,
            "seed": run.seed,
            "run_dir": str(d),
            "state": state,
            "status": "ok" if ev else ("failed" if status.get("status") == "failed" else "missing"),
            "eval": ev,
            "train": train_facts(d),
            "results": str(d / RESULTS_FILE) if (d / RESULTS_FILE).is_file() else None,
            "changed": settings_changed(run) if ev else [],
        }
        if rec["status"] == "failed":
            rec["failure"] = {
                "message": status.get("message", ""),
                "phase": status.get("phase", ""),
                "attempts": status.get("attempts", 1),
                "log_tail": status.get("log_tail") or log_tail(d / LOG_FILE),
            }
        recs.append(rec)
    return recs


# ------------------------------------------------------------------------ metric accessors


def bins_of(recs: list[dict]) -> list[str]:
    """Bin names in evaluation order, ``all`` first (from the first finished run)."""
    for r in recs:
        if not r["eval"]:
            continue
        ev = r["eval"].get("eval") or {}
        bins = ev.get("bins")
        if isinstance(bins, list) and bins:
            names = [b["name"] if isinstance(b, dict) else str(b) for b in bins]
            return names if "all" in names else ["all", *names]
        names = ["all"]
        for k in r["eval"]["summary"]:
            if k.startswith("AP_") and k[3:] not in names:
                names.append(k[3:])
        return names
    return ["all"]


def ar_key(recs: list[dict]) -> str:
    """``AR@<largest max_dets>`` as found in the summaries."""
    best = None
    for r in recs:
        if r["eval"]:
            for k in r["eval"]["summary"]:
                if k.startswith("AR@"):
                    m = int(k[3:])
                    best = m if best is None or m > best else best
            break
    return f"AR@{best if best is not None else 100}"


def summary_key(metric: str, bin_name: str) -> str:
    """Flat summary key: ``AP_small``, ``AR_small@100``; the ``all`` bin has no suffix."""
    if bin_name == "all":
        return metric
    if "@" in metric:
        m, at = metric.split("@", 1)
        return f"{m}_{bin_name}@{at}"
    return f"{metric}_{bin_name}"


def _value(rec: dict, key: str) -> float | None:
    v = (rec.get("eval") or {}).get("summary", {}).get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v)
    return None  # pycocotools writes -1 for "no GT in this bin"


def _median(xs: list) -> float | None:
    xs = [x for x in xs if _is_num(x)]
    return statistics.median(xs) if xs else None


def _mean_std(vals: list[float]) -> tuple[float | None, float | None]:
    if not vals:
        return None, None
    mean = statistics.fmean(vals)
    return mean, (statistics.stdev(vals) if len(vals) > 1 else None)


def _errors_of(rec: dict) -> dict[str, dict[str, float]]:
    """``{bin: {error_type: dAP}}`` from the evaluator's TIDE-style ``errors`` section."""
    ev = (rec.get("eval") or {}).get("eval") or {}
    node = ev.get("errors")
    out: dict[str, dict[str, float]] = {}
    if not isinstance(node, dict):
        return out
    for b, entry in node.items():
        dap = entry.get("dAP") if isinstance(entry, dict) else None
        if isinstance(dap, dict):
            out[b] = {t: float(v) for t, v in dap.items() if _is_num(v)}
    return out


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ap_vs_iou(rec: dict) -> tuple[list[float], dict[str, list[float | None]]]:
    """IoU thresholds and ``{bin: [AP at each threshold]}`` (None where the bin is empty)."""
    ev = (rec.get("eval") or {}).get("eval") or {}
    thrs = [float(t) for t in (ev.get("params") or {}).get("iou_thrs", [])]
    curves: dict[str, list[float | None]] = {}
    for b in ev.get("bins") or []:
        at = b.get("AP_at_iou") if isinstance(b, dict) else None
        if not isinstance(at, dict) or not at:
            continue
        items = sorted((float(k), v) for k, v in at.items())
        if not thrs:
            thrs = [t for t, _ in items]
        curves[b["name"]] = [float(v) if _is_num(v) else None for _, v in items]
    return thrs, curves


# ---------------------------------------------------------------------------------- bootstrap


def bootstrap_cis(spec: StudySpec, recs: list[dict], keys: list[str]) -> dict[str, dict]:
    """``{variant: {"seeds": [...], "ci": {key: (delta, lo, hi)}, "note": str}}``.

    All finished runs go into one bootstrap: every resample draws the validation images once,
    with replacement, and evaluates every run on that same draw (matching is done once per
    run). Per resample, a variant's delta is the mean over the paired seeds of ``variant(s) -
    baseline(s)``; the CI is the 2.5-97.5 percentile range of that over the resamples, and the
    point value is the mean of the per-seed deltas (the Δ of the tables).
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
        from detector.evaluation.bootstrap import bootstrap_runs

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
    values, samples = np.asarray(res["values"]), np.asarray(res["samples"])
    idx = {k: i for i, k in enumerate(needed)}
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: empty bins
        for v, seeds in pairs.items():
            ib = [idx[(spec.baseline, s)] for s in seeds]
            iv = [idx[(v, s)] for s in seeds]
            point = np.nanmean(values[iv] - values[ib], axis=0)  # (K,)
            d = np.nanmean(samples[:, iv] - samples[:, ib], axis=1)  # (n, K)
            lo, hi = np.nanpercentile(d, 2.5, axis=0), np.nanpercentile(d, 97.5, axis=0)
            for j, k in enumerate(res["keys"]):
                if np.isfinite(point[j]) and np.isfinite(lo[j]) and np.isfinite(hi[j]):
                    out[v]["ci"][k] = (float(point[j]), float(lo[j]), float(hi[j]))
    return out


def _eval_cfg(rec: dict) -> dict:
    """The bins and max_dets the run was evaluated with (from its recorded settings)."""
    settings = read_json(Path(rec["run_dir"]) / SETTINGS_FILE, {}) or {}
    ev = (settings.get("resolved") or {}).get("eval") or {}
    return {"bins": ev.get("bins", "coco"), "max_dets": ev.get("max_dets", [1, 10, 100])}


def anchor_facts(spec: StudySpec, recs: list[dict]) -> dict[str, dict]:
    """Per variant with a finished run: how its anchors cover the training boxes per size bin
    (:func:`detector.models.anchor_coverage`), at the resolution training uses. Best-effort:
    an error is recorded, not raised, and missing training data is never generated here."""
    from detector.config import load_config
    from detector.data.loader import split_paths
    from detector.data.validation import load_coco_json
    from detector.models.anchor_coverage import anchor_coverage

    finished = {r["variant"] for r in recs if r["eval"]}
    out: dict[str, dict] = {}
    loaded: dict[str, dict] = {}
    for run in spec.runs():
        if run.variant in out or run.variant not in finished:
            continue
        try:
            cfg = load_config(run.config, run.overrides)
            _, ann = split_paths(cfg, "train", generate=False)
            if ann not in loaded:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    loaded[ann] = load_coco_json(ann)[0]
            t = cfg.data.transforms
            short = int(statistics.median(t.train_scales)) if t.train_scales else 0
            out[run.variant] = anchor_coverage(
                cfg,
                loaded[ann],
                bins=cfg.eval.bins,
                short_side=short,
                max_size=int(t.max_size) if short else 0,
            )
        except Exception as err:  # noqa: BLE001 - a fact, not a reason to lose the report
            out[run.variant] = {"error": f"{type(err).__name__}: {err}"}
    return out


# ------------------------------------------------------------------------------- aggregation


def aggregate(spec: StudySpec, recs: list[dict]) -> dict:
    """All numbers of the report, as plain data (this is ``report.json``)."""
    bins = bins_of(recs)
    ar = ar_key(recs)
    metrics = [*MAIN_METRICS, ar]
    keys = [summary_key(m, b) for b in bins for m in metrics]
    by = {(r["variant"], r["seed"]): r for r in recs}
    table: dict[str, dict] = {}
    for v in spec.variants:
        done = [by[(v, s)] for s in spec.seeds if by[(v, s)]["eval"]]
        row: dict[str, Any] = {"seeds_done": [r["seed"] for r in done], "metrics": {}}
        for k in keys:
            vals = [x for x in (_value(r, k) for r in done) if x is not None]
            mean, std = _mean_std(vals)
            delta = None
            if v != spec.baseline:
                diffs = []
                for s in spec.seeds:
                    a, b = by[(spec.baseline, s)], by[(v, s)]
                    va, vb = _value(a, k), _value(b, k)
                    if va is not None and vb is not None:
                        diffs.append(vb - va)
                delta = statistics.fmean(diffs) if diffs else None
            row["metrics"][k] = {"mean": mean, "std": std, "n": len(vals), "delta": delta}
        table[v] = row

    cis = bootstrap_cis(spec, recs, keys)

    errors: dict[str, dict] = {}
    for v in spec.variants:
        per_seed = [_errors_of(by[(v, s)]) for s in spec.seeds if by[(v, s)]["eval"]]
        per_seed = [e for e in per_seed if e]
        agg: dict[str, dict[str, float]] = {}
        for e in per_seed:
            for b, errs in e.items():
                for t, x in errs.items():
                    agg.setdefault(b, {}).setdefault(t, []).append(x)
        errors[v] = {
            b: {t: statistics.fmean(xs) for t, xs in errs.items()} for b, errs in agg.items()
        }

    curves: dict[str, dict] = {}
    for v in spec.variants:
        per_seed = [_ap_vs_iou(by[(v, s)]) for s in spec.seeds if by[(v, s)]["eval"]]
        per_seed = [c for c in per_seed if c[1]]
        if not per_seed:
            continue
        thrs = per_seed[0][0]
        cb: dict[str, list[float]] = {}
        for b in per_seed[0][1]:
            rows = [c[1][b] for c in per_seed if b in c[1] and len(c[1][b]) == len(thrs)]
            cb[b] = [
                statistics.fmean(ok) if (ok := [x for x in col if x is not None]) else None
                for col in zip(*rows)
            ]
        curves[v] = {"iou": thrs, "ap": cb}

    facts: dict[str, dict] = {}
    for v in spec.variants:
        done = [by[(v, s)] for s in spec.seeds if by[(v, s)]["eval"]]
        if not done:
            facts[v] = {}
            continue
        info = done[0]["eval"].get("model_info") or {}
        med = _median
        eval_mem = [
            (r["eval"].get("peak_memory") or {}).get("cuda_mb")
            or (r["eval"].get("peak_memory") or {}).get("rss_mb")
            for r in done
        ]
        facts[v] = {
            "params": info.get("params"),
            "flops": info.get("flops"),
            "input_size": info.get("input_size"),
            "output_stride": info.get("output_stride"),
            "receptive_field": info.get("receptive_field"),
            "hdc": info.get("hdc"),
            "model_info_error": info.get("error"),
            "train_img_per_s": med([r["train"]["img_per_s"] for r in done]),
            "train_memory_mb": med([r["train"]["memory_mb"] for r in done]),
            "inference_s_per_img": med([r["eval"].get("inference_s_per_img") for r in done]),
            "eval_memory_mb": med(eval_mem),
            "device": done[0]["eval"].get("device"),
        }

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
        "table": table,
        "bootstrap": {"n": spec.bootstrap, "seed": spec.bootstrap_seed, "variants": cis},
        "errors": errors,
        "curves": curves,
        "facts": facts,
        "runs": [
            {
                k: r.get(k)
                for k in ("variant", "seed", "run_dir", "state", "status", "failure", "changed")
            }
            for r in recs
        ],
    }


# ---------------------------------------------------------------------------------- markdown


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _cell(m: dict) -> str:
    if m["mean"] is None:
        return "–"
    s = _pct(m["mean"])
    return s + (f" ± {_pct(m['std'])}" if m["std"] is not None else "")


def _delta_cell(m: dict, ci: tuple | None) -> str:
    if m["delta"] is None:
        return "–"
    s = f"{100 * m['delta']:+.1f}"
    if ci is not None:
        s += f" [{100 * ci[1]:+.1f}, {100 * ci[2]:+.1f}]"
        if ci[1] > 0 or ci[2] < 0:
            s = f"**{s}**"
    return s


def _human(n: float | None, unit: float, digits: int = 2) -> str:
    return "–" if n is None else f"{n / unit:.{digits}f}"


def _sig(x: float | None) -> str:
    """Three significant digits (throughputs span 0.05 to 500)."""
    return "–" if x is None else f"{x:.3g}"


def _rf(rf: Any) -> str:
    if rf is None:
        return "–"
    if isinstance(rf, dict) and rf and all(isinstance(v, dict) for v in rf.values()):
        last = list(rf.values())[-1]  # per-stage {stage: {rf, jump}}: the deepest stage
        return f"{last['rf']:g}" if _is_num(last.get("rf")) else "–"
    if isinstance(rf, dict):
        for k in ("size", "rf", "theoretical", "value"):
            if isinstance(rf.get(k), (int, float)):
                return f"{rf[k]:g}"
        return ", ".join(f"{k}: {v}" for k, v in list(rf.items())[:3])
    return str(rf)


def markdown(agg: dict) -> str:
    base = agg["baseline"]
    lines = [f"# Study `{agg['name']}`", ""]
    if agg["description"]:
        lines += [agg["description"], ""]
    n_ok = sum(r["status"] == "ok" for r in agg["runs"])
    lines += [
        f"Baseline: **{base}** · seeds: {agg['seeds']} · runs finished: {n_ok}/{len(agg['runs'])}",
        "",
        "AP/AR in %. Cells: mean ± sample std over seeds. Δ: mean paired (same-seed) difference "
        f"from `{base}`; brackets: paired-bootstrap 95% CI over validation images "
        f"({agg['bootstrap']['n']} resamples, same image draw for all runs, delta averaged over seeds); **bold** = CI excludes 0.",
        "",
        "| variant | config | overrides |",
        "|---|---|---|",
    ]
    for v, x in agg["variants"].items():
        ov = " ".join(f"`{o}`" for o in x["overrides"]) or "–"
        name = v if x["label"] in ("", v) else f"{v} ({x['label']})"
        lines.append(f"| {name} | `{x['config']}` | {ov} |")
    if agg["common"]:
        lines += ["", "Common overrides: " + " ".join(f"`{o}`" for o in agg["common"])]

    cis = agg["bootstrap"]["variants"]
    for b in agg["bins"]:
        lines += ["", f"## Size bin `{b}`", ""]
        head = ["variant", "seeds"]
        for m in agg["metrics"]:
            head += [m, f"Δ{m}"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for v, row in agg["table"].items():
            cells = [f"**{v}**" if v == base else v, str(len(row["seeds_done"]))]
            for m in agg["metrics"]:
                k = summary_key(m, b)
                mm = row["metrics"][k]
                ci = (cis.get(v) or {}).get("ci", {}).get(k)
                cells += [_cell(mm), "" if v == base else _delta_cell(mm, ci)]
            lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {v}: {c['note']}" for v, c in cis.items() if c.get("note")]
    if notes:
        lines += ["", "Bootstrap notes:", *notes]

    # error analysis, bins side by side
    lines += ["", "## Error analysis (dAP, % points, mean over seeds)", ""]
    if not any(agg["errors"].values()):
        lines.append("No error analysis in the evaluation results.")
    else:
        for b in agg["bins"]:
            types: list[str] = []
            for e in agg["errors"].values():
                for t in e.get(b, {}):
                    if t not in types:
                        types.append(t)
            if not types:
                continue
            lines += [
                f"**{b}**",
                "",
                "| variant | " + " | ".join(types) + " |",
                "|" + "---|" * (len(types) + 1),
            ]
            for v, e in agg["errors"].items():
                vals = [_pct(e.get(b, {}).get(t), 2) for t in types]
                lines.append(f"| {v} | " + " | ".join(vals) + " |")
            lines.append("")

    lines += [
        "",
        "## Model facts",
        "",
        "| variant | params (M) | GFLOPs | input | stride | RF (px) | train img/s "
        "| inference s/img | train peak MB | eval peak MB | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v, f in agg["facts"].items():
        if not f:
            lines.append(f"| {v} |" + " – |" * 10)
            continue
        size = "×".join(str(s) for s in f["input_size"]) if f.get("input_size") else "–"
        lines.append(
            f"| {v} | {_human(f['params'], 1e6)} | {_human(f['flops'], 1e9)} | {size} "
            f"| {f['output_stride'] if f['output_stride'] is not None else '–'} "
            f"| {_rf(f['receptive_field'])} "
            f"| {_sig(f['train_img_per_s'])} | {_sig(f['inference_s_per_img'])} "
            f"| {_human(f['train_memory_mb'], 1, 0)} | {_human(f['eval_memory_mb'], 1, 0)} "
            f"| {f.get('device') or '–'} |"
        )
    errs = [
        f"- {v}: model_info failed: {f['model_info_error']}"
        for v, f in agg["facts"].items()
        if f.get("model_info_error")
    ]
    if errs:
        lines += ["", *errs]
    lines += [
        "",
        "Train img/s: median over the logged windows of the trainer (metrics.jsonl). Inference "
        "s/img: forward pass only, batch 1, median over up to 10 validation images after 2 "
        "warm-up ones (CUDA-synchronised). RF: theoretical receptive field of the last stage. "
        "Eval peak MB: CUDA max allocated, else the process's peak RSS.",
    ]

    cov = agg.get("anchor_coverage") or {}
    if cov:
        cov_bins = next((list(c["bins"]) for c in cov.values() if c.get("bins")), [])
        lines += [
            "",
            "## Anchor coverage of the training boxes",
            "",
            "Per size bin: the share of training boxes with an anchor at IoU >= the RPN's "
            "positive threshold, then at IoU >= 0.5 (`tools/anchor_coverage.py`). A box below "
            "the threshold trains the RPN from its one fallback (best-anchor) match only.",
            "",
            "| variant | strides | anchor sizes | RPN thr | "
            + " | ".join(f"{b} (n)" for b in cov_bins)
            + " |",
            "|---|---|---|---|" + "---|" * len(cov_bins),
        ]
        for v, c in cov.items():
            if c.get("error"):
                lines.append(f"| {v} | {c['error']} |")
                continue
            cells = []
            for b in cov_bins:
                r = c["bins"].get(b) or {}
                cells.append(
                    f"{100 * r['above_fg']:.0f}% / {100 * r['above_05']:.0f}% ({r['count']})"
                    if r.get("count")
                    else "–"
                )
            lines.append(
                f"| {v} | {','.join(map(str, c['strides']))} "
                f"| {','.join(f'{x:g}' for x in c['anchor_sizes'])} | {c['fg_iou_thresh']:g} | "
                + " | ".join(cells)
                + " |"
            )
    lines += ["", "## Plots", ""]
    for p in agg.get("plots", []):
        lines += [f"![{p}]({p})", ""]
    if agg.get("plot_error"):
        lines += [f"Plotting failed: {agg['plot_error']}", ""]
    lines += ["TensorBoard HParams: `tensorboard --logdir " + agg.get("tb_dir", "tb") + "`", ""]

    changed = [r for r in agg["runs"] if r.get("changed")]
    if changed:
        lines += ["## Warning: runs made with other settings than the study file's", ""]
        for r in changed:
            lines.append(
                f"- {r['variant']}/seed{r['seed']} (`{r['run_dir']}`): "
                + "; ".join(f"`{c}`" for c in r["changed"][:8])
            )
        lines += ["", "Delete these run directories and run the study again to redo them.", ""]
    failed = [r for r in agg["runs"] if r["status"] == "failed"]
    missing = [r for r in agg["runs"] if r["status"] == "missing"]
    if failed or missing:
        lines += ["## Runs not finished", ""]
        for r in missing:
            lines.append(f"- {r['variant']}/seed{r['seed']}: not run yet ({r['state']})")
        for r in failed:
            f = r["failure"] or {}
            lines += [
                f"- **{r['variant']}/seed{r['seed']} failed** ({f.get('phase', '')}, attempt "
                f"{f.get('attempts', 1)}): {f.get('message', '')} - `{r['run_dir']}`",
                "",
                "```",
                f.get("log_tail", "") or "(empty log)",
                "```",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------- plots


def plot(agg: dict, out_dir: Path) -> list[str]:
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


# ------------------------------------------------------------------------------- tensorboard


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def write_hparams(spec: StudySpec, recs: list[dict], tb_dir: Path) -> int:
    """One TensorBoard sub-run per finished run, with its HParams against its final metrics."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    if tb_dir.exists():
        shutil.rmtree(tb_dir)  # rebuilt from scratch, so re-running adds no duplicates
    keys = list(dict.fromkeys([*DEFAULT_HPARAMS, *spec.hparams]))
    n = 0
    for r in recs:
        if not r["eval"]:
            continue
        settings = read_json(Path(r["run_dir"]) / SETTINGS_FILE, {}) or {}
        resolved = settings.get("resolved") or {}
        hp: dict[str, Any] = {"variant": r["variant"], "seed": r["seed"]}
        for k in keys:
            v = _get(resolved, k)
            if isinstance(v, (bool, int, float, str)):
                hp[k] = v
            elif v is not None:
                hp[k] = json.dumps(v, sort_keys=True)
        metrics = {
            f"study/{k}": float(v)
            for k, v in r["eval"]["summary"].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        facts = {
            "study/train_img_per_s": r["train"]["img_per_s"],
            "study/inference_s_per_img": r["eval"].get("inference_s_per_img"),
        }
        metrics.update({k: float(v) for k, v in facts.items() if v is not None})
        exp, ssi, sei = hparams(hp, metrics)
        with SummaryWriter(log_dir=str(tb_dir / f"{r['variant']}_seed{r['seed']}")) as w:
            w.file_writer.add_summary(exp)
            w.file_writer.add_summary(ssi)
            w.file_writer.add_summary(sei)
            for k, v in metrics.items():
                w.add_scalar(k, v, 0)
        n += 1
    return n


# -------------------------------------------------------------------------------------- main


def write_report(spec: StudySpec, tensorboard: bool = True, plots: bool = True) -> dict:
    """Write ``report.md``, ``report.json``, the plots and ``tb/`` into the study directory."""
    out = Path(spec.output)
    out.mkdir(parents=True, exist_ok=True)
    recs = collect(spec)
    agg = aggregate(spec, recs)
    agg["plots"] = []
    if plots and any(r["eval"] for r in recs):
        try:
            agg["plots"] = plot(agg, out)
        except Exception as err:  # noqa: BLE001
            agg["plot_error"] = f"{type(err).__name__}: {err}"
    try:
        agg["anchor_coverage"] = anchor_facts(spec, recs)
    except Exception as err:  # noqa: BLE001
        agg["anchor_coverage"] = {}
        agg["anchor_coverage_error"] = f"{type(err).__name__}: {err}"
    agg["tb_dir"] = str(out / "tb")
    if tensorboard:
        try:
            agg["tb_runs"] = write_hparams(spec, recs, out / "tb")
        except Exception as err:  # noqa: BLE001
            agg["tb_error"] = f"{type(err).__name__}: {err}"
    (out / "report.md").write_text(markdown(agg))
    (out / "report.json").write_text(json.dumps(agg, indent=1, default=str))
    return agg
