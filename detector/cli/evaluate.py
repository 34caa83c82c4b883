"""``smalldet evaluate``: size-stratified COCO evaluation of a results file, or of a checkpoint
(``tools/evaluate.py`` is the same command).

    smalldet evaluate --gt GT.json --results DT.json [--preset NAME] [--bins PRESET|EDGES]
                      [--max-dets LIST] [--iou-thrs LIST] [--json OUT] [--plots DIR]
                      [--backend fast|pycocotools] [--tensorboard DIR]
    smalldet evaluate --config CFG --checkpoint CKPT [--data IMAGES --ann ANN] [--json OUT]
                      [--slice PX [--overlap F] [--slice-scale S] [--full-image] [--merge ...]]

``--results`` may be the ``results.json`` of ``smalldet predict``: its images are matched to the
GT's by ``file_name`` (or by the bare file name where that is unique). ``--slice`` and its flags
(as in ``smalldet predict``, docs/predict.md) run the checkpoint on tiles instead of whole images.

Scoring settings: ``--bins``/``--max-dets``/``--iou-thrs`` given on the command line win; the rest
come from ``--preset`` (with ``--checkpoint`` it becomes ``eval.preset``, which also raises the
model's test-time caps), else from the config's ``eval.*`` keys with ``--checkpoint``, else
COCO's defaults (docs/evaluation.md).

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
from detector.cli.predict import add_slicing_arguments, slice_spec
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
        "--results-out",
        help="where to write the detections (default: next to --json, else next to the "
        "checkpoint as <checkpoint>_results_<val|data folder>.json; never the current folder)",
    )
    mdl.add_argument("--opts", nargs="*", default=None, help="config overrides KEY=VALUE")
    add_slicing_arguments(p)
    p.add_argument(
        "--preset",
        help="scoring preset: bins, maxDets and IoU thresholds at once (coco, aitod, tinyperson, "
        "soda, dense); the flags below override it",
    )
    p.add_argument(
        "--bins",
        default=None,
        help="bins preset (coco, aitod, soda, tinyperson) or edges like 0,8,16,32,96,inf "
        "(default: the preset's or coco)",
    )
    p.add_argument(
        "--max-dets",
        default=None,
        help="comma-separated maxDets, e.g. 1,10,100,300,1000 (default: the preset's or 1,10,100)",
    )
    p.add_argument(
        "--iou-thrs",
        default=None,
        help="comma-separated IoU thresholds (default: the preset's or COCO .50:.05:.95)",
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


def check_scoring_flags(bins: str | None, max_dets: str | None, preset: str | None = None) -> None:
    """Reject a bad ``--bins``/``--max-dets``/``--preset`` before any work, naming the flag.

    ``detector.evaluation`` raises a plain ValueError for them (it is a library); here they are
    user input, so they become a :class:`UsageError`. A flag not given (None) is not checked.
    """
    from detector.evaluation.api import parse_max_dets, resolve_bins
    from detector.utils.bins import get_eval_preset

    for flag, check, value in (
        ("--preset", get_eval_preset, preset),
        ("--bins", resolve_bins, bins),
        ("--max-dets", parse_max_dets, max_dets),
    ):
        if value is None:
            continue
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


def _is_json_object(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(512).lstrip()[:1] == b"{"
    except (OSError, TypeError):
        return False


def results_by_file_name(gt, results):
    """A ``smalldet predict`` results file (a dict with ``images`` and ``annotations``) as a
    list of detections with the GT's image ids, matched by ``file_name``, else by the bare file
    name where that is unique in the GT. Anything else is returned as given (the evaluator
    explains what is wrong with it). Images of one side missing on the other are warned about.
    """
    from pathlib import PurePosixPath

    from detector.evaluation.coco_io import EvalInputError
    from detector.utils.files import read_json

    if not isinstance(results, str | Path) or not _is_json_object(results):
        return results
    doc = read_json(results, "results file", error=EvalInputError)
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    if not (isinstance(doc.get("images"), list) and isinstance(anns, list)):
        return results
    if not all(isinstance(a, dict) and "score" in a for a in anns) or not (anns or "failed" in doc):
        return results  # a ground truth given as results: the evaluator says so
    gt_doc = read_json(gt, "ground-truth file", error=EvalInputError) if gt else {}
    gt_images = [im for im in gt_doc.get("images") or [] if isinstance(im, dict)]
    exact = {str(im.get("file_name")): im.get("id") for im in gt_images}
    by_base: dict[str, list] = {}
    for name, iid in exact.items():
        by_base.setdefault(PurePosixPath(name).name, []).append(iid)
    ids = {}
    for im in doc["images"]:
        name = str(im.get("file_name"))
        base = by_base.get(PurePosixPath(name).name, [])
        if name in exact or len(base) == 1:
            ids[im.get("id")] = exact[name] if name in exact else base[0]
    if not ids:
        first = doc["images"][0].get("file_name") if doc["images"] else None
        raise EvalInputError(
            f"results {results}: none of its {len(doc['images'])} images has a file_name of the "
            f"ground truth {gt} (first: {first!r} vs {next(iter(exact), None)!r}). Fix: predict "
            "the images of the folder that the GT's file_name fields are relative to"
        )
    if len(ids) < len(doc["images"]):
        print(
            f"warning: {len(doc['images']) - len(ids)} predicted images are not in {gt}; "
            "their detections are left out",
            file=sys.stderr,
        )
    if len(set(ids.values())) < len(gt_images):
        print(
            f"warning: {len(gt_images) - len(set(ids.values()))} images of {gt} were not "
            "predicted; their objects count as missed",
            file=sys.stderr,
        )
    keys = ("category_id", "bbox", "score")
    return [
        {"image_id": ids[a["image_id"]], **{k: a[k] for k in keys if k in a}}
        for a in doc["annotations"]
        if isinstance(a, dict) and a.get("image_id") in ids
    ]


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
    results, gt_path = run_inference(
        cfg, args.checkpoint, images=args.data, ann=args.ann, slicing=getattr(args, "slicing", None)
    )
    return results, gt_path, du.is_main_process()


def default_results_out(args: argparse.Namespace) -> str:
    """Where ``--checkpoint``'s detections go unless ``--results-out`` says: next to ``--json``,
    else next to the checkpoint, named after it and the images (not the current folder)."""
    if args.json:
        return str(Path(args.json).with_suffix("")) + "_results.json"
    ckpt = Path(args.checkpoint)
    images = (Path(args.data).resolve().name or "data") if args.data else "val"
    return str(ckpt.with_name(f"{ckpt.stem}_results_{images}.json"))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from detector.evaluation import evaluate
    from detector.evaluation.coco_io import restrict_categories

    if (args.config or args.checkpoint) and not (args.config and args.checkpoint):
        parser.error("--config and --checkpoint go together")
    if not args.checkpoint and not (args.gt and args.results):
        parser.error("give --gt and --results, or --config and --checkpoint")
    check_scoring_flags(args.bins, args.max_dets, args.preset)
    iou = parse_iou_thrs(args.iou_thrs)
    args.slicing = slice_spec(args)
    if args.slicing is not None and not args.checkpoint:
        raise UsageError("--slice runs a model: give --config and --checkpoint with it")
    gt, results = args.gt, args.results
    if not args.checkpoint:
        results = results_by_file_name(gt, results)
    scoring = {"bins": args.bins, "max_dets": args.max_dets, "iou_thrs": iou}
    settings: dict = {"preset": args.preset}
    if args.checkpoint:
        if args.preset:  # the preset raises the model's caps too, so it goes in as eval.preset
            args.opts = [*(args.opts or []), f"eval.preset={args.preset}"]
        results, gt_path, is_main = run_model(args)
        if not is_main:
            return 0  # under torchrun only rank 0 writes and scores
        from detector.evaluation.capacity import eval_settings

        settings = eval_settings(load_cfg(args.config, args.opts))
        settings.pop("backend")  # --backend has its own default
        for key in scoring:  # a flag given wins over the config's eval.* key
            from_config = settings.pop(key)
            scoring[key] = from_config if scoring[key] is None else scoring[key]
        gt = gt or gt_path
        out = args.results_out or default_results_out(args)
        atomic_write_json(results, out)
        print(f"wrote {len(results)} detections to {out}", file=sys.stderr)
    if args.categories:
        gt, results = restrict_categories(gt, results, args.categories.split(","))
    report = evaluate(
        gt,
        results,
        **scoring,
        backend=args.backend,
        errors=not args.no_errors,
        **settings,
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
