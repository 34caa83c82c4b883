"""How each variant's anchors cover the training boxes, per size bin (a section of the report)."""

from __future__ import annotations

import statistics
import warnings

from .spec import StudySpec


def anchor_facts(spec: StudySpec, recs: list[dict]) -> dict[str, dict]:
    """Per variant with a finished run: :func:`detector.models.anchor_coverage` of its training
    boxes, at the resolution training uses. Best-effort, per variant: an error (also an import
    error: this needs torch and the model code) is recorded in that variant's entry, never
    raised, and missing training data is never generated here."""
    finished = {r["variant"] for r in recs if r["eval"]}
    out: dict[str, dict] = {}
    loaded: dict[str, dict] = {}
    for run in spec.runs():
        if run.variant in out or run.variant not in finished:
            continue
        try:
            from detector.config import load_config
            from detector.data.loader import split_paths
            from detector.data.validation import load_coco_json
            from detector.models.anchor_coverage import anchor_coverage

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
