"""``smalldet compare``: compare runs per size bin with paired image-level bootstrap 95% CIs
(``tools/compare.py`` is the same command).

    smalldet compare --gt GT.json A.json B.json [...] [--bins aitod] [--n 1000] [--json OUT]

The first results file is the baseline; every other run gets its delta against it, starred
when the 95% CI of the delta excludes 0. A metric of a size bin without ground-truth objects
reads "no objects" (as in ``smalldet evaluate``) in the table; in the JSON its values are
null and each run's entry has ``"status": "no objects"``.

Exit codes: 0 compared; 2 bad input: unreadable or inconsistent GT/results, a bad flag value
(``--bins``, ``--max-dets``, ``--metrics``, ``--names``), any SmalldetError or a path that
cannot be read or written; argparse usage errors are 2 as well.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detector.cli.evaluate import check_scoring_flags
from detector.cli.main import UsageError, guarded
from detector.utils.files import atomic_write_json

ERROR_EXIT = 2


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
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
    from detector.evaluation.bootstrap import CI_METHODS, DEFAULT_CI, DEFAULT_DELTA_CI

    p.add_argument(
        "--ci",
        choices=CI_METHODS,
        help=f"interval method for values and deltas (default: {DEFAULT_CI} for each run's "
        f"value, {DEFAULT_DELTA_CI} for the deltas, the best-covering ones in "
        "docs/bootstrap_coverage.md)",
    )
    p.add_argument(
        "--categories",
        help="comma-separated category names or ids to score alone (pycocotools' catIds)",
    )
    p.add_argument("--json", help="write values, CIs and deltas to this JSON file")
    return p


def _empty(out: dict, i: int) -> bool:
    """Metric ``i`` has no value for any run: its bin holds no ground-truth object (the GT is
    shared, so one run's value is NaN exactly when every run's is)."""
    return all(v != v for v in out["values"][:, i])


def compare_markdown(out: dict, names: list[str]) -> str:
    """The comparison table: value [CI] per run, then delta [CI] against the first run."""

    def f(v):
        return "–" if v != v else f"{v * 100:.1f}"

    head = ["metric", *names, *[f"{n} − {names[0]} [95% CI]" for n in names[1:]]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, key in enumerate(out["keys"]):
        if _empty(out, i):
            cells = ["no objects", *[""] * (2 * len(names) - 2)]
            lines.append("| " + " | ".join([key, *cells]) + " |")
            continue
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
        f"{out['method']} CIs of the values, {out['delta_method']} CIs of the deltas; "
        "* = the 95% CI of the delta excludes 0."
    )
    return "\n".join(lines) + "\n"


def compare_json(out: dict, names: list[str], runs: list[str]) -> dict:
    """Values, CIs and deltas by metric and run name; NaN (an empty bin) becomes null."""
    res = {
        "runs": dict(zip(names, runs)),
        "n": out["n"],
        "seed": out["seed"],
        "ci": {"values": out["method"], "deltas": out["delta_method"]},
        "metrics": {},
    }
    for i, key in enumerate(out["keys"]):
        status = {"status": "no objects"} if _empty(out, i) else {}
        res["metrics"][key] = {
            n: {
                **status,
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
    return res


def _nan_none(v):
    v = float(v)
    return None if v != v else v


def metric_keys(text: str | None, bins: str, max_dets: str) -> list[str]:
    """``--metrics`` (or the default keys), each checked against the bins and maxDets."""
    from detector.evaluation.api import parse_max_dets, resolve_bins
    from detector.evaluation.bootstrap import parse_metric_key

    names = [b.name for b in resolve_bins(bins)]
    if not text:
        return ["AP", "AP50", "AP75", *[f"AP_{name}" for name in names[1:]]]
    keys = [k.strip() for k in text.split(",") if k.strip()]
    for key in keys:
        try:
            parse_metric_key(key, names, parse_max_dets(max_dets))
        except ValueError as err:
            raise UsageError(f"--metrics: {err}") from None
    return keys


def run(args: argparse.Namespace) -> int:
    from detector.evaluation import bootstrap_runs
    from detector.evaluation.coco_io import keep_categories, select_categories

    names = args.names.split(",") if args.names else [Path(r).stem for r in args.runs]
    if len(names) != len(args.runs):
        raise UsageError(f"--names gives {len(names)} names for {len(args.runs)} runs")
    check_scoring_flags(args.bins, args.max_dets)
    keys = metric_keys(args.metrics, args.bins, args.max_dets)
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
        **({"method": args.ci, "delta_method": args.ci} if args.ci else {}),
    )
    print(compare_markdown(out, names))
    if args.json:
        atomic_write_json(compare_json(out, names, args.runs), args.json)
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    return guarded(lambda: run(args), ERROR_EXIT)
