"""Reading a study back from its run directories: one record per (variant, seed), any state.

Only what the project writes is read: ``study_status.json`` and ``study_run.json`` (the
runner), ``study_eval.json`` and ``results_val.json`` (the worker), ``metrics.jsonl`` (the
trainer's ``train``/``eval``/``final`` rows). A missing or unreadable file counts as absent, so
a report can be built while runs are missing, failed or half-written.

``study_eval.json`` is written by :mod:`.worker`, or by a study's custom ``eval_command``; the
report needs only ``summary`` (the flat ``AP``, ``AP_small``, ``AR_small@100`` ... dict, None
for a bin without objects). The worker also writes, and the report uses where present:
``eval`` (the evaluator's ``EvalReport.to_dict()``: ``bins`` with ``AP_at_iou``,
``params.iou_thrs``, ``errors``), ``gt_path`` (no bootstrap CI without it),
``inference_s_per_img``, ``peak_memory`` (``rss_mb``, and ``cuda_mb`` when CUDA was used),
``model_info`` (:func:`detector.models.model_info`'s dict, or ``{"error": ...}``) and
``device``.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from detector.utils.files import read_json_or, read_jsonl
from detector.utils.numbers import is_number

from .layout import EVAL_FILE, RESULTS_FILE, STATUS_FILE
from .runner import run_state, settings_changed
from .spec import StudySpec


def is_num(v: Any) -> bool:
    """A finite int or float (not a bool; metrics.jsonl writes non-finite values as strings)."""
    return is_number(v) and math.isfinite(v)


def train_facts(run_dir: Path) -> dict:
    """Train throughput (median ``img_per_s`` over the trainer's logged windows, the first one -
    warm-up - left out when there are more) and the peak ``memory_mb`` it logged."""
    rows = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if r.get("type") == "train"]
    speeds = [float(r["img_per_s"]) for r in rows if is_num(r.get("img_per_s"))]
    mems = [float(r["memory_mb"]) for r in rows if is_num(r.get("memory_mb"))]
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
        status = read_json_or(d / STATUS_FILE, {})
        state = run_state(d)
        ev = read_json_or(d / EVAL_FILE) if state == "finished" else None
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
            rec["failure"] = {  # as the runner wrote them when the run failed
                "message": status.get("message", ""),
                "phase": status.get("phase", ""),
                "attempts": status.get("attempts", 1),
                "log_tail": status.get("log_tail", ""),
            }
        recs.append(rec)
    return recs
