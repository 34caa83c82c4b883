"""Learning curves: AP at every kept checkpoint of a run.

At a short CPU budget "equal time" mixes how fast a design converges with what it can reach; the
curve tells them apart (a gap that closes along the schedule is speed, one that stays is reach).

:func:`learning_curve` gives one point per iteration, from the cheapest source that has it:

1. an ``eval`` row of the run's ``metrics.jsonl`` (the trainer's ``eval.period`` /
   ``eval.final`` evaluations): no inference;
2. a cached point ``<run>/curve/eval_<iter:07d>.json`` written by an earlier call;
3. the checkpoint itself (a kept ``model_<iter>.pth``, or ``model_final.pth`` at the end of
   training), run on the run's val set under the run's ``config.yaml``: the same
   ``run_inference`` + ``evaluate`` as ``smalldet evaluate --config RUN/config.yaml --checkpoint
   CKPT --bins <eval.bins> --max-dets <eval.max_dets>``. Each point is cached atomically as soon
   as it is scored, so a killed call loses only the point it was working on.

A cached point is trusted while (a) its checkpoint, if still there, has the size and mtime it was
scored at (a rewritten file is scored again), (b) that mtime is later than the run directory's
last ``--overwrite`` (``.overwritten-*``: a replaced run's cache is not the new run's) and (c)
``config.yaml`` still scores the same way (:func:`cached_point_inputs`; a longer schedule keeps the
cache). A point whose checkpoint was pruned (``keep_last``) stays: that is how a curve outlives
pruning when ``smalldet curve`` is run while the run trains.

:func:`read_curve` is sources 1 and 2 only (no model, no inference): the study report, rebuilt
often, reads what exists and never scores anything itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from detector.utils.errors import SmalldetError
from detector.utils.files import atomic_write_json, read_json_or, read_jsonl

from .collect import is_num
from .layout import CONFIG_FILE, FINAL_MODEL, METRICS_FILE, raw_config

CURVE_DIR = "curve"
CACHE_FORMAT = "smalldet-curve-point"
CACHE_RE = re.compile(r"^eval_(\d{7})\.json$")
# bookkeeping keys of the trainer's eval rows (tb.RunLogger.record + Trainer.evaluate)
_ROW_KEYS = {"type", "iteration", "time", "num_images", "num_unique_images", "num_results"}
_ROW_KEYS |= {"eval_time"}


class CurveError(SmalldetError):
    """A run directory with nothing to draw a curve from (missing, or no checkpoint)."""


def cache_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / CURVE_DIR / f"eval_{int(iteration):07d}.json"


# ------------------------------------------------------------------------- cache validity


def cached_point_inputs(raw_cfg: dict) -> dict:
    """What decides a checkpoint's numbers, from a resolved config: the eval bins, max_dets,
    backend (and IoU thresholds and preset, when set), the model section and the val set. Not
    the schedule, so resuming a run with a longer ``solver.max_iter`` keeps its cached points;
    not the device. (The keyword arguments the scorer takes are
    :func:`detector.evaluation.capacity.eval_settings`.)"""
    data = raw_cfg.get("data") or {}
    transforms = data.get("transforms") or {}
    ev = raw_cfg.get("eval") or {}
    scoring = {k: ev.get(k) for k in ("bins", "max_dets", "backend")}
    # IoU thresholds and preset count only when set, so points cached before they existed stay
    scoring.update({k: ev[k] for k in ("iou_thrs", "preset") if ev.get(k)})
    return {
        "eval": scoring,
        "model": raw_cfg.get("model"),
        "data": {
            **{k: data.get(k) for k in ("source", "val_images", "val_ann")},
            # the generated val set depends on these; where it is cached does not
            "builtin": {k: v for k, v in (data.get("builtin") or {}).items() if k != "cache_dir"},
            "test_scale": transforms.get("test_scale"),
            "max_size": transforms.get("max_size"),
        },
    }


def settings_key(raw_cfg: dict) -> str:
    blob = json.dumps(cached_point_inputs(raw_cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _stamp(path: Path) -> dict | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _last_overwrite_ns(run_dir: Path) -> int:
    """When the run directory was last ``--overwrite``-n (the trainer moves the old run into
    ``.overwritten-<time>/``); 0 if never."""
    from detector.engine.rundir import ASIDE_PREFIX

    times = [0]
    try:
        for p in run_dir.iterdir():
            if p.name.startswith(ASIDE_PREFIX) and p.is_dir():
                times.append(p.stat().st_mtime_ns)
    except OSError:
        pass
    return max(times)


def _trusted(rec: Any, run_dir: Path, key: str | None, since_ns: int) -> bool:
    if not isinstance(rec, dict) or rec.get("format") != CACHE_FORMAT or key is None:
        return False
    stamp, name = rec.get("stamp"), rec.get("checkpoint")
    if rec.get("settings") != key or not isinstance(stamp, dict) or not isinstance(name, str):
        return False
    now = _stamp(run_dir / name)
    if now is not None:
        return now == stamp
    return int(stamp.get("mtime_ns", 0)) > since_ns  # pruned since, by this run


# ------------------------------------------------------------------------------- sources


def _summary(values: dict) -> dict[str, float | None]:
    return {k: float(v) if is_num(v) else None for k, v in values.items()}


def _metrics_points(rows: list[dict]) -> dict[int, dict]:
    """The trainer's ``eval`` rows (the last one wins where an iteration repeats)."""
    out = {}
    for r in rows:
        it = r.get("iteration")
        if r.get("type") != "eval" or not isinstance(it, int) or isinstance(it, bool):
            continue
        summary = {k: float(v) for k, v in r.items() if k not in _ROW_KEYS and is_num(v)}
        out[it] = {"iteration": it, "source": "metrics", "checkpoint": None, "summary": summary}
    return out


def _cache_records(run_dir: Path, key: str | None) -> dict[int, dict]:
    """The trusted cached points of the run, by iteration."""
    folder = run_dir / CURVE_DIR
    if key is None or not folder.is_dir():
        return {}
    since = _last_overwrite_ns(run_dir)
    out = {}
    for p in sorted(folder.iterdir()):
        m = CACHE_RE.match(p.name)
        if not m:
            continue
        rec = read_json_or(p)
        if _trusted(rec, run_dir, key, since) and rec.get("iteration") == int(m.group(1)):
            out[int(m.group(1))] = rec
    return out


def _cached_point(rec: dict) -> dict:
    return {
        "iteration": int(rec["iteration"]),
        "source": "cache",
        "checkpoint": rec["checkpoint"],
        "summary": _summary(rec.get("summary") or {}),
    }


def _points(run_dir: Path) -> tuple[dict[int, dict], dict[int, dict], list[dict], dict | None]:
    """``(points by iteration, trusted cache records, metrics rows, raw config)``."""
    raw = raw_config(run_dir)
    rows = read_jsonl(run_dir / METRICS_FILE)
    records = _cache_records(run_dir, settings_key(raw) if raw is not None else None)
    points = {it: _cached_point(rec) for it, rec in records.items()}
    points.update(_metrics_points(rows))  # the trainer's own number wins
    return points, records, rows, raw


def _flat(point: dict, metrics: list[str] | tuple[str, ...] | None) -> dict:
    names = point["summary"] if metrics is None else metrics
    out = {"iteration": point["iteration"]}
    out.update({m: point["summary"].get(m) for m in names})
    out["source"] = point["source"]
    out["checkpoint"] = point["checkpoint"]
    if "error" in point:
        out["error"] = point["error"]
    return out


def _sort_key(p: dict) -> tuple:
    return (p["iteration"] is None, p["iteration"] or 0)


def read_curve(run_dir: str | Path, metrics=None) -> list[dict]:
    """The points of a run that need no inference (trainer eval rows, trusted cache), sorted by
    iteration: ``[{"iteration": n, <metric>: value, ..., "source", "checkpoint"}]``
    (``metrics=None``: every summary key). A missing directory has none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    points, *_ = _points(run_dir)
    return [_flat(p, metrics) for p in sorted(points.values(), key=_sort_key)]


# ------------------------------------------------------------------------------ scoring


def _checkpoints(run_dir: Path) -> dict[int, Path]:
    from detector.engine.checkpoint import CKPT_RE, CheckpointManager

    found = CheckpointManager(run_dir, keep_last=0).all_checkpoints()
    return {int(CKPT_RE.match(p.name).group(1)): p for p in found}


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a path, or a :class:`CurveError` when it is not a run directory with a
    checkpoint or a recorded point (checked before any scoring)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CurveError(f"{run_dir}: no such run directory")
    if _checkpoints(run_dir) or (run_dir / FINAL_MODEL).is_file() or read_curve(run_dir):
        return run_dir
    raise CurveError(
        f"{run_dir}: no checkpoints (model_NNNNNNN.pth, {FINAL_MODEL}) and no eval rows in its "
        f"{METRICS_FILE}. Fix: point at a training run directory (one with checkpoint.period > 0 "
        "keeps points along the schedule)"
    )


def _final_iteration(final: Path, records: dict[int, dict], rows: list[dict]) -> int | None:
    """The iteration ``model_final.pth`` holds: from its cached point, else the trainer's last
    ``final`` row, else the file (None when it cannot be read: reported as an error point)."""
    stamp = _stamp(final)
    for it, rec in records.items():
        if rec["checkpoint"] == final.name and rec["stamp"] == stamp:
            return it
    finals = [r["iteration"] for r in rows if r.get("type") == "final"]
    if finals and isinstance(finals[-1], int):
        return int(finals[-1])
    from detector.engine.checkpoint import CheckpointError, load_checkpoint

    try:
        it = load_checkpoint(final).get("iteration")
    except (CheckpointError, AttributeError):
        return None
    return int(it) if isinstance(it, int) else None


def score_checkpoint(cfg, checkpoint: Path, iteration: int, key: str, run_dir: Path) -> dict:
    """Run and score one checkpoint as ``smalldet evaluate`` would, with the run's eval settings,
    and cache the point (atomically: a reader sees all of it or none)."""
    from detector.engine import inference  # looked up at call time (tests replace it)
    from detector.evaluation import evaluate
    from detector.evaluation.capacity import eval_settings

    stamp = _stamp(checkpoint)  # before reading: a file rewritten meanwhile is scored again
    t0 = time.perf_counter()
    results, gt_path = inference.run_inference(cfg, str(checkpoint))
    report = evaluate(
        gt_path,
        results,
        **eval_settings(cfg),  # the run's bins, maxDets, IoU thresholds, preset and caps
        errors=False,  # the summary does not depend on the error analysis
    )
    rec = {
        "format": CACHE_FORMAT,
        "version": 1,
        "iteration": int(iteration),
        "checkpoint": checkpoint.name,
        "stamp": stamp,
        "settings": key,
        "eval": {
            "bins": cfg.eval.bins,
            "max_dets": list(cfg.eval.max_dets),
            "backend": cfg.eval.backend,
        },
        "gt_path": str(gt_path),
        "num_results": len(results),
        "eval_time_s": round(time.perf_counter() - t0, 3),
        "summary": _summary(report.summary),
    }
    atomic_write_json(rec, cache_path(run_dir, iteration))
    return {**_cached_point(rec), "source": "evaluated"}


def learning_curve(
    run_dir: str | Path,
    metrics: list[str] | tuple[str, ...] | None = ("AP", "AP50", "AP75"),
    device: str | None = None,
    log=None,
) -> list[dict]:
    """One point per iteration of the run, sorted: ``[{"iteration": n, "AP": x, ...,
    "source": "metrics" | "cache" | "evaluated" | "error", "checkpoint": name}]``.

    Every kept ``model_<iter>.pth`` and ``model_final.pth`` that has no point yet is scored and
    cached (see the module docstring); ``metrics=None`` keeps every summary key (None where a
    bin has no objects). A checkpoint that cannot be scored (corrupt, from another config) is a
    point with ``"source": "error"``, its ``"error"`` message and None values, not an exception;
    one pruned by a running trainer while waiting its turn is skipped. ``device`` overrides the
    config's; ``log`` (default stderr) gets one line per checkpoint scored.
    """
    from detector.engine.checkpoint import CheckpointError

    run_dir = check_run_dir(run_dir)
    log = log or (lambda line: print(line, file=sys.stderr))
    points, records, rows, raw = _points(run_dir)
    todo = {it: p for it, p in _checkpoints(run_dir).items() if it not in points}
    final = run_dir / FINAL_MODEL
    if final.is_file():
        it = _final_iteration(final, records, rows)
        if it is None:
            points[None] = {
                "iteration": None,
                "source": "error",
                "checkpoint": final.name,
                "summary": {},
                "error": f"{final}: cannot read the iteration it was saved at",
            }
        elif it not in points:
            todo[it] = final  # the file that outlives pruning, and the run's end
    cfg = None
    for it, path in sorted(todo.items()):
        if cfg is None:
            from detector.config import load_config

            cfg = load_config(run_dir / CONFIG_FILE, [f"device={device}"] if device else None)
        log(f"{run_dir}: scoring {path.name} (iteration {it})")
        try:
            points[it] = score_checkpoint(cfg, path, it, settings_key(raw or {}), run_dir)
        except CheckpointError as err:
            if not path.exists():
                continue  # pruned by the trainer while we worked
            points[it] = {
                "iteration": it,
                "source": "error",
                "checkpoint": path.name,
                "summary": {},
                "error": str(err),
            }
    return [_flat(p, metrics) for p in sorted(points.values(), key=_sort_key)]


def default_metrics(points: list[dict]) -> list[str]:
    """``AP``, ``AP50`` and the AP of the smallest size bin (the first ``AP_<bin>`` key of the
    evaluator's summary, e.g. ``AP_small`` or ``AP_verytiny``), where the points have them."""
    keys = list(dict.fromkeys(k for p in points for k in p))
    smallest = next((k for k in keys if k.startswith("AP_")), None)
    return [m for m in ("AP", "AP50", smallest) if m and m in keys]
