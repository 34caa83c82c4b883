"""``smalldet predict``: a trained model on images, into one COCO results file
(``tools/predict.py`` is the same command).

    smalldet predict --checkpoint RUN/model_final.pth --output OUT IMAGE_OR_DIR_OR_GLOB ...
                     [--config CFG] [--opts KEY=VALUE ...] [--device cpu|cuda] [--batch-size N]
                     [--draw [--draw-score 0.3] [--bins coco]] [--ann TRAIN.json]
                     [--slice 512 [--overlap 0.2] [--slice-scale S] [--full-image]
                      [--merge nms|nmm] [--match-metric iou|ios] [--match-threshold 0.5]
                      [--class-agnostic] [--edge-margin PX]]

Writes ``OUT/results.json`` (images, categories and detections; ``smalldet evaluate --gt GT.json
--results OUT/results.json`` scores it, matching images by file name) and, with ``--draw``, the
drawn images under ``OUT/images/``. The config is the run's ``config.yaml`` beside the
checkpoint unless ``--config`` names another. The pipeline is ``detector.engine.predict``,
slicing ``detector.engine.slicing``; see docs/predict.md.

Exit codes: 0 every image predicted; 1 some images could not be read (each is named on stderr
and in the file's ``failed`` list; the others are predicted and written); 2 bad input: a
missing checkpoint or config, an input that names no image, a bad flag value, a config error
(any SmalldetError) or a path that cannot be written; argparse usage errors are 2 as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.cli.main import UsageError, check_bins, guarded

ERROR_EXIT = 2
SOME_FAILED = 1

# flag -> SliceSpec field, for the flags that only mean something with --slice
_SLICE_FLAGS = {
    "overlap": "--overlap",
    "slice_scale": "--slice-scale",
    "full_image": "--full-image",
    "merge": "--merge",
    "match_metric": "--match-metric",
    "match_threshold": "--match-threshold",
    "class_agnostic": "--class-agnostic",
    "edge_margin": "--edge-margin",
}


def add_slicing_arguments(p: argparse.ArgumentParser) -> None:
    """The sliced-inference flags, shared by predict and evaluate (defaults in SliceSpec)."""
    g = p.add_argument_group("sliced inference (SAHI-style)")
    g.add_argument("--slice", type=int, metavar="PX", help="tile side in pixels, e.g. 512")
    g.add_argument("--overlap", type=float, help="fraction of a tile shared with its neighbour")
    g.add_argument("--slice-scale", type=float, help="resize each tile by this factor (1)")
    g.add_argument(
        "--full-image", action="store_true", default=None, help="one more whole-image pass"
    )
    g.add_argument("--merge", choices=["nms", "nmm"], help="nms (default) or greedy nmm")
    g.add_argument("--match-metric", choices=["iou", "ios"], help="iou (default) or ios")
    g.add_argument("--match-threshold", type=float, help="overlap that merges two boxes (0.5)")
    g.add_argument(
        "--class-agnostic", action="store_true", default=None, help="merge across classes"
    )
    g.add_argument(
        "--edge-margin",
        type=float,
        metavar="PX",
        help="boxes this close to an internal tile border count as cut (2; negative: off)",
    )


def slice_spec(args: argparse.Namespace, tile_batch: int | None = None):
    """The :class:`~detector.engine.slicing.SliceSpec` the flags ask for, or None without
    ``--slice``; a slicing flag without ``--slice`` is a :class:`UsageError`."""
    given = {k: getattr(args, k) for k in _SLICE_FLAGS if getattr(args, k, None) is not None}
    if args.slice is None:
        if given:
            flags = ", ".join(_SLICE_FLAGS[k] for k in given)
            raise UsageError(f"{flags} only apply to sliced inference. Fix: add --slice PX")
        return None
    from detector.engine.slicing import SliceSpec

    names = {
        "overlap": "overlap",
        "slice_scale": "scale",
        "full_image": "full_image",
        "merge": "merge",
        "match_metric": "metric",
        "match_threshold": "threshold",
        "class_agnostic": "class_agnostic",
        "edge_margin": "edge_margin",
    }
    kwargs = {names[k]: v for k, v in given.items()}
    if tile_batch is not None:
        kwargs["batch_size"] = tile_batch
    return SliceSpec(size=args.slice, **kwargs)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Predict images (whole or in tiles) with a trained checkpoint into one "
        "COCO results file.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images, folders or globs")
    p.add_argument("--checkpoint", required=True, help="model_final.pth (or any checkpoint)")
    p.add_argument("--output", required=True, help="folder for results.json (and images/)")
    p.add_argument("--config", help="config (default: config.yaml beside the checkpoint)")
    p.add_argument(
        "--opts",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="config override (repeat)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's device)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="images per forward pass (1); with --slice, tiles per forward pass (8)",
    )
    p.add_argument("--workers", type=int, help="image-reading processes (data.num_workers)")
    p.add_argument("--ann", help="COCO file with the training categories (default: the run's)")
    p.add_argument("--draw", action="store_true", help="write drawn images to OUTPUT/images/")
    p.add_argument("--draw-score", type=float, default=0.3, help="lowest score drawn (0.3)")
    p.add_argument("--bins", help="size bins that colour the boxes (default: eval.bins)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_slicing_arguments(p)
    return p


def checkpoint_config(checkpoint: str, config: str | None) -> Path:
    """``--config``, else the run's ``config.yaml`` beside the checkpoint."""
    from detector.config.loader import ConfigError

    if config:
        return Path(config)
    beside = Path(checkpoint).parent / "config.yaml"
    if not beside.is_file():
        raise ConfigError(
            f"no config.yaml beside the checkpoint {checkpoint} (looked for {beside}). Fix: "
            "pass --config with the config the model was trained with"
        )
    return beside


def run(args: argparse.Namespace) -> int:
    from detector.config import load_config
    from detector.engine.checkpoint import CheckpointError

    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: give at least 1")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers {args.workers}: give 0 or more")
    spec = slice_spec(args, tile_batch=args.batch_size)
    if args.bins:
        check_bins(args.bins)
    if not Path(args.checkpoint).is_file():  # before reading the config or any image
        raise CheckpointError(
            f"checkpoint not found: {args.checkpoint}. Fix: point at the model_final.pth of a run"
        )
    config = checkpoint_config(args.checkpoint, args.config)
    overrides = list(args.opts or []) + ([f"device={args.device}"] if args.device else [])
    cfg = load_config(config, overrides)

    from detector.engine.predict import predict_folder  # lazy: needs torch and the model

    summary = predict_folder(
        cfg,
        args.checkpoint,
        args.inputs,
        args.output,
        slicing=spec,
        batch_size=1 if spec is not None else (args.batch_size or 1),
        draw=args.draw,
        draw_score=args.draw_score,
        bins=args.bins,
        workers=args.workers,
        ann=args.ann,
        progress=not args.no_progress,
        config_path=str(config),
    )
    print(
        f"predicted {summary.images} images ({summary.detections} detections) in "
        f"{summary.seconds:.1f} s ({summary.images_per_s:.2f} img/s) -> {summary.results}"
        + (f"; drawn under {summary.drawn}" if summary.drawn else "")
    )
    if summary.failed:
        names = ", ".join(f["file_name"] for f in summary.failed[:5])
        more = f" and {len(summary.failed) - 5} more" if len(summary.failed) > 5 else ""
        print(
            f"error: {len(summary.failed)} images could not be read and were skipped: "
            f"{names}{more} (listed under 'failed' in {summary.results})",
            file=sys.stderr,
        )
        return SOME_FAILED
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    return guarded(lambda: run(args), ERROR_EXIT)
