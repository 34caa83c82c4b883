"""``smalldet study``: train and evaluate every (variant, seed) of a study, then write one
comparison report (``tools/study.py`` is the same command).

    smalldet study studies/builtin_r18.yaml                # run (or continue) + report
    smalldet study studies/builtin_r18.yaml --dry-run      # show the plan only
    smalldet study studies/builtin_r18.yaml --report-only  # rebuild the report
    smalldet study studies/builtin_r18.yaml --gpus 0,1     # one run per GPU
    smalldet study studies/builtin_r18.yaml --parallel 2   # two runs at once (CPU)
    smalldet study studies/builtin_r18.yaml --seeds 1 2    # only some of its seeds

Finished runs are skipped, interrupted ones resume, a failed run is reported and the others go
on; re-running the same command retries what failed. The study file format is documented in
detector/study/spec.py.

Exit codes: 0 every run finished; 1 some runs failed; 2 a bad study file or flag (any
SmalldetError, or a path that cannot be read or written); 130 interrupted (the running trainings
saved a checkpoint; the same command resumes them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detector.cli.main import INTERRUPTED, UsageError, guarded

ERROR_EXIT = 2
FAILED_EXIT = 1


def _gpus(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text == "auto":
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    return [g.strip() for g in text.split(",") if g.strip()]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", help="study YAML file")
    p.add_argument("--parallel", type=int, help="runs at once (overrides the study file)")
    p.add_argument("--gpus", help="comma-separated GPU ids, or 'auto': one run per GPU")
    p.add_argument("--only", nargs="+", metavar="VARIANT", help="run only these variants")
    p.add_argument(
        "--seeds", nargs="+", type=int, metavar="SEED", help="run only these of the study's seeds"
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--report-only", action="store_true", help="only (re)build the report")
    p.add_argument("--no-report", action="store_true", help="run, but write no report")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard HParams logs")
    p.add_argument(
        "--allow-changed",
        action="store_true",
        help="continue runs whose settings differ from when they were started",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from detector.study import StudyRunner, load_study, write_report

    spec = load_study(args.study)
    gpus = _gpus(args.gpus)
    if args.parallel is not None and args.parallel < 1:
        raise UsageError("--parallel must be >= 1")
    if args.only:
        unknown = [v for v in args.only if v not in spec.variants]
        if unknown:
            raise UsageError(
                f"--only: unknown variants {unknown}; the study has {list(spec.variants)}"
            )

    if args.seeds:
        known = sorted({r.seed for r in spec.runs()})
        unknown = [s for s in args.seeds if s not in known]
        if unknown:
            raise UsageError(f"--seeds: unknown seeds {unknown}; the study has {known}")

    runner = StudyRunner(
        spec,
        parallel=args.parallel,
        gpus=gpus,
        allow_changed=args.allow_changed,
        only=args.only,
        seeds=args.seeds,
    )
    if args.dry_run:
        where = f"GPUs {runner.gpus}" if runner.gpus else "CPU/default device"
        print(f"study {spec.name!r} -> {spec.output}  ({runner.parallel} at once, {where})")
        for item, state in runner.plan():
            action = {"finished": "skip", "trained": "eval only", "interrupted": "resume"}.get(
                state, "train"
            )
            print(f"  {item.key:<28} {state:<12} {action:<10} {item.run_dir}")
        return 0

    failed = []
    if not args.report_only:
        try:
            outcomes = runner.run_all()
        except KeyboardInterrupt:
            print(
                "\n[study] interrupted: the running trainings were stopped (they save a checkpoint "
                "on SIGTERM/SIGINT); run the same command again to resume them",
                file=sys.stderr,
            )
            return INTERRUPTED
        failed = [o for o in outcomes if o.status == "failed"]
        n_skip = sum(o.status == "skipped" for o in outcomes)
        n_ok = sum(o.status == "ok" for o in outcomes)
        print(f"[study] {n_ok} ran, {n_skip} skipped (finished earlier), {len(failed)} failed")
        for o in failed:
            print(f"[study]   {o.run.key}: {o.message}  (log: {Path(o.run.run_dir) / 'study.log'})")
    if not args.no_report:
        write_report(spec, tensorboard=not args.no_tensorboard)
        print(f"[study] report: {Path(spec.output) / 'report.md'}")
    return FAILED_EXIT if failed else 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    return guarded(lambda: run(args), ERROR_EXIT)
