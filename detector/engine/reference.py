"""A finished run's reference record: the figures a document quotes, with what produced them.

The README's demo table is quoted from one run of ``configs/demo.yaml``. It drifted once, when
the code changed after it was measured, because nothing tied the two together. The record
(``docs/demo_reference.json``) holds the size table, the config's fingerprint, the thread count
and the first logged losses, so a test can fail on drift: the README block must equal
:func:`markdown_table` of the record, the config must still hash to the recorded fingerprint,
and the first iterations of the config must still log the recorded losses (a code change that
alters training shows up there long before the end of a run).

Those losses are compared at two depths, because float rounding differs between CPUs (another
vector width or kernel sums in another order) and training from scratch amplifies it: the loss of
iteration 1 (the untrained model on the first batch: model, init, data and losses) moves by
4e-4 relative between this machine's AVX2 kernels and ATen's scalar ones, the mean of
iterations 1-10 (which adds the optimizer and the schedule) by 4e-3, and a CI machine with
another CPU logged 3.5e-3. :data:`FIRST_TOL` and :data:`MEAN_TOL` sit five to seven times above
those shifts; tests/test_demo_reference.py lists what they still catch.

    python docs/update_demo_reference.py runs/demo --seconds 540

writes the record from a finished demo run (and logs the first iterations once more, one by
one) and rewrites the README block between :data:`BEGIN` and :data:`END`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from detector.utils.bins import fmt_px
from detector.utils.dotted import diff_dotted, flatten
from detector.utils.errors import SmalldetError
from detector.utils.files import atomic_write_json, atomic_write_text, read_json, read_jsonl

FORMAT = "smalldet-reference-1"
BEGIN = (
    "<!-- demo-table: written by docs/update_demo_reference.py from docs/demo_reference.json -->"
)
END = "<!-- /demo-table -->"
# where a run was written and where its data is cached do not change a number
VOLATILE = ("output_dir", "data.builtin.cache_dir")
# filled in by the trainer from the data when the config leaves them unset
FILLED = ("model.num_classes",)
LOSS_KEY = "loss/total"
# the first iterations whose losses the record keeps one by one
FIRST_ITERS = 10
# relative tolerances of the drift check (module docstring: measured shifts between CPUs x ~5)
FIRST_TOL = 3e-3
MEAN_TOL = 2e-2


class ReferenceError(SmalldetError):
    """A run that cannot serve as a reference, or a reference file that is not one."""


def config_fingerprint(cfg: dict) -> str:
    """sha256 (16 hex digits) of a resolved config, without the keys that change no number."""
    flat = {k: v for k, v in flatten(dict(cfg)).items() if k not in VOLATILE and k not in FILLED}
    blob = json.dumps(flat, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_reference(run_dir: str | Path, config_path: str | Path, seconds: float) -> dict:
    """The record of a finished run of ``config_path`` that took ``seconds`` in all."""
    from detector.config import load_config
    from detector.data.loader import split_paths
    from detector.evaluation import evaluate
    from detector.evaluation.capacity import eval_settings

    run_dir = Path(run_dir)
    cfg = load_config(config_path)
    ran = yaml.safe_load((run_dir / "config.yaml").read_text())
    differ = [key for key, _, _ in diff_dotted(cfg.to_dict(), ran, ignore=VOLATILE + FILLED)]
    if differ:
        raise ReferenceError(
            f"{run_dir}/config.yaml: not a run of {config_path} as it is now "
            f"(differs in {', '.join(differ[:5])}); train it again without overrides"
        )
    if not (run_dir / "metrics.jsonl").is_file():
        raise ReferenceError(f"{run_dir}/metrics.jsonl: missing; is {run_dir} a training run?")
    rows = read_jsonl(run_dir / "metrics.jsonl")
    finals = [r for r in rows if r.get("type") == "final"]
    if not finals or finals[-1]["iteration"] != cfg.solver.max_iter:
        raise ReferenceError(f"{run_dir}: not finished (no final row at {cfg.solver.max_iter})")
    starts = [r for r in rows if r.get("type") == "start"]
    if len(starts) != 1:
        raise ReferenceError(
            f"{run_dir}/metrics.jsonl: {len(starts)} 'start' rows; a reference must be one "
            "uninterrupted run (resumed runs may have changed thread count)"
        )
    train = [r for r in rows if r.get("type") == "train"]
    evals = [r for r in rows if r.get("type") == "eval"]
    results = read_json(run_dir / "results_val.json")
    _, gt_path = split_paths(cfg, "val", generate=False)
    report = evaluate(str(gt_path), results, **eval_settings(cfg))
    ar_md = report.max_dets[-1]
    table = []
    for b in report.bins:
        m = report.per_bin[b.name]
        row = {"bin": b.name, "lo_px": fmt_px(b.lo), "hi_px": fmt_px(b.hi)}
        row["gt"] = int(m["gt_count"])
        if m["status"] != "no objects":
            row.update({k: m[k] for k in ("AP", "AP50", "AP75")})
            row["AR"] = m["AR"][str(ar_md)]
        table.append(row)
    return {
        "format": FORMAT,
        "config": str(config_path),
        "config_fingerprint": config_fingerprint(cfg.to_dict()),
        "threads": starts[0]["threads"],
        "cpus": starts[0]["cpus"],
        "torch": starts[0]["torch"],
        "device": starts[0]["device"],
        "iterations": int(cfg.solver.max_iter),
        "seconds": float(seconds),
        "evaluations": len(evals),
        "val_images": evals[-1]["num_unique_images"],  # the final evaluation's own count
        "s_per_iter": statistics.median(r["compute_time"] + r["data_time"] for r in train),
        "losses": [{"iteration": r["iteration"], LOSS_KEY: r[LOSS_KEY]} for r in train[:2]],
        "ar_max_dets": ar_md,
        "table": table,
    }


def first_losses(
    config_path: str | Path,
    threads: int,
    cache_dir: str | Path | None = None,
    iterations: int = FIRST_ITERS,
) -> list[float]:
    """The loss of each of the first ``iterations`` iterations of ``config_path``, as the real
    train command logs them at ``threads`` threads (``log.period=1``; the trainer's SIGKILL test
    hook stops it, so the schedule is the full run's). ``cache_dir`` overrides where the
    built-in data is generated."""
    with tempfile.TemporaryDirectory(prefix="smalldet-first-losses-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "detector.cli.main", "train", "--config", str(config_path)]
        cmd += ["--output", str(out), "--threads", str(threads)]
        cmd += ["log.period=1", "log.progress=false", "log.tensorboard=false"]
        if cache_dir is not None:
            cmd.append(f"data.builtin.cache_dir={cache_dir}")
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "SMALLDET_KILL_AT_ITER": str(iterations)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != -signal.SIGKILL:
            raise ReferenceError(
                f"{config_path}: the first {iterations} iterations did not run (exit code "
                f"{proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        rows = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("type") == "train"]
    losses = [float(r[LOSS_KEY]) for r in rows]
    if [r["iteration"] for r in rows] != list(range(1, iterations + 1)):
        raise ReferenceError(f"{config_path}: logged iterations {[r['iteration'] for r in rows]}")
    return losses


def add_first_losses(ref: dict, losses: list[float]) -> dict:
    """``ref`` with the per-iteration losses of its config's first iterations, after checking
    that they are the run's own: their mean is the run's first logged window (the same code,
    machine and thread count give the same bits)."""
    first = ref["losses"][0]
    if first["iteration"] != len(losses):
        raise ReferenceError(
            f"the run logs every {first['iteration']} iterations, the record needs the first "
            f"{len(losses)}: set log.period={len(losses)} in {ref['config']}"
        )
    mean = sum(losses) / len(losses)
    if abs(mean - first[LOSS_KEY]) > 1e-9 * abs(first[LOSS_KEY]):
        raise ReferenceError(
            f"the first {len(losses)} iterations logged a mean loss of {mean:.7f} here, the run "
            f"{first[LOSS_KEY]:.7f}: record on the machine and thread count that ran the demo"
        )
    return {**ref, "first_losses": losses}


def drift(ref: dict, losses: list[float]) -> list[str]:
    """What in ``losses`` (from :func:`first_losses`) departs from the record, as sentences;
    empty when the code still trains as it did."""
    if "first_losses" not in ref:
        raise ReferenceError(
            f"the record of {ref.get('config')} has no 'first_losses' (an older record): "
            "rerun docs/update_demo_reference.py on the demo run"
        )
    want = ref["first_losses"]
    out = []
    if abs(losses[0] - want[0]) > FIRST_TOL * abs(want[0]):
        out.append(
            f"loss of iteration 1: {losses[0]:.6f}, recorded {want[0]:.6f} (the model, its "
            f"init, the data or the losses changed; tolerance {FIRST_TOL:g} relative)"
        )
    got_mean, want_mean = sum(losses) / len(losses), sum(want) / len(want)
    if abs(got_mean - want_mean) > MEAN_TOL * abs(want_mean):
        out.append(
            f"mean loss of iterations 1-{len(losses)}: {got_mean:.6f}, recorded "
            f"{want_mean:.6f} (the training changed; tolerance {MEAN_TOL:g} relative)"
        )
    return out


def read_reference(path: str | Path) -> dict:
    ref = read_json(path)
    if not isinstance(ref, dict) or ref.get("format") != FORMAT:
        raise ReferenceError(
            f"{path}: not a {FORMAT} file (write it with docs/update_demo_reference.py)"
        )
    return ref


def _pct(v: float | None) -> str:
    return "" if v is None or v < 0 else f"{100 * v:.1f}"


def markdown_table(ref: dict) -> str:
    """The size table of a record, as the README shows it."""
    head = ["bin", "GT", "AP", "AP50", "AP75", f"AR@{ref['ar_max_dets']}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ref["table"]:
        name = r["bin"] if r["bin"] == "all" else f"{r['bin']} ({r['lo_px']}-{r['hi_px']} px)"
        if "AP" not in r:
            lines.append(f"| {name} | 0 | no objects | | | |")
            continue
        vals = [_pct(r[k]) for k in ("AP", "AP50", "AP75", "AR")]
        lines.append("| " + " | ".join([name, str(r["gt"]), *vals]) + " |")
    return "\n".join(lines)


def duration_text(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


def readme_block(ref: dict) -> str:
    """What sits between :data:`BEGIN` and :data:`END` in the README."""
    return "\n".join(
        [
            BEGIN,
            f"Measured from an empty cache on this project's {ref['cpus']}-core CPU machine "
            f"(no GPU, {ref['threads']} torch threads, torch {ref['torch']}): "
            f"**{duration_text(ref['seconds'])}** in all (dataset generation, "
            f"{ref['iterations']} iterations at {ref['s_per_iter']:.2f} s each, "
            f"{ref['evaluations']} evaluations of the {ref['val_images']} val images).",
            "",
            markdown_table(ref),
            END,
        ]
    )


def replace_block(text: str, block: str, where: str = "README.md") -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ReferenceError(f"{where}: no {BEGIN!r} ... {END!r} block to replace")
    return text[:start] + block + text[end + len(END) :]


def write_reference(ref: dict, path: str | Path, readme: str | Path | None = None) -> None:
    atomic_write_json(ref, path)
    if readme is not None:
        text = Path(readme).read_text()
        atomic_write_text(replace_block(text, readme_block(ref), str(readme)), readme)


__all__ = [
    "BEGIN",
    "END",
    "ReferenceError",
    "add_first_losses",
    "config_fingerprint",
    "drift",
    "first_losses",
    "make_reference",
    "markdown_table",
    "read_reference",
    "readme_block",
    "replace_block",
    "write_reference",
]
