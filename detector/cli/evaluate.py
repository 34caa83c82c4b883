"""``smalldet evaluate``: size-stratified COCO evaluation of a results file, or of a checkpoint
(``tools/evaluate.py`` is the same command).

    smalldet evaluate --gt GT.json --results DT.json [--bins PRESET|EDGES] [--max-dets LIST]
                      [--json OUT] [--plots DIR] [--backend fast|pycocotools] [--tensorboard DIR]
    smalldet evaluate --config CFG --checkpoint CKPT [--data IMAGES --ann ANN] [--json OUT]

With ``--checkpoint`` the model runs first (``detector.engine.inference``, on every rank under
torchrun); the scoring is ``detector.evaluation``, which needs neither torch nor the engine. That
is why this front end lives here and not in ``detector.evaluation``.

Exit codes: 0 scored; 2 bad input: unreadable or inconsistent GT/results, a bad flag value, a
missing checkpoint, a config error (any SmalldetError) or a path that cannot be read or written;
argparse usage errors are 2 as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.cli.main import UsageError, guarded
from detector.utils.files import atomic_write_json

ERROR_EXIT = 2


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
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


def check_scoring_flags(bins: str, max_dets: str) -> None:
    """Reject a bad ``--bins``/``--max-dets`` before any work, naming the flag.

    ``detector.evaluation`` raises a plain ValueError for them (it is a library); here they are
    user input, so they become a :class:`UsageError`.
    """
    from detector.evaluation.api import parse_max_dets, resolve_bins

    for flag, check, value in (
        ("--bins", resolve_bins, bins),
        ("--max-dets", parse_max_dets, max_dets),
    ):
        try:
            check(value)
        except ValueError as err:
            raise UsageError(f"{flag} {value}: {err}") from None


def parse_iou_thrs(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        thrs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        thrs = []
    if not thrs or any(not 0 < t <= 1 for t in thrs):
        raise UsageError(f"--iou-thrs {text}: give comma-separated values in (0, 1], e.g. 0.5,0.75")
    return thrs


def load_cfg(path: str, overrides: list[str] | None):
    from detector.config import load_config

    return load_config(path, overrides)


def run_model(args) -> tuple[list, str, bool]:
    """Run ``detector.engine.inference.run_inference`` (every rank under torchrun).

    Returns ``(results, gt_path, is_main_process)``; results are gathered on every rank.
    """
    from detector.engine import distributed as du
    from detector.engine.checkpoint import CheckpointError
    from detector.engine.inference import run_inference  # lazy: needs torch and the model code

    if not Path(args.checkpoint).is_file():  # before building the dataset and the model
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    cfg = load_cfg(args.config, args.opts)
    du.init_distributed(cfg.get("device", "auto"))
    print(
        f"running {args.checkpoint} on {args.data or 'the val set of ' + args.config} "
        f"(rank {du.get_rank()}/{du.get_world_size()})",
        file=sys.stderr,
    )
    results, gt_path = run_inference(cfg, args.checkpoint, images=args.data, ann=args.ann)
    return results, gt_path, du.is_main_process()


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from detector.evaluation import evaluate
    from detector.evaluation.coco_io import restrict_categories

    if (args.config or args.checkpoint) and not (args.config and args.checkpoint):
        parser.error("--config and --checkpoint go together")
    if not args.checkpoint and not (args.gt and args.results):
        parser.error("give --gt and --results, or --config and --checkpoint")
    check_scoring_flags(args.bins, args.max_dets)
    iou = parse_iou_thrs(args.iou_thrs)
    gt, results = args.gt, args.results
    if args.checkpoint:
        results, gt_path, is_main = run_model(args)
        if not is_main:
            return 0  # under torchrun only rank 0 writes and scores
        gt = gt or gt_path
        out = args.results_out or (
            str(Path(args.json).with_suffix("")) + "_results.json" if args.json else "results.json"
        )
        atomic_write_json(results, out)
        print(f"wrote {len(results)} detections to {out}", file=sys.stderr)
    if args.categories:
        gt, results = restrict_categories(gt, results, args.categories.split(","))
    report = evaluate(
        gt,
        results,
        bins=args.bins,
        max_dets=args.max_dets,
        iou_thrs=iou,
        backend=args.backend,
        errors=not args.no_errors,
    )
    print(report.markdown())
    if args.json:
        atomic_write_json(report.to_dict(), args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plots:
        from detector.evaluation.plots import save_plots

        for path in save_plots(report, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        from detector.evaluation.tensorboard import log_report

        with SummaryWriter(args.tensorboard) as writer:
            log_report(writer, report, args.step)
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    return guarded(lambda: run(args, parser), ERROR_EXIT)
