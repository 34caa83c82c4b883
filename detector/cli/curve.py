"""``smalldet curve``: learning curves of training runs, AP at every kept checkpoint.

    smalldet curve RUN_DIR [RUN_DIR ...] [--metric AP --metric AP_small ...] [--label NAME ...]
                   [--json FILE] [--plot PNG] [--device cpu]

Every checkpoint of each run (``model_<iter>.pth`` still kept, ``model_final.pth``) is scored on
the run's own val set with the run's ``config.yaml`` (its eval bins and max_dets), unless the
trainer already evaluated that iteration (``metrics.jsonl``) or an earlier call cached it
(``RUN_DIR/curve/``): rerunning is instant, and running it while a run trains keeps the points
of checkpoints that ``keep_last`` prunes later (:mod:`detector.study.curves`). Prints one
Markdown table per metric (rows: iterations, columns: runs; AP in %).

Exit codes: 0 printed (a checkpoint that cannot be scored is a ``warning:`` line and a "–"
cell); 2 a missing run directory, one without checkpoints, a --metric no run has, a --label
count that does not match, or any other SmalldetError or unreadable/unwritable path; argparse
usage errors are 2 as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.cli.main import UsageError, guarded
from detector.utils.files import atomic_write_json
from detector.utils.suggest import suggest

ERROR_EXIT = 2


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="AP vs iteration of training runs, from their checkpoints."
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run directories")
    p.add_argument(
        "--metric",
        action="append",
        default=None,
        help="summary key to show (repeatable; default AP, AP50 and the smallest bin's AP)",
    )
    p.add_argument(
        "--label", action="append", default=None, help="name of each run (one per RUN_DIR)"
    )
    p.add_argument("--json", help="write every point to this JSON file")
    p.add_argument("--plot", help="write a PNG of the curves (one line per run)")
    p.add_argument("--device", help="score on this device instead of the runs' (cpu, cuda:0)")
    return p


def short_labels(paths: list[str]) -> list[str]:
    """The fewest trailing path parts that tell the runs apart (``fpn_iou/seed0``)."""
    parts = [Path(p).resolve().parts for p in paths]
    for k in range(1, max(len(x) for x in parts) + 1):
        labels = ["/".join(x[-k:]) for x in parts]
        if len(set(labels)) == len(labels):
            return labels
    return list(paths)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def tables(curves: dict[str, list[dict]], metrics: list[str]) -> str:
    """One Markdown table per metric: a row per iteration, a column per run."""
    labels = list(curves)
    by_run = {
        k: {p["iteration"]: p for p in pts if p["iteration"] is not None}
        for k, pts in curves.items()
    }
    iterations = sorted({it for pts in by_run.values() for it in pts})
    out = []
    for m in metrics:
        out += [f"## {m} (%)", "", "| iteration | " + " | ".join(labels) + " |"]
        out.append("|---:|" + "---:|" * len(labels))
        for it in iterations:
            cells = [_pct(by_run[k][it].get(m)) if it in by_run[k] else "–" for k in labels]
            out.append(f"| {it} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def run(args: argparse.Namespace) -> int:
    from detector.study.curves import check_run_dir, default_metrics, learning_curve

    if args.label and len(args.label) != len(args.runs):
        raise UsageError(f"--label given {len(args.label)} times for {len(args.runs)} run dirs")
    labels = args.label or short_labels(args.runs)
    if len(set(labels)) != len(labels):
        raise UsageError(f"--label names must differ: {labels}")
    for d in args.runs:  # every directory checked before any scoring
        check_run_dir(d)
    curves = {
        lab: learning_curve(d, metrics=None, device=args.device)
        for lab, d in zip(labels, args.runs)
    }
    points = [p for pts in curves.values() for p in pts]
    meta = ("iteration", "source", "checkpoint", "error")
    known = list(dict.fromkeys(k for p in points for k in p if k not in meta))
    metrics = args.metric or default_metrics(points)
    for m in metrics:
        if m not in known:
            raise UsageError(f"--metric {m}: no run has it{suggest(m, known, 'metrics')}")
    for lab, pts in curves.items():
        for p in pts:
            if p["source"] == "error":
                print(f"warning: {lab}: iteration {p['iteration']}: {p['error']}", file=sys.stderr)
    print(tables(curves, metrics), end="")
    if args.json:
        data = {
            "metrics": metrics,
            "runs": [
                {"label": lab, "run_dir": str(d), "points": curves[lab]}
                for lab, d in zip(labels, args.runs)
            ],
        }
        atomic_write_json(data, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from detector.study.plots import learning_curve_figure

        series = {
            m: {
                lab: [(p["iteration"], p.get(m)) for p in pts if p["iteration"] is not None]
                for lab, pts in curves.items()
            }
            for m in metrics
        }
        learning_curve_figure(series, args.plot, "learning curves")
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    return guarded(lambda: run(args), ERROR_EXIT)
