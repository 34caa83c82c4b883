#!/usr/bin/env python
"""Train and evaluate every (variant, seed) of a study, then write one comparison report.

    python tools/study.py studies/builtin_r18.yaml                # run (or continue) + report
    python tools/study.py studies/builtin_r18.yaml --dry-run      # show the plan only
    python tools/study.py studies/builtin_r18.yaml --report-only  # rebuild the report
    python tools/study.py studies/builtin_r18.yaml --gpus 0,1     # one run per GPU
    python tools/study.py studies/builtin_r18.yaml --parallel 2   # two runs at once (CPU)

Finished runs are skipped, interrupted ones resume, a failed run is reported and the others go
on; re-running the same command retries what failed. The study file format is documented in
detector/study/spec.py. Exit status: 0 when every run finished, 1 when some failed, 2 on a bad
study file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.study import StudyError, StudyRunner, load_study, write_report  # noqa: E402


def _gpus(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text == "auto":
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    return [g.strip() for g in text.split(",") if g.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("study", help="study YAML file")
    p.add_argument("--parallel", type=int, help="runs at once (overrides the study file)")
    p.add_argument("--gpus", help="comma-separated GPU ids, or 'auto': one run per GPU")
    p.add_argument("--only", nargs="+", metavar="VARIANT", help="run only these variants")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--report-only", action="store_true", help="only (re)build the report")
    p.add_argument("--no-report", action="store_true", help="run, but write no report")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard HParams logs")
    p.add_argument(
        "--allow-changed",
        action="store_true",
        help="continue runs whose settings differ from when they were started",
    )
    args = p.parse_args(argv)

    try:
        spec = load_study(args.study)
        gpus = _gpus(args.gpus)
        if args.parallel is not None and args.parallel < 1:
            raise StudyError("--parallel must be >= 1")
        if args.only:
            unknown = [v for v in args.only if v not in spec.variants]
            if unknown:
                raise StudyError(
                    f"--only: unknown variants {unknown}; the study has {list(spec.variants)}"
                )
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    runner = StudyRunner(
        spec, parallel=args.parallel, gpus=gpus, allow_changed=args.allow_changed, only=args.only
    )
    if args.dry_run:
        where = f"GPUs {runner.gpus}" if runner.gpus else "CPU/default device"
        print(f"study {spec.name!r} -> {spec.output}  ({runner.parallel} at once, {where})")
        for run, state in runner.plan():
            action = {"finished": "skip", "trained": "eval only", "interrupted": "resume"}.get(
                state, "train"
            )
            print(f"  {run.key:<28} {state:<12} {action:<10} {run.run_dir}")
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
            return 130
        failed = [o for o in outcomes if o.status == "failed"]
        n_skip = sum(o.status == "skipped" for o in outcomes)
        n_ok = sum(o.status == "ok" for o in outcomes)
        print(f"[study] {n_ok} ran, {n_skip} skipped (finished earlier), {len(failed)} failed")
        for o in failed:
            print(f"[study]   {o.run.key}: {o.message}  (log: {Path(o.run.run_dir) / 'study.log'})")
    if not args.no_report:
        write_report(spec, tensorboard=not args.no_tensorboard)
        print(f"[study] report: {Path(spec.output) / 'report.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
