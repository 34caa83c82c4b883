"""Run every (variant, seed) of a study: skip what is done, resume what was cut, isolate failures.

Each run is two child processes, so that a crash (or an out-of-memory kill) in one run cannot
take the study down, and so that each child can be given its own GPU:

1. **train** - skipped when ``model_final.pth`` exists; given ``--resume`` when the run
   directory holds a checkpoint (``last_checkpoint`` or ``model_NNNNNNN.pth``) but no final
   model, i.e. an interrupted run continues where it stopped.
2. **eval** - skipped when ``study_eval.json`` exists; writes ``results_val.json`` and
   ``study_eval.json`` (see :mod:`detector.study.worker`).

A run is *finished* when both files exist; re-running the study skips it. A run whose child
exits non-zero (or runs past ``timeout``) is marked failed in ``study_status.json`` with the
tail of its log (``study.log``, one per run, appended to on every attempt); the other runs go
on, and the next invocation of the study tries the failed run again (resuming it if it left a
checkpoint).

Each run directory also records the settings it was made with (``study_run.json``: config
file, overrides and a hash of the resolved config). If the study file changes a run's settings
after the run was started, that run is reported as failed ("settings changed") instead of being
silently mixed with runs of the new settings; delete its directory (or pass
``allow_changed=True`` / ``--allow-changed``) to go on.

A run directory being worked on holds ``.study.lock`` (``pid@host``), so two study processes
started on the same study do not train the same run twice; a lock left by a dead process on the
same host is taken over. A finished run whose recorded settings differ from the study file's is
still skipped, with a warning (in the console and the report).

Scheduling: ``parallel`` runs at once, in a pool of threads that each wait on one child. With
``gpus`` each slot owns one GPU and its children see only it (``CUDA_VISIBLE_DEVICES``); on CPU
the cores are split between the slots (``OMP_NUM_THREADS``) unless that is already set.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from detector.utils.dotted import diff_dotted, flatten
from detector.utils.files import atomic_write_json
from detector.utils.files import read_json_or as read_json
from detector.utils.lock import take_lock

from .layout import (
    EVAL_FILE,
    FINAL_MODEL,
    LOCK_FILE,
    LOG_FILE,
    RESULTS_FILE,
    SETTINGS_FILE,
    STATUS_FILE,
)
from .spec import Run, StudySpec

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_TAIL_LINES = 40


# ------------------------------------------------------------------------------------ state


def run_state(run_dir: Path) -> str:
    """``finished`` | ``trained`` (needs eval) | ``interrupted`` (resume) | ``new``."""
    run_dir = Path(run_dir)
    if (run_dir / FINAL_MODEL).is_file():
        return "finished" if (run_dir / EVAL_FILE).is_file() else "trained"
    # any file of the trainer's (a checkpoint, or only config.yaml/metrics.jsonl of a run that
    # failed before its first checkpoint): the trainer refuses such a directory without
    # --resume, and resumes it from the last checkpoint or starts it over cleanly
    from detector.engine.rundir import run_files

    return "interrupted" if run_files(run_dir) else "new"


def settings_of(run: Run) -> dict:
    """What a run was made with, and a hash of its resolved config (output_dir left out)."""
    from detector.config import load_config

    cfg = load_config(run.config, run.overrides).to_dict()
    cfg.pop("output_dir", None)
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return {
        "variant": run.variant,
        "seed": run.seed,
        "config": str(run.config),
        "overrides": list(run.overrides),
        "config_hash": hashlib.sha256(blob).hexdigest()[:16],
        "resolved": cfg,
    }


def _changed_keys(a: dict, b: dict) -> list[str]:
    """The settings that differ between a run's recorded config ``a`` and today's ``b``.

    A key that ``a`` lacks and ``b`` holds at its default is not a change: it is a key a newer
    version of the code added (``eval.preset``, ``data.tiles``), and its default keeps the old
    behaviour, so a half-done run made before it may still be resumed or evaluated.
    """
    from detector.config.defaults import DEFAULTS

    flat_a, defaults = flatten(a), flatten(DEFAULTS)
    return [
        f"{k}: {va!r} -> {vb!r}"
        for k, va, vb in diff_dotted(a, b)
        if not (k not in flat_a and k in defaults and vb == defaults[k])
    ]


def settings_changed(run: Run) -> list[str]:
    """How the run's current settings differ from those it was made with ([] = same/unknown)."""
    old = read_json(Path(run.run_dir) / SETTINGS_FILE)
    if not old or "config_hash" not in old:
        return []
    try:
        new = settings_of(run)
    except Exception as err:  # noqa: BLE001
        return [f"config no longer loads: {err}"]
    if new["config_hash"] == old["config_hash"]:
        return []
    return _changed_keys(old.get("resolved", {}), new["resolved"])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, since: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --------------------------------------------------------------------------------- commands


def default_train_command() -> list[str]:
    return [
        "{python}",
        "-m",
        "detector.study.worker",
        "train",
        "--config",
        "{config}",
        "--output",
        "{run_dir}",
        "{resume}",
        "{overrides}",
    ]


def default_eval_command() -> list[str]:
    return [
        "{python}",
        "-m",
        "detector.study.worker",
        "eval",
        "--config",
        "{config}",
        "--output",
        "{run_dir}",
        "{overrides}",
    ]


def build_command(template: list[str], run: Run, resume: bool) -> list[str]:
    values = {
        "python": sys.executable,
        "config": str(run.config),
        "run_dir": str(run.run_dir),
        "seed": str(run.seed),
        "variant": run.variant,
    }
    out: list[str] = []
    for item in template:
        if item == "{overrides}":
            out += run.overrides
        elif item == "{resume}":
            out += ["--resume"] if resume else []
        else:
            out.append(item.replace("{resume}", "--resume" if resume else "").format(**values))
    return out


# ----------------------------------------------------------------------------------- runner


@dataclass
class RunOutcome:
    run: Run
    state_before: str
    status: str  # skipped | ok | failed
    message: str = ""
    log_tail: str = ""
    seconds: float = 0.0
    phases: list[str] = field(default_factory=list)


class StudyRunner:
    """Executes the runs of a :class:`StudySpec`; see the module docstring."""

    def __init__(
        self,
        spec: StudySpec,
        parallel: int | None = None,
        gpus: list[str] | None = None,
        allow_changed: bool = False,
        only: list[str] | None = None,
        echo: Callable[[str], None] | None = print,
        seeds: list[int] | None = None,
    ):
        self.spec = spec
        self.gpus = [str(g) for g in (spec.gpus if gpus is None else gpus)]
        self.parallel = parallel or spec.parallel
        if self.gpus:
            self.parallel = min(self.parallel, len(self.gpus)) if parallel else len(self.gpus)
        self.allow_changed = allow_changed
        self.only = set(only or [])
        self.seeds = set(seeds or [])
        self.echo = echo or (lambda s: None)
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- one run ---------------------------------------------------------------------------

    def _env(self, gpu: str | None) -> dict:
        env = dict(os.environ)
        # the child must import this checkout's detector package whatever the cwd is
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        elif self.parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.parallel))
        return env

    def _phase(self, cmd: list[str], log, env: dict) -> tuple[int, str]:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        if self._stop.is_set():
            return -1, "study interrupted"
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        with self._lock:
            self._procs.add(proc)
        try:
            rc = proc.wait(timeout=self.spec.timeout or None)
            msg = "" if rc == 0 else f"exit code {rc}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc, msg = -9, f"timed out after {self.spec.timeout:g} s"
        finally:
            with self._lock:
                self._procs.discard(proc)
        if self._stop.is_set() and rc != 0:
            msg = "study interrupted"
        return rc, msg

    def execute(self, run: Run, gpu: str | None = None) -> RunOutcome:
        run_dir = Path(run.run_dir)
        state = run_state(run_dir)
        if state == "finished":
            diff = settings_changed(run)
            if diff:
                msg = "finished earlier with other settings: " + "; ".join(diff[:8])
                self.echo(f"[study] WARNING {run.key}: {msg} (delete {run_dir} to redo it)")
                return RunOutcome(run, state, "skipped", msg)
            return RunOutcome(run, state, "skipped", "finished earlier")
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = run_dir / LOCK_FILE
        if not take_lock(lock):
            holder = lock.read_text(errors="replace").strip() if lock.exists() else "?"
            msg = f"another study process is running it ({holder}); left alone"
            self.echo(f"[study] {run.key}: {msg}")
            return RunOutcome(run, state, "failed", msg)
        try:
            return self._execute(run, gpu, state)
        finally:
            lock.unlink(missing_ok=True)

    def _execute(self, run: Run, gpu: str | None, state: str) -> RunOutcome:
        run_dir = Path(run.run_dir)
        status_path = run_dir / STATUS_FILE
        t0 = time.time()
        log_path = run_dir / LOG_FILE
        start = log_path.stat().st_size if log_path.exists() else 0

        def fail(msg: str, phases: list[str]) -> RunOutcome:
            tail = log_tail(log_path, since=start)
            prev = read_json(status_path, {}) or {}
            atomic_write_json(
                {
                    "status": "failed",
                    "message": msg,
                    "phase": phases[-1] if phases else "setup",
                    "attempts": int(prev.get("attempts", 0)) + 1,
                    "log_tail": tail,
                    "time": time.time(),
                },
                status_path,
            )
            self.echo(f"[study] FAILED {run.key}: {msg}")
            return RunOutcome(run, state, "failed", msg, tail, time.time() - t0, phases)

        # the settings the run is made with must not change under a half-done run
        try:
            settings = settings_of(run)
        except Exception as err:  # noqa: BLE001 - a bad config fails this run only
            return fail(f"config error: {err}", [])
        settings_path = run_dir / SETTINGS_FILE
        old = read_json(settings_path)
        diff = []
        if old and old.get("config_hash") != settings["config_hash"] and state != "new":
            diff = _changed_keys(old.get("resolved", {}), settings["resolved"])
        if diff:
            if not self.allow_changed:
                return fail(
                    "settings changed since this run was started ("
                    + "; ".join(diff[:8])
                    + f"); delete {run_dir} to redo it, or pass --allow-changed",
                    [],
                )
            self.echo(f"[study] {run.key}: settings changed, going on as asked: {diff[:8]}")
        atomic_write_json(settings, settings_path)

        env = self._env(gpu)
        phases: list[str] = []
        where = f" on GPU {gpu}" if gpu is not None else ""
        with open(log_path, "a") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {run.key} ({state}){where}\n")
            if state in ("new", "interrupted"):
                resume = state == "interrupted"
                self.echo(f"[study] {'resume' if resume else 'train '} {run.key}{where}")
                phases.append("train")
                cmd = build_command(self.spec.command or default_train_command(), run, resume)
                rc, msg = self._phase(cmd, log, env)
                if rc != 0:
                    return fail(f"training failed: {msg}", phases)
                if not (run_dir / FINAL_MODEL).is_file():
                    return fail(f"training exited 0 but wrote no {FINAL_MODEL}", phases)
            self.echo(f"[study] eval   {run.key}{where}")
            phases.append("eval")
            cmd = build_command(self.spec.eval_command or default_eval_command(), run, False)
            rc, msg = self._phase(cmd, log, env)
            if rc != 0:
                return fail(f"evaluation failed: {msg}", phases)
            if not (run_dir / EVAL_FILE).is_file():
                return fail(f"evaluation exited 0 but wrote no {EVAL_FILE}", phases)
            if not (run_dir / RESULTS_FILE).is_file():
                self.echo(f"[study] {run.key}: no {RESULTS_FILE}, so no bootstrap CI for it")
        secs = time.time() - t0
        atomic_write_json({"status": "ok", "seconds": secs, "time": time.time()}, status_path)
        self.echo(f"[study] done   {run.key} in {secs:.0f} s")
        return RunOutcome(run, state, "ok", "", "", secs, phases)

    # -- the pool --------------------------------------------------------------------------

    def selected_runs(self) -> list[Run]:
        return [
            r
            for r in self.spec.runs()
            if (not self.only or r.variant in self.only)
            and (not self.seeds or r.seed in self.seeds)
        ]

    def plan(self) -> list[tuple[Run, str]]:
        return [(r, run_state(r.run_dir)) for r in self.selected_runs()]

    def run_all(self) -> list[RunOutcome]:
        runs = self.selected_runs()
        todo: queue.Queue = queue.Queue()
        for i, r in enumerate(runs):
            todo.put((i, r))
        outcomes: list[RunOutcome | None] = [None] * len(runs)
        slots = [self.gpus[i] if self.gpus else None for i in range(self.parallel)]

        done = [threading.Event() for _ in slots]

        def worker(gpu: str | None, finished: threading.Event) -> None:
            try:
                while not self._stop.is_set():
                    try:
                        i, r = todo.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        outcomes[i] = self.execute(r, gpu)
                    except Exception as err:  # noqa: BLE001 - the study goes on
                        outcomes[i] = RunOutcome(r, "?", "failed", f"runner error: {err!r}")
            finally:
                finished.set()

        threads = [
            threading.Thread(target=worker, args=(g, e), daemon=True) for g, e in zip(slots, done)
        ]
        for t in threads:
            t.start()
        # Wait on events, not Thread.join: a KeyboardInterrupt inside join() can leave the
        # thread looking finished (CPython < 3.12), and the process would exit under it.
        try:
            while not all(e.is_set() for e in done):
                time.sleep(0.2)
        except KeyboardInterrupt:
            self._stop.set()
            with self._lock:
                procs = list(self._procs)
            for p in procs:
                p.terminate()
            deadline = time.time() + 60
            while not all(e.is_set() for e in done) and time.time() < deadline:
                time.sleep(0.2)
            raise
        return [
            o if o is not None else RunOutcome(r, "?", "failed", "not run")
            for o, r in zip(outcomes, runs)
        ]


def run_study(spec: StudySpec, **kwargs) -> list[RunOutcome]:
    """Run (or skip, or resume) every run of ``spec``; returns one outcome per run."""
    return StudyRunner(spec, **kwargs).run_all()
