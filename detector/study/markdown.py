"""``report.md``: the tables of :func:`detector.study.stats.aggregate`'s numbers, in Markdown.

Pure formatting: every number comes from ``agg`` (which is also ``report.json``), so the two
files never disagree.
"""

from __future__ import annotations

from .stats import summary_key


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


def _rf(rf: dict | float | None) -> str:
    """The theoretical receptive field of the deepest stage: model_info writes
    ``{stage: {rf, jump}}``; a custom eval command may give the number itself."""
    if isinstance(rf, dict) and rf:
        return f"{list(rf.values())[-1]['rf']:g}"
    return f"{rf:g}" if isinstance(rf, (int, float)) and not isinstance(rf, bool) else "–"


def _learning_curves(agg: dict) -> list[str]:
    """The "Learning curves" section: one table per metric, a row per iteration, a column per
    variant (nothing when no run has a point)."""
    lc = agg.get("learning_curves")
    if not lc:
        return []
    variants = list(lc["variants"])
    by_it = {v: {r["iteration"]: r for r in e["points"]} for v, e in lc["variants"].items()}
    iterations = sorted({it for rows in by_it.values() for it in rows})
    lines = [
        "",
        "## Learning curves",
        "",
        "AP in % at each evaluated checkpoint, mean ± std over the seeds that have the point: "
        "the trainer's evaluations (metrics.jsonl) and the points `smalldet curve RUN_DIR` "
        "scored and cached (the report scores nothing itself). A gap that closes along the "
        "schedule is convergence speed; one that stays is what the design reaches.",
    ]
    for m in lc["metrics"]:
        lines += ["", f"**{m}**", "", "| iteration | " + " | ".join(variants) + " |"]
        lines.append("|---|" + "---|" * len(variants))
        for it in iterations:
            cells = [_cell(by_it[v][it][m]) if it in by_it[v] else "–" for v in variants]
            lines.append(f"| {it} | " + " | ".join(cells) + " |")
    return lines


def markdown(agg: dict) -> str:
    """The whole ``report.md`` for ``agg`` (with the extras :func:`write_report` adds)."""
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
                ci = cis[v]["ci"].get(k) if v in cis else None
                cells += [_cell(mm), "" if v == base else _delta_cell(mm, ci)]
            lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {v}: {c['note']}" for v, c in cis.items() if c["note"]]
    if notes:
        lines += ["", "Bootstrap notes:", *notes]

    lines += _learning_curves(agg)

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
        size = "×".join(str(s) for s in f["input_size"]) if f["input_size"] else "–"
        lines.append(
            f"| {v} | {_human(f['params'], 1e6)} | {_human(f['flops'], 1e9)} | {size} "
            f"| {f['output_stride'] if f['output_stride'] is not None else '–'} "
            f"| {_rf(f['receptive_field'])} "
            f"| {_sig(f['train_img_per_s'])} | {_sig(f['inference_s_per_img'])} "
            f"| {_human(f['train_memory_mb'], 1, 0)} | {_human(f['eval_memory_mb'], 1, 0)} "
            f"| {f['device'] or '–'} |"
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

    cov = agg["anchor_coverage"]
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
                r = c["bins"].get(b, {})  # variants may use other bins
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
    for p in agg["plots"]:
        lines += [f"![{p}]({p})", ""]
    if agg.get("plot_error"):
        lines += [f"Plotting failed: {agg['plot_error']}", ""]
    lines += ["TensorBoard HParams: `tensorboard --logdir " + agg["tb_dir"] + "`", ""]

    changed = [r for r in agg["runs"] if r["changed"]]
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
            f = r["failure"]
            lines += [
                f"- **{r['variant']}/seed{r['seed']} failed** ({f['phase']}, attempt "
                f"{f['attempts']}): {f['message']} - `{r['run_dir']}`",
                "",
                "```",
                f["log_tail"] or "(empty log)",
                "```",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"
