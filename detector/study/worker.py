"""What one study run executes, in its own process: ``train`` and then ``eval``.

    python -m detector.study.worker train --config CFG --output RUN_DIR [--resume] KEY=VALUE...
    python -m detector.study.worker eval  --config CFG --output RUN_DIR KEY=VALUE...

``train`` calls :func:`detector.engine.trainer.train`. ``eval`` loads ``model_final.pth`` once
(:func:`detector.engine.loading.load_trained_model`), takes the detections the trainer's final
evaluation wrote for those weights (:func:`trainer_results`; it runs inference on the
validation set itself only when there are none it can trust), times the model's forward pass
(batch 1, median over up to 10 validation images after 2 warm-up ones), writes the detections
to ``results_val.json`` and the
full size-stratified evaluation, the model facts and the timings to ``study_eval.json`` (written
last and atomically: its presence marks the run as evaluated).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from detector.study.layout import EVAL_FILE, FINAL_MODEL, METRICS_FILE, RESULTS_FILE, raw_config
from detector.utils.dotted import diff_dotted
from detector.utils.errors import SmalldetError
from detector.utils.files import atomic_write_json, read_json, read_json_or, read_jsonl


def _load_cfg(config: str, overrides: list[str], run_dir: Path):
    from detector.config import load_config

    cfg = load_config(config, overrides)
    cfg.output_dir = str(run_dir)
    return cfg


def input_size(cfg, gt: dict | None = None) -> tuple[int, int]:
    """The image size the model facts (FLOPs) are given at: the configured test size if any,
    else the synthetic image size, else the size of the median validation image by pixel count
    (a size some image really has, not a mix of the median height and the median width)."""
    t = cfg.data.transforms
    if cfg.data.source == "builtin":
        side = int(t.test_scale or cfg.data.builtin.image_size)
        return side, side
    if gt and gt.get("images"):
        sizes = sorted((int(im.get("height", 0)), int(im.get("width", 0))) for im in gt["images"])
        sizes.sort(key=lambda hw: hw[0] * hw[1])  # by pixel count; stable, so ties stay ordered
        h, w = sizes[len(sizes) // 2]
        if t.test_scale and min(h, w) > 0:
            s = t.test_scale / min(h, w)
            if max(h, w) * s > t.max_size:
                s = t.max_size / max(h, w)
            h, w = round(h * s), round(w * s)
        if h > 0 and w > 0:
            return h, w
    side = int(t.test_scale or 800)
    return side, side


def peak_memory_mb(device: str | None = None) -> dict:
    """Peak CUDA memory allocated (if CUDA was used) and the peak RSS of this process."""
    out = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001 - facts are best-effort
        pass
    return out


def time_inference(model, dataset, device, max_images: int = 10, warmup: int = 2) -> dict:
    """Forward-only latency of ``model`` (loaded, in eval mode), batch 1, on up to
    ``max_images`` images of ``dataset`` (after ``warmup`` untimed ones): median and mean
    seconds per image."""
    import torch

    n = min(len(dataset), max_images + warmup)
    times = []
    with torch.inference_mode():
        for i in range(n):
            img = dataset[i][0].to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model([img])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= min(warmup, n - 1):
                times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "median_s": times[len(times) // 2] if times else None,
        "mean_s": sum(times) / len(times) if times else None,
        "images": len(times),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def trainer_results(run_dir: Path, cfg) -> tuple[list, float] | None:
    """The detections of the trainer's final evaluation, and that evaluation's seconds, when
    they are certainly those of ``model_final.pth`` under ``cfg``; else None.

    Why: the trainer already ran the whole validation set through the final weights, and a
    second pass cost a study 40-90 s per run on the aerial cars at one CPU thread. Trusted
    only when every link holds: the run's ``final`` row (:func:`final_row`) has an ``eval``
    row of the same iteration, the detections file is no older than the weights and holds as
    many detections as that row counted, and the run's ``config.yaml`` equals the config the
    eval phase was given (a test-time setting changed since training means new detections).
    """
    from detector.engine.rundir import final_row

    finished = final_row(run_dir)
    if not finished:
        return None
    evals = [
        r
        for r in read_jsonl(run_dir / METRICS_FILE)
        if isinstance(r, dict)
        and r.get("type") == "eval"
        and r.get("iteration") == finished.get("iteration")
    ]
    path, weights = run_dir / RESULTS_FILE, run_dir / FINAL_MODEL
    if not evals or not path.is_file() or not weights.is_file():
        return None
    if path.stat().st_mtime_ns < weights.stat().st_mtime_ns:
        return None
    trained = raw_config(run_dir)
    if trained is None:
        return None
    changed = [
        key
        for key, _, new in diff_dotted(trained, cfg.to_dict(), ignore=("output_dir",))
        if not (key == "model.num_classes" and new == 0)  # 0: the trainer took it from the data
    ]
    if changed:
        return None
    results = read_json_or(path)
    if not isinstance(results, list) or len(results) != evals[-1].get("num_results"):
        return None
    return results, float(evals[-1].get("eval_time", float("nan")))


def cmd_train(args) -> int:
    from detector.engine.trainer import train

    run_dir = Path(args.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = _load_cfg(args.config, args.overrides, run_dir)
    train(cfg, str(run_dir), resume=args.resume)
    if not (run_dir / FINAL_MODEL).is_file():
        print(f"training returned but {run_dir / FINAL_MODEL} was not written", file=sys.stderr)
        return 3
    return 0


def cmd_eval(args) -> int:
    from detector.data import build_dataset
    from detector.engine.inference import predict_split
    from detector.engine.loading import load_trained_model, model_device
    from detector.evaluation import evaluate
    from detector.evaluation.capacity import eval_settings

    run_dir = Path(args.output)
    cfg = _load_cfg(args.config, args.overrides, run_dir)
    ckpt = run_dir / FINAL_MODEL
    if not ckpt.is_file():
        print(f"no {ckpt}: the run has not finished training", file=sys.stderr)
        return 2

    device = model_device(cfg)
    dataset = build_dataset(cfg, "val")
    # one load serves the inference pass and the timing (CheckpointError: one line, exit 1)
    model, _ = load_trained_model(cfg, ckpt, device, dataset=dataset)
    gt_path = Path(dataset.ann_file)
    reused = trainer_results(run_dir, cfg)
    if reused is not None:
        results, elapsed = reused  # elapsed: the trainer's inference and scoring
    else:
        t0 = time.perf_counter()
        results = predict_split(cfg, model, dataset, device)
        elapsed = time.perf_counter() - t0
        atomic_write_json(results, run_dir / RESULTS_FILE)
    gt = read_json(gt_path, "ground-truth file")
    n_images = len(gt.get("images", []))

    # the run's scoring protocol (bins, maxDets, IoU thresholds, preset) and its model caps
    report = evaluate(str(gt_path), results, **eval_settings(cfg))
    facts: dict = {}
    try:
        from detector.models import model_info

        facts = dict(model_info(cfg, input_size(cfg, gt)))
    except Exception as err:  # noqa: BLE001 - facts must not cost the run its evaluation
        facts = {"error": f"{type(err).__name__}: {err}"}
    facts["input_size"] = list(input_size(cfg, gt))
    try:
        timing = time_inference(model, dataset, device)
    except Exception as err:  # noqa: BLE001 - fall back to the wall time of the whole pass
        timing = {"error": f"{type(err).__name__}: {err}"}

    out = {
        "summary": dict(report.summary),
        "eval": report.to_dict(),
        "gt_path": str(gt_path.resolve()),
        "num_images": n_images,
        "num_detections": len(results),
        "detections_from": "trainer" if reused is not None else "eval",
        "inference_total_s": elapsed,
        "inference_s_per_img": timing.get("median_s") or elapsed / max(n_images, 1),
        "inference_timing": timing,
        "peak_memory": peak_memory_mb(),
        "model_info": facts,
        "device": timing.get("device_name") or str(device),
    }
    atomic_write_json(out, run_dir / EVAL_FILE)
    print(json.dumps(out["summary"], indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detector.study.worker", description=__doc__)
    p.add_argument("phase", choices=["train", "eval"])
    p.add_argument("--config", required=True)
    p.add_argument("--output", required=True, help="the run directory")
    p.add_argument("--resume", action="store_true")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = p.parse_intermixed_args(argv)
    try:
        return cmd_train(args) if args.phase == "train" else cmd_eval(args)
    except SmalldetError as err:  # a user-fixable problem: its message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
