"""Command-line front ends for tools/evaluate.py and tools/compare.py (kept thin there)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .coco_io import EvalInputError, keep_categories, restrict_categories, select_categories


def _write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Size-stratified COCO bbox evaluation of a results JSON, or of a checkpoint.",
    )
    src = p.add_argument_group("score a results file")
    src.add_argument("--gt", help="COCO ground-truth JSON")
    src.add_argument("--results", help="COCO results JSON (list of detections)")
    mdl = p.add_argument_group("run a model first")
    mdl.add_argument("--config", help="experiment config (YAML)")
    mdl.add_argument("--checkpoint", help="model checkpoint")
    mdl.add_argument("--data", help="image folder to run on (default: the config's val set)")
    mdl.add_argument("--ann", help="annotation JSON for --data (default: the config's)")
    mdl.add_argument(
        "--results-out", help="where to write the detections (default: next to --json)"
    )
    mdl.add_argument("--opts", nargs="*", default=None, help="config overrides KEY=VALUE")
    p.add_argument(
        "--bins",
        default="coco",
        help="preset (coco, aitod, soda, tinyperson) or edges like 0,8,16,32,96,inf",
    )
    p.add_argument(
        "--max-dets", default="1,10,100", help="comma-separated maxDets, e.g. 1,10,100,300,1000"
    )
    p.add_argument(
        "--iou-thrs", default=None, help="comma-separated IoU thresholds (default COCO .50:.05:.95)"
    )
    p.add_argument(
        "--categories",
        help="comma-separated category names or ids to score alone (pycocotools' catIds)",
    )
    p.add_argument("--backend", choices=["fast", "pycocotools"], default="fast")
    p.add_argument("--no-errors", action="store_true", help="skip the TIDE error analysis")
    p.add_argument("--json", help="write every number to this JSON file")
    p.add_argument("--plots", help="write PNG plots to this folder")
    p.add_argument("--tensorboard", help="log the report to this TensorBoard log dir")
    p.add_argument("--step", type=int, default=0, help="TensorBoard step")
    return p


def load_cfg(path: str, overrides: list[str] | None):
    from detector.config import load_config

    return load_config(path, overrides)


def run_model(args) -> tuple[list, str, bool]:
    """Run ``detector.engine.inference.run_inference`` (every rank under torchrun).

    Returns ``(results, gt_path, is_main_process)``; results are gathered on every rank.
    """
    from detector.engine import distributed as du
    from detector.engine.inference import run_inference  # lazy: needs torch and the model code

    cfg = load_cfg(args.config, args.opts)
    du.init_distributed(cfg.get("device", "auto"))
    print(
        f"running {args.checkpoint} on {args.data or 'the val set of ' + args.config} "
        f"(rank {du.get_rank()}/{du.get_world_size()})",
        file=sys.stderr,
    )
    results, gt_path = run_inference(cfg, args.checkpoint, images=args.data, ann=args.ann)
    return results, gt_path, du.is_main_process()


def evaluate_main(argv: list[str] | None = None) -> int:
    from .api import evaluate

    args = evaluate_parser().parse_args(argv)
    gt, results = args.gt, args.results
    try:
        if args.config or args.checkpoint:
            if not (args.config and args.checkpoint):
                raise SystemExit("error: --config and --checkpoint go together")
            results, gt_path, main = run_model(args)
            if not main:
                return 0  # under torchrun only rank 0 writes and scores
            gt = gt or gt_path
            out = args.results_out or (
                str(Path(args.json).with_suffix("")) + "_results.json"
                if args.json
                else "results.json"
            )
            _write_json(out, results)
            print(f"wrote {len(results)} detections to {out}", file=sys.stderr)
        if not gt or results is None:
            raise SystemExit("error: give --gt and --results, or --config and --checkpoint")
        if args.categories:
            gt, results = restrict_categories(gt, results, args.categories.split(","))
        iou = None
        if args.iou_thrs:
            iou = [float(x) for x in args.iou_thrs.split(",") if x.strip()]
        report = evaluate(
            gt,
            results,
            bins=args.bins,
            max_dets=args.max_dets,
            iou_thrs=iou,
            backend=args.backend,
            errors=not args.no_errors,
        )
    except (EvalInputError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.markdown())
    if args.json:
        _write_json(args.json, report.to_dict())
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plots:
        from .plots import save_plots

        for path in save_plots(report, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        from .tensorboard import log_report

        with SummaryWriter(args.tensorboard) as writer:
            log_report(writer, report, args.step)
    return 0


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Compare results files per size bin with paired image-level bootstrap CIs.",
    )
    p.add_argument("--gt", required=True, help="COCO ground-truth JSON")
    p.add_argument("runs", nargs="+", help="results JSON files; the first is the baseline")
    p.add_argument("--names", help="comma-separated run names (default: file stems)")
    p.add_argument("--bins", default="coco")
    p.add_argument("--max-dets", default="1,10,100")
    p.add_argument("--metrics", help="comma-separated keys (default: AP, AP50, AP75 and AP_<bin>)")
    p.add_argument("--n", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--categories",
        help="comma-separated category names or ids to score alone (pycocotools' catIds)",
    )
    p.add_argument("--json", help="write values, CIs and deltas to this JSON file")
    return p


def compare_markdown(out: dict, names: list[str]) -> str:
    def f(v):
        return "–" if v != v else f"{v * 100:.1f}"

    head = ["metric", *names, *[f"{n} − {names[0]} [95% CI]" for n in names[1:]]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, key in enumerate(out["keys"]):
        row = [key]
        for r in range(len(names)):
            lo, hi = out["ci"][r, i]
            row.append(f"{f(out['values'][r, i])} [{f(lo)}, {f(hi)}]")
        for r in range(1, len(names)):
            d, lo, hi = out["delta_ci"][r, i]
            sig = " *" if (lo > 0 or hi < 0) else ""
            row.append(f"{d * 100:+.2f} [{lo * 100:+.2f}, {hi * 100:+.2f}]{sig}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        f"{out['n']} paired image-level bootstrap resamples (seed {out['seed']}); "
        "* = the 95% CI of the delta excludes 0."
    )
    return "\n".join(lines) + "\n"


def compare_main(argv: list[str] | None = None) -> int:
    from .api import resolve_bins
    from .bootstrap import bootstrap_runs

    args = compare_parser().parse_args(argv)
    names = args.names.split(",") if args.names else [Path(r).stem for r in args.runs]
    if len(names) != len(args.runs):
        print("error: --names must give one name per run", file=sys.stderr)
        return 2
    try:
        bins = resolve_bins(args.bins)
        keys = (
            args.metrics.split(",")
            if args.metrics
            else ["AP", "AP50", "AP75", *[f"AP_{b.name}" for b in bins[1:]]]
        )
        gt, runs = args.gt, list(args.runs)
        if args.categories:
            gt, keep = select_categories(args.gt, args.categories.split(","))
            runs = [keep_categories(r, keep) for r in runs]
        out = bootstrap_runs(
            gt,
            runs,
            keys,
            n=args.n,
            seed=args.seed,
            bins=args.bins,
            max_dets=args.max_dets,
        )
    except (EvalInputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(compare_markdown(out, names))
    if args.json:
        res = {
            "runs": dict(zip(names, args.runs)),
            "n": out["n"],
            "seed": out["seed"],
            "metrics": {},
        }
        for i, key in enumerate(out["keys"]):
            res["metrics"][key] = {
                n: {
                    "value": _nan_none(out["values"][r, i]),
                    "ci": [_nan_none(x) for x in out["ci"][r, i]],
                    **(
                        {"delta_vs_" + names[0]: [_nan_none(x) for x in out["delta_ci"][r, i]]}
                        if r
                        else {}
                    ),
                }
                for r, n in enumerate(names)
            }
        _write_json(args.json, res)
    return 0


def _nan_none(v):
    v = float(v)
    return None if v != v else v
