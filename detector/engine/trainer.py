"""The training loop: ``train(cfg, output_dir, resume=False, overwrite=False) -> final metrics``.

Batching. ``solver.ims_per_batch`` is the number of images per iteration (optimizer step)
across all ranks. Each rank runs ``solver.accumulate`` micro-batches of
``ims_per_batch // (world_size * accumulate)`` images per iteration; the product must divide
exactly, or the run refuses to start.

Stopping. ``solver.max_iter`` iterations, or, when ``solver.max_epochs > 0``,
``ceil(max_epochs * batches_per_epoch / accumulate)`` iterations.

The run directory (:mod:`detector.engine.rundir`). One run per directory: training into a
directory holding another run's files is refused unless ``resume`` (continue it) or
``overwrite`` (its files are moved aside into ``<dir>/.overwritten-<time>/``). Rank 0 holds
``<dir>/.train.lock`` for the whole run, so a second training there is refused; stale temp
files of a killed write are removed at the start. An unwritable or full disk is a
:class:`RunDirError` / :class:`CheckpointError` naming the path and the fix.

Faults.

- Checkpoints (``model_<iter>.pth``) are written atomically by rank 0 every
  ``checkpoint.period`` iterations and at the end; the last ``checkpoint.keep_last`` are kept.
  ``model_final.pth`` (written *before* the final evaluation, so a bad val image cannot cost
  the trained model) and ``model_best.pth`` (chosen by ``checkpoint.best_metric``) are model
  files carrying the config fingerprint (:func:`detector.engine.checkpoint.model_file`).
- ``resume=True`` continues from the checkpoint ``last_checkpoint`` names (from scratch if
  there is none and the run did not finish), restoring model, optimizer, scheduler, AMP
  scaler, iteration, data position and every RNG state. With ``deterministic: true`` on CPU
  the result is bit-identical to an uninterrupted run. Changed settings either take effect
  (lr and schedule are rebuilt from the new values; ``config.yaml`` and a ``resume`` row in
  ``metrics.jsonl`` record them) or are refused (:func:`detector.engine.rundir.resume_changes`).
- Every loss component is checked before the backward pass; a non-finite one raises
  :class:`NonFiniteLossError` naming the iteration and the component. Nothing is saved from that
  state: the last good checkpoint stays as it was.
- A failing evaluation raises :class:`EvaluationFailed` naming the val images of the batch
  and how to rerun it.
- ``resume=True`` on a finished run (its checkpoint is at ``max_iter`` and ``metrics.jsonl``
  has its ``final`` row) says so and returns that row's metrics: nothing is trained,
  evaluated or written, not even ``config.yaml`` or an event file. A higher
  ``solver.max_iter`` trains on.
- SIGINT/SIGTERM finish the current iteration, write a checkpoint and raise
  :class:`TrainingInterrupted` (``tools/train.py`` then exits with 128 + the signal number: 130
  for SIGINT, 143 for SIGTERM). Under torchrun the stop is agreed across ranks.

What a run tells its user. At the start: where it writes, the threads it uses and the
TensorBoard command; after the first iterations an ETA from their speed (again after the first
evaluation, which it then includes). Every evaluation writes its detections into the run
directory (``results_val_<iter>.json``; the final one ``results_val.json``), and the end of
the run prints the size table and ``smalldet evaluate`` / ``smalldet compare`` commands on
those files and the real ground-truth path, each runnable as printed (also without an active
venv: :func:`detector.engine.rundir.shown_command`).

Threads. The torch intra-op thread count is set, not left to chance: ``threads`` (``smalldet
train --threads``), else ``$OMP_NUM_THREADS``, else the CPUs this process may run on (divided
among the ranks of this host). It is fixed for the run and never derived from the load:
results differ slightly between thread counts, and a run must reproduce. Data-loader workers
are separate processes with one torch thread each (torch's default for workers). The previous
count is restored when the run ends.

Test hooks: the environment variable ``SMALLDET_KILL_AT_ITER=k`` makes the process SIGKILL itself
right after iteration ``k`` (after that iteration's checkpoint, if any), to test resumption;
``SMALLDET_DUMP_RANK_WEIGHTS=DIR`` makes every rank save the weights it holds at the end as
``DIR/rank<r>.pth``, to check that DDP replicas agree.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from detector.config.loader import ConfigError, save_config
from detector.utils.bins import get_bins
from detector.utils.errors import SmalldetError
from detector.utils.files import atomic_write_json
from detector.utils.lock import release_lock
from detector.utils.numbers import is_number

from . import distributed as du
from .checkpoint import (
    FORMAT,
    LAST_POINTER,
    CheckpointError,
    CheckpointManager,
    atomic_save,
    check_fingerprint,
    config_fingerprint,
    load_checkpoint,
    model_file,
    model_signature,
    resolved_dilations,
    write_error,
)
from .inference import predict_dataset
from .optim import build_optimizer, build_scheduler
from .rundir import (
    RESULTS_RE,
    RunDirError,
    claim_run_dir,
    describe_os_error,
    final_row,
    format_changes,
    is_disk_error,
    refuse_resume,
    results_file,
    resume_changes,
    shown_command,
    shown_path,
)
from .tb import RunLogger

__all__ = [
    "EvaluationFailed",
    "NonFiniteLossError",
    "RunDirError",
    "Trainer",
    "TrainingInterrupted",
    "train",
]


class NonFiniteLossError(RuntimeError):
    """A loss component became NaN or infinite; the run stopped without saving that state."""


class EvaluationFailed(SmalldetError, RuntimeError):
    """An evaluation during or after training failed; the message names the images and the rerun."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was written before stopping."""

    def __init__(self, signum: int, iteration: int, path):
        self.signum, self.iteration, self.path = signum, iteration, path
        name = signal.Signals(signum).name
        super().__init__(f"{name} at iteration {iteration}: checkpoint saved to {path}")


# ------------------------------------------------------------------------------ small helpers


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def choose_threads(requested: int | None = None, world_size: int = 1) -> tuple[int, str]:
    """The torch intra-op thread count of a run and where it came from (see the module doc)."""
    if requested:
        return int(requested), f"--threads {int(requested)}"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), f"OMP_NUM_THREADS={env}; --threads N to change"
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size) or 1)
    if local > 1:
        why = f"{cpus} CPUs / {local} processes on this host; --threads N to change"
        return max(1, cpus // local), why
    return max(1, cpus), f"{cpus} CPUs available; --threads N to change"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: a time a person reads at a glance."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def micro_batch_size(cfg, world_size: int) -> int:
    total, acc = cfg.solver.ims_per_batch, max(1, cfg.solver.accumulate)
    if total <= 0 or total % (world_size * acc):
        raise ConfigError(
            f"solver.ims_per_batch={total} must be divisible by world_size ({world_size}) x "
            f"solver.accumulate ({acc}): each rank runs `accumulate` micro-batches of "
            "ims_per_batch // (world_size * accumulate) images per iteration"
        )
    return total // (world_size * acc)


def _batches_per_epoch(loader) -> int:
    for obj in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None), loader):
        n = getattr(obj, "batches_per_epoch", None)
        if n:
            return int(n)
    return len(loader)


@contextlib.contextmanager
def preserved_rng():
    """Run a block (evaluation, drawing) without disturbing the training RNG streams."""
    state = du.get_rng_state()
    try:
        yield
    finally:
        du.set_rng_state(state)


class _TrackedLoader:
    """A loader that remembers the image ids of the batch in hand, to name it if it fails, and
    advances a progress bar (if given) per batch."""

    def __init__(self, loader, bar=None):
        self.loader = loader
        self.bar = bar
        self.ids: list[int] = []
        self.loading = False

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            self.loading = True
            try:
                images, targets = next(it)
            except StopIteration:
                self.loading = False
                return
            self.loading = False
            self.ids = [int(t["image_id"]) for t in targets]
            yield images, targets
            if self.bar is not None:
                self.bar.update(1)

    def where(self, dataset) -> str:
        if self.loading:
            after = f" after image(s) {self.ids}" if self.ids else ""
            return f"loading a val batch{after}"
        names = []
        for iid in self.ids:
            try:
                names.append(f"{iid} (file '{dataset.image_path(iid)}')")
            except Exception:  # noqa: BLE001 - naming the image is best-effort
                names.append(str(iid))
        return "val image(s) " + ", ".join(names) if names else "the val set"


def _first_line(err: BaseException) -> str:
    """An exception as one line; a DataLoader worker's re-raise keeps its original last line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    if lines[0].startswith("Caught ") and len(lines) > 1:
        return lines[-1]
    return f"{type(err).__name__}: {lines[0]}"


class _SignalCatcher:
    def __init__(self):
        self.signum = 0
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum:  # second signal: stop now
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name} received: finishing this iteration and saving a "
            "checkpoint (send again to stop immediately)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


# ------------------------------------------------------------------------------------ trainer


class Trainer:
    """One training run into ``output_dir``; see the module docstring for the guarantees."""

    def __init__(
        self,
        cfg,
        output_dir=None,
        resume: bool = False,
        overwrite: bool = False,
        threads: int | None = None,
    ):
        self.cfg = copy.deepcopy(cfg)
        self.output_dir = Path(output_dir or cfg.output_dir)
        self.cfg.output_dir = str(self.output_dir)  # config.yaml says where the run is
        self.resume = resume
        self.overwrite = overwrite
        self.requested_threads = threads
        self.lock: Path | None = None
        self.logger: RunLogger | None = None
        self.finished: dict | None = None  # the final row of a run found already finished
        self._threads_before: int | None = None
        self._notes: list[str] = []  # what setup found, printed once the run goes ahead
        self._t_start = time.perf_counter()
        self._eval_times: list[float] = []

    # -------------------------------------------------------------------------------- set-up
    def setup(self) -> None:
        """Every phase a run needs, in order (the order keeps resumed runs bit-exact).

        A resumed run that had already finished stops before the logger: ``self.finished``
        then holds its final row, and nothing in its directory has been written.
        """
        self._setup_runtime()
        self._setup_run_dir()
        self._setup_data()
        self._setup_model()
        rng_to_restore = self._setup_resume()
        self._setup_loader_and_schedule()
        self.finished = self._already_finished()
        if self.finished is not None:
            return
        self._setup_parallel_and_rng(rng_to_restore)
        self._setup_logger()

    def _setup_runtime(self) -> None:
        """Process group, device, determinism and precision flags, batch layout."""
        cfg = self.cfg
        self.rank, self.world, self.device = du.init_distributed(cfg.device)
        self.main = self.rank == 0
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if self.device.type == "cuda" and cfg.solver.tf32 and not cfg.deterministic:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.amp_dtype = None
        if cfg.solver.amp not in ("none", "fp16", "bf16"):
            raise ConfigError(f"solver.amp={cfg.solver.amp!r}: use none, fp16 or bf16")
        if cfg.solver.amp != "none":
            if self.device.type == "cuda":
                self.amp_dtype = torch.float16 if cfg.solver.amp == "fp16" else torch.bfloat16
            elif self.main:
                print(f"note: solver.amp={cfg.solver.amp} is ignored on {self.device} (CUDA only)")
        self.accumulate = max(1, int(cfg.solver.accumulate))
        self.micro = micro_batch_size(cfg, self.world)
        self.threads, self.threads_from = choose_threads(self.requested_threads, self.world)
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def _setup_run_dir(self) -> None:
        """Rank 0 claims the directory (create, lock, clean, refuse or move aside); a refusal
        stops every rank, not only rank 0."""
        refusal = ""
        if self.main:
            try:
                self.lock, _ = claim_run_dir(self.output_dir, self.resume, self.overwrite)
            except RunDirError as err:
                if self.world == 1:
                    raise
                refusal = str(err)
        refusal = du.broadcast_object(refusal)
        if refusal:
            raise RunDirError(refusal)

    def _setup_data(self) -> None:
        """Datasets (rank 0 first: it may generate the built-in set) and the val loader."""
        cfg = self.cfg
        from detector.data import build_dataset, build_test_loader, build_train_loader
        from detector.data.loader import check_same_categories

        self._build_train_loader = build_train_loader
        self.train_ds = self.val_ds = None
        needs_val = cfg.eval.period > 0 or cfg.eval.final
        for turn in range(2):
            if (turn == 0) == self.main:
                # val first: a broken val file fails before every train image has been opened
                self.val_ds = build_dataset(cfg, "val") if needs_val else None
                self.train_ds = build_dataset(cfg, "train")
                if self.val_ds is not None:
                    check_same_categories(self.train_ds, self.val_ds)
            du.barrier()
        self.num_classes = cfg.model.num_classes or self.train_ds.num_classes
        cfg.model.num_classes = int(self.num_classes)
        self.val_loader = (
            build_test_loader(cfg, self.val_ds, rank=self.rank, world_size=self.world)
            if self.val_ds is not None
            else None
        )

    def _setup_model(self) -> None:
        """Model (identical seeded weights on every rank), optimizer, scaler, checkpoints."""
        cfg = self.cfg
        du.seed_all(cfg.seed)
        from detector.models import build_detector, convert_sync_batchnorm

        model = build_detector(cfg, num_classes=self.num_classes).to(self.device)
        if self.world > 1:
            model = convert_sync_batchnorm(model, cfg.model.backbone.norm)
        if cfg.solver.channels_last and self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = build_optimizer(cfg, model)
        # the hyper-parameters of this config, before a resume loads the saved ones
        self._fresh_groups = [
            {k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups
        ]
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )
        self.ckpt = CheckpointManager(self.output_dir, cfg.checkpoint.keep_last)
        self.fingerprint = config_fingerprint(cfg, self.num_classes)

    def _setup_resume(self):
        """Load the checkpoint to resume from (all but the RNG, restored once the data
        iterator exists); returns this rank's RNG state, or None."""
        cfg = self.cfg
        self.start_iter = 0
        self.best = {"metric": cfg.checkpoint.best_metric, "value": None, "iteration": None}
        self._sched_state = None
        self.resumed_changes: list[tuple] = []
        self._schedule_changed = False
        if not self.resume:
            return None
        path = self.ckpt.latest()
        if path is None:
            final = self.output_dir / "model_final.pth"
            if final.exists():
                raise RunDirError(
                    f"--resume: {self.output_dir} holds a finished run ({final.name}) but no "
                    "checkpoint to continue from. Fix: train into a new --output, or pass "
                    "--overwrite (instead of --resume) to set that run aside and start again"
                )
            if self.main:
                print(f"--resume: no checkpoint in {self.output_dir}; starting from scratch")
            return None
        state = self._load_resume_state(path)
        check_fingerprint(state, cfg, self.num_classes, path)
        refused, schedule, other = resume_changes(state.get("config") or {}, cfg.to_dict())
        if refused:
            raise refuse_resume(self.output_dir, path, refused)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_iter = int(state["iteration"])
        self.best = state.get("best", self.best)
        self._sched_state = state.get("scheduler")
        self._schedule_changed = bool(schedule)
        self.resumed_changes = schedule + other
        rng = None
        rngs = state.get("rng") or []
        if len(rngs) == self.world:
            rng = rngs[self.rank]
        elif self.main:
            print(
                f"note: checkpoint has RNG states of {len(rngs)} ranks, run has "
                f"{self.world}; RNG streams restart from the seed"
            )
        self._notes.append(f"resumed from {path} at iteration {self.start_iter}")
        if self.resumed_changes:
            self._notes.append(
                f"resuming with changed settings, in effect from iteration {self.start_iter}"
                f" (recorded in config.yaml): {format_changes(self.resumed_changes)}"
            )
        return rng

    def _load_resume_state(self, path: Path) -> dict:
        """The checkpoint at ``path``; an unusable one is named with the way back."""
        pointer = self.output_dir / LAST_POINTER
        what = f"{pointer.name} names {path.name}" if pointer.exists() else f"newest {path.name}"
        try:
            state = load_checkpoint(path)
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not a smalldet training checkpoint")
        except CheckpointError as err:
            prev = self.ckpt.previous(path)
            fix = (
                f"to continue from the previous checkpoint {prev.name}, delete {path.name} "
                f"and {pointer.name} in {self.output_dir}"
                if prev
                else "no older checkpoint remains: train into a new --output (or --overwrite)"
            )
            raise CheckpointError(
                f"cannot --resume {self.output_dir}: {what}, which cannot be used ({err}). "
                f"Fix: {fix}"
            ) from None
        return state

    def _setup_loader_and_schedule(self) -> None:
        """Training loader at the resumed data position, run length, LR schedule."""
        cfg = self.cfg
        self.train_loader = self._build_train_loader(
            cfg,
            self.train_ds,
            batch_size=self.micro,
            rank=self.rank,
            world_size=self.world,
            start_batch=self.start_iter * self.accumulate,
        )
        self.batches_per_epoch = _batches_per_epoch(self.train_loader)
        if cfg.solver.max_epochs > 0:
            self.max_iter = math.ceil(
                cfg.solver.max_epochs * self.batches_per_epoch / self.accumulate
            )
        else:
            self.max_iter = int(cfg.solver.max_iter)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.max_iter)
        if not self._sched_state:
            return
        self.scheduler.load_state_dict(self._sched_state)
        if self._schedule_changed:
            self._apply_new_schedule()
        else:
            # LambdaLR's constructor reset the groups' lr to factor(0): put back the saved lr
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = lr

    def _apply_new_schedule(self) -> None:
        """Resumed with a new lr, momentum, weight decay or schedule: the saved optimizer state
        would restore the old values, so the groups take this config's hyper-parameters and
        the lr from here on is ``new lr * new factor(iteration)``."""
        sched = self.scheduler
        for group, fresh in zip(self.optimizer.param_groups, self._fresh_groups):
            group.update({k: v for k, v in fresh.items() if k not in ("lr", "initial_lr")})
            group["initial_lr"] = fresh["lr"]
        sched.base_lrs = [fresh["lr"] for fresh in self._fresh_groups]
        lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        sched._last_lr = lrs

    def _setup_parallel_and_rng(self, rng_to_restore) -> None:
        """DDP wrapper; the data iterator (it draws from the global RNG), then the RNG."""
        if self.world > 1:
            ddp_kw = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, **ddp_kw)
        self.data_iter = iter(self.train_loader)
        if rng_to_restore is not None:
            du.set_rng_state(rng_to_restore)
        else:
            du.seed_all(self.cfg.seed + 1000 * self.rank + self.start_iter)

    def _setup_logger(self) -> None:
        """``config.yaml`` (what runs from now on), metrics.jsonl and TensorBoard."""
        cfg = self.cfg
        if self.main:
            path = self.output_dir / "config.yaml"
            try:
                save_config(cfg, path)
            except OSError as err:
                raise RunDirError(describe_os_error(err, path, "cannot write")) from None
        self.logger = RunLogger(
            self.output_dir,
            enabled=self.main,
            tensorboard=cfg.log.tensorboard,
            # on resume, rows and events written after the checkpoint are dropped (all of
            # them when there was no checkpoint to resume from)
            purge_step=self.start_iter if self.resume else None,
        )
        self.logger.layout(
            [b.name for b in get_bins(cfg.eval.bins)],
            list(cfg.eval.max_dets),
            iou_thrs=cfg.eval.get("iou_thrs") or None,
        )
        # what the numbers depend on beyond the config: losses differ slightly between thread
        # counts, so a figure quoted from this run (docs/demo_reference.json) names its count
        self.logger.record(
            "start",
            self.start_iter,
            {
                "threads": self.threads,
                "world_size": self.world,
                "device": str(self.device),
                "torch": torch.__version__,
                "cpus": os.cpu_count(),
            },
        )
        if self.resumed_changes:
            changed = {k: [a, b] for k, a, b in self.resumed_changes}
            self.logger.record("resume", self.start_iter, {"changed": changed})

    def close(self) -> None:
        """Close the logs and release the run lock (also after an error)."""
        if self.logger is not None:
            self.logger.close()
        if self.lock is not None:
            release_lock(self.lock)
            self.lock = None
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    # ---------------------------------------------------------------------------- checkpoints
    def state_dict(self, iteration: int) -> dict:
        rngs = du.all_gather_object(du.get_rng_state())
        return {
            "format": FORMAT,
            "version": 1,
            "iteration": int(iteration),
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rngs,
            "data": {"start_batch": int(iteration * self.accumulate)},
            "best": dict(self.best),
            "config": self.cfg.to_dict(),
            "fingerprint": self.fingerprint,
            "signature": {**model_signature(self.cfg), "num_classes": int(self.num_classes)},
            "world_size": self.world,
        }

    def save_checkpoint(self, iteration: int):
        state = self.state_dict(iteration)  # collective (RNG gather): every rank calls it
        path = None
        if self.main:
            bad = [
                n for n, p in unwrap(self.model).named_parameters() if not torch.isfinite(p).all()
            ]
            if bad:
                raise NonFiniteLossError(
                    f"iteration {iteration}: parameters became non-finite ({', '.join(bad[:3])}); "
                    f"checkpoint not written, the last good one is {self.ckpt.latest_or_none()}"
                )
            path = self.ckpt.save(state, iteration)
        du.barrier()
        return path

    def _save_model(self, name: str, iteration: int) -> Path:
        """``model_final.pth`` / ``model_best.pth``: the weights with the config fingerprint."""
        path = self.output_dir / name
        obj = model_file(unwrap(self.model).state_dict(), self.cfg, self.num_classes, iteration)
        try:
            atomic_save(obj, path)
        except OSError as err:
            raise write_error(err, path, self.ckpt.latest_or_none()) from None
        return path

    # ------------------------------------------------------------------------------ evaluate
    def evaluate(self, iteration: int, final: bool = False) -> dict:
        """Evaluate on the val set (all ranks infer, rank 0 writes the detections into the run
        directory and scores them); a failure raises :class:`EvaluationFailed` naming the val
        images of the batch that broke."""
        if self.val_ds is None:
            return {}
        from detector.evaluation import evaluate
        from detector.evaluation.capacity import eval_settings

        cfg = self.cfg
        t0 = time.perf_counter()
        bar = tqdm(
            total=len(self.val_loader) + 1,
            desc=f"eval @{iteration}: inference",
            unit="step",
            leave=False,
            dynamic_ncols=True,
            disable=not (self.main and cfg.log.progress),
        )
        loader = _TrackedLoader(self.val_loader, bar)
        stage = "inference"
        try:
            with preserved_rng():
                results, ids = predict_dataset(
                    unwrap(self.model),
                    loader,
                    self.val_ds,
                    self.device,
                    self.amp_dtype,
                    with_ids=True,
                )
                summary: dict = {}
                if self.main:
                    path = results_file(self.output_dir, iteration, final)
                    try:
                        atomic_write_json(results, path, indent=None)
                    except OSError as err:
                        raise RunDirError(describe_os_error(err, path, "cannot write")) from None
                    bar.set_description_str(f"eval @{iteration}: scoring")
                    stage = f"scoring the results against {self.val_ds.ann_file}"
                    # eval.* (preset applied at load) and the model caps, as `smalldet evaluate`
                    report = evaluate(str(self.val_ds.ann_file), results, **eval_settings(cfg))
                    summary = {k: float(v) for k, v in report.summary.items() if is_number(v)}
                    self.last_report = report
                    self.logger.eval_report(report, iteration)
                    self.logger.record(
                        "eval",
                        iteration,
                        {
                            **summary,
                            "num_images": len(ids),
                            "num_unique_images": len(set(ids)),
                            "num_results": len(results),
                            "eval_time": time.perf_counter() - t0,
                        },
                    )
                    stage = "drawing val images for TensorBoard"
                    bar.set_description_str(f"eval @{iteration}: TensorBoard images")
                    self._draw(iteration, results)
                    stage = ""
                    self._update_best(summary, iteration)
                    self.logger.flush()
                    bar.update(1)
                    self._eval_times.append(time.perf_counter() - t0)
        except (CheckpointError, RunDirError):
            raise  # writing model_best.pth or the detections: already explained
        except Exception as err:
            where = loader.where(self.val_ds) if stage == "inference" else stage
            raise EvaluationFailed(
                f"evaluation at iteration {iteration} failed on {where}: {_first_line(err)}"
            ) from err
        finally:
            bar.close()
        return du.broadcast_object(summary)

    def _draw(self, iteration: int, results: list[dict]) -> None:
        """The first ``eval.vis_images`` val images with their ground truth and the detections
        just scored (drawn from ``results``: no second forward pass per image)."""
        n = min(int(self.cfg.eval.vis_images), len(self.val_ds))
        if n <= 0 or self.logger.writer is None:
            return
        from .visualize import draw_gt_and_predictions

        by_image: dict[int, list[dict]] = {}
        for r in results:
            by_image.setdefault(int(r["image_id"]), []).append(r)
        to_label = self.val_ds.cat_id_to_label
        for i in range(n):
            image, target = self.val_ds[i]
            (h, w), (oh, ow) = target["size"], target.get("orig_size", target["size"])
            dets = by_image.get(int(target["image_id"]), [])
            # COCO xywh in the original image -> xyxy in the frame of the drawn image
            xywh = torch.tensor([d["bbox"] for d in dets], dtype=torch.float32).reshape(-1, 4)
            boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
            boxes *= torch.tensor([w / ow, h / oh, w / ow, h / oh], dtype=torch.float32)
            img = draw_gt_and_predictions(
                image,
                target["boxes"],
                boxes,
                torch.tensor([float(d["score"]) for d in dets]),
                bins=self.cfg.eval.bins,
                area_scale=(oh / h) * (ow / w),
                gt_labels=target["labels"],
                pred_labels=torch.tensor([to_label[d["category_id"]] for d in dets]),
                class_names=self.val_ds.class_names,
            )
            self.logger.image(f"val_images/{i}", img, iteration)

    def _update_best(self, summary: dict, iteration: int) -> None:
        metric = self.cfg.checkpoint.best_metric
        if not metric:
            return
        if metric not in summary:
            print(f"warning: checkpoint.best_metric={metric!r} not in eval keys {sorted(summary)}")
            return
        value = summary[metric]
        if self.best.get("value") is None or value > self.best["value"]:
            self.best = {"metric": metric, "value": value, "iteration": iteration}
            self._save_model("model_best.pth", iteration)

    # ---------------------------------------------------------------------------------- loop
    def run(self) -> dict:
        """Set up, train, finish; the lock is released and the logs closed whatever happens."""
        try:
            self.setup()
            if self.finished is not None:
                return self._report_finished()
            self._print_start()
            return self._run()
        except OSError as err:
            where = Path(os.path.abspath(err.filename or self.output_dir))
            root = Path(os.path.abspath(self.output_dir))
            ours = where == root or root in where.parents
            if not (is_disk_error(err) and ours):
                raise
            raise RunDirError(describe_os_error(err, where, "cannot write")) from None
        finally:
            self.close()

    # ----------------------------------------------------------------- what the run prints
    def _already_finished(self) -> dict | None:
        """The final row of this run when ``--resume`` finds it finished at ``max_iter``
        (model_final.pth written, final evaluation done), else None."""
        if not self.resume or self.start_iter < self.max_iter:
            return None
        row: dict = {}
        if self.main:
            row = final_row(self.output_dir)
            done = (self.output_dir / "model_final.pth").is_file()
            if row.get("iteration") != self.start_iter or not done:
                row = {}
        row = du.broadcast_object(row)
        return row or None

    def _report_finished(self) -> dict:
        """``--resume`` on a finished run: say so, show what it holds, write nothing."""
        row = dict(self.finished or {})
        it = int(row.get("iteration", self.start_iter))
        if self.main:
            print(
                f"{shown_path(self.output_dir)} holds a finished run: trained to iteration {it} "
                f"(solver.max_iter={self.max_iter}), model_final.pth written and the final "
                "evaluation done. Nothing to do; nothing was changed. To train further, resume "
                f"with a higher solver.max_iter (e.g. --resume solver.max_iter={2 * it}); to "
                "start again, --overwrite."
            )
            self._print_next_steps(it)
        values = {k: v for k, v in row.items() if k not in ("type", "iteration", "time")}
        return {**values, "iteration": it, "output_dir": str(self.output_dir)}

    def _print_start(self) -> None:
        """Where the run writes, the threads it uses, how to follow it live."""
        if not self.main:
            return
        workers = int(self.cfg.data.num_workers)
        data = (
            f"{workers} loader worker process{'es' if workers > 1 else ''}, 1 thread each"
            if workers
            else "in the main process"
        )
        lines = [
            *self._notes,
            f"run directory: {shown_path(self.output_dir)} (iterations "
            f"{self.start_iter + 1}-{self.max_iter})",
            f"threads: {self.threads} torch thread{'s' if self.threads > 1 else ''} "
            f"({self.threads_from}); data loading: {data}",
        ]
        if self.logger.writer is not None:
            lines.append(f"follow it live: {self._tensorboard_command()}")
        print("\n".join(lines), flush=True)

    def _tensorboard_command(self) -> str:
        """The command that shows this run (its events folder is ``tb/<run name>/``)."""
        tb_dir = getattr(self.logger, "tb_dir", None)
        logdir = tb_dir.parent if tb_dir is not None else self.output_dir / "tb"
        return f"{shown_command('tensorboard')} --logdir {shown_path(logdir)}"

    def _evals_left(self, iteration: int) -> int:
        """Evaluations still to come after ``iteration`` (mid-run ones and the final one)."""
        if self.val_ds is None:
            return 0
        period = int(self.cfg.eval.period)
        mid = (self.max_iter - 1) // period - iteration // period if period > 0 else 0
        return max(0, mid) + int(bool(self.cfg.eval.final))

    def _eta(self, iteration: int, s_per_it: float, measured: str) -> str:
        """One line: the time left at ``s_per_it``, with the evaluations still to come."""
        left = self.max_iter - iteration
        evals = self._evals_left(iteration)
        eval_s = sum(self._eval_times) / len(self._eval_times) if self._eval_times else None
        total = left * s_per_it + evals * (eval_s or 0.0)
        text = f"ETA: about {duration(total)} more: {left} iterations at {s_per_it:.2f} s/it"
        text += f" ({measured})"
        if evals and eval_s is not None:
            text += f" and {evals} evaluation{'s' if evals > 1 else ''} of ~{duration(eval_s)}"
        elif evals:
            text += f", plus {evals} evaluation{'s' if evals > 1 else ''} (timed after the first)"
        return text

    def _print_next_steps(self, iteration: int) -> None:
        """The run's files and commands on them that work as printed (rank 0)."""
        cfg = self.cfg
        out = self.output_dir
        final = out / "model_final.pth"
        lines = ["", f"model: {shown_path(final)}"]
        best = self.best if isinstance(self.best, dict) else {}
        if best.get("iteration") is not None and (out / "model_best.pth").is_file():
            lines.append(
                f"best {best['metric']} ({100 * float(best['value']):.1f}, iteration "
                f"{best['iteration']}): {shown_path(out / 'model_best.pth')}"
            )
        lines.append(f"metrics: {shown_path(out / 'metrics.jsonl')}")
        dets = results_file(out, iteration, final=True)
        if self.val_ds is not None and dets.is_file():
            gt = shown_path(self.val_ds.ann_file)
            flags = self._scoring_flags()
            smalldet = shown_command("smalldet")
            lines += [
                f"detections: {shown_path(dets)} (val ground truth: {gt})",
                "",
                "score them again (prints the size table):",
                f"  {smalldet} evaluate --gt {gt} --results {shown_path(dets)} "
                + " ".join([*flags["both"], *flags["evaluate"]]),
            ]
            mid = self._midway_results(iteration)
            if mid is not None:
                k, path = mid
                lines += [
                    f"did iterations {k + 1}-{iteration} help? (paired bootstrap 95% CIs):",
                    f"  {smalldet} compare --gt {gt} {shown_path(path)} {shown_path(dets)} "
                    f"--names iter{k},iter{iteration} " + " ".join(flags["both"]),
                ]
        if cfg.log.tensorboard:
            lines += ["TensorBoard:", f"  {self._tensorboard_command()}"]
        print("\n".join(lines), flush=True)

    def _scoring_flags(self) -> dict[str, list[str]]:
        """Command-line flags that score as this run did (``eval.*``, a preset already applied
        by the loader): ``both`` for evaluate and compare, ``evaluate`` for evaluate only."""
        ev = self.cfg.eval
        bins = ev.bins
        bins = ",".join(str(b) for b in bins) if isinstance(bins, list | tuple) else str(bins)
        both = [f"--bins {shown_path(bins)}", f"--max-dets {','.join(map(str, ev.max_dets))}"]
        only = []
        if ev.get("iou_thrs"):
            only.append(f"--iou-thrs {','.join(f'{t:g}' for t in ev.iou_thrs)}")
        if ev.get("preset"):
            only.append(f"--preset {shown_path(ev.preset)}")
        if ev.get("backend", "fast") != "fast":
            only.append(f"--backend {ev.backend}")
        return {"both": both, "evaluate": only}

    def _midway_results(self, iteration: int) -> tuple[int, Path] | None:
        """The mid-run detections closest to half of the run, to compare the end against."""
        found = []
        for p in self.output_dir.iterdir():
            m = RESULTS_RE.match(p.name)
            if m and 0 < int(m.group(1)) < iteration:
                found.append((abs(int(m.group(1)) - iteration / 2), int(m.group(1)), p))
        if not found:
            return None
        _, k, path = min(found)
        return k, path

    def _run(self) -> dict:
        cfg = self.cfg
        model, opt, sched, scaler = self.model, self.optimizer, self.scheduler, self.scaler
        acc, max_iter = self.accumulate, self.max_iter
        kill_at = int(os.environ.get("SMALLDET_KILL_AT_ITER", "0") or 0)
        log_period = max(1, int(cfg.log.period))
        imgs_per_iter = cfg.solver.ims_per_batch
        model.train()
        opt.zero_grad(set_to_none=True)
        bar = tqdm(
            total=max_iter,
            initial=self.start_iter,
            disable=not (self.main and cfg.log.progress),
            dynamic_ncols=True,
            desc="train",
            unit="it",
        )
        window: dict = {"n": 0, "loss": {}, "data": 0.0, "compute": 0.0, "t0": time.perf_counter()}
        last_summary: dict = {}
        iteration = self.start_iter
        # the ETA: iterations after the first (warm-up) one are timed, evaluations apart
        timed = {"from": self.start_iter + 1, "n": 0, "s": 0.0}
        eta_after = min(5, max_iter - timed["from"])
        with _SignalCatcher() as sigs:
            for it in range(self.start_iter, max_iter):
                t_iter = time.perf_counter()
                data_time = 0.0
                loss_sums: dict[str, float] = {}
                stop_flag = 0.0
                for micro in range(acc):
                    t_d = time.perf_counter()
                    images, targets = next(self.data_iter)
                    images = [im.to(self.device, non_blocking=True) for im in images]
                    targets = [
                        {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()}
                        for t in targets
                    ]
                    data_time += time.perf_counter() - t_d
                    sync_ctx = (
                        model.no_sync()
                        if self.world > 1 and micro < acc - 1
                        else contextlib.nullcontext()
                    )
                    with sync_ctx:
                        if self.amp_dtype is not None:
                            with torch.autocast("cuda", dtype=self.amp_dtype):
                                loss_dict = model(images, targets)
                        else:
                            loss_dict = model(images, targets)
                        names = list(loss_dict)
                        losses = sum(loss_dict.values())
                        vec = torch.stack([loss_dict[n].detach().float() for n in names])
                        if self.world > 1:
                            flag = torch.tensor([float(sigs.signum > 0)], device=vec.device)
                            vec = du.all_reduce_sum(torch.cat([vec, flag]))
                            stop_flag = max(stop_flag, float(vec[-1]))
                            vec = vec[:-1] / self.world
                        vals = vec.cpu().tolist()
                        self._check_finite(it + 1, names, vals)
                        scaler.scale(losses / acc).backward()
                    for n, v in zip(names, vals):
                        loss_sums[n] = loss_sums.get(n, 0.0) + v / acc
                if cfg.solver.clip_grad_norm > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.solver.clip_grad_norm)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                lr = opt.param_groups[0]["lr"]
                sched.step()
                iteration = it + 1
                compute_time = time.perf_counter() - t_iter - data_time
                if iteration > timed["from"]:
                    timed["n"] += 1
                    timed["s"] += data_time + compute_time
                    if timed["n"] == eta_after and iteration < max_iter and self.main:
                        tqdm.write(
                            self._eta(
                                iteration,
                                timed["s"] / timed["n"],
                                f"iterations {timed['from'] + 1}-{iteration}",
                            )
                        )

                # logging
                window["n"] += 1
                window["data"] += data_time
                window["compute"] += compute_time
                for n, v in loss_sums.items():
                    window["loss"][n] = window["loss"].get(n, 0.0) + v
                total = sum(loss_sums.values())
                bar.update(1)
                if self.main and cfg.log.progress:
                    bar.set_postfix_str(f"loss={total:.3f} lr={lr:.2e}", refresh=False)
                if iteration % log_period == 0 or iteration == max_iter:
                    self._log_window(window, iteration, lr, imgs_per_iter, bar)

                # evaluation, checkpoint, signals
                period = cfg.eval.period
                if period > 0 and iteration % period == 0 and iteration < max_iter:
                    try:
                        last_summary = self.evaluate(iteration) or last_summary
                    except EvaluationFailed as err:
                        raise EvaluationFailed(
                            f"{err}. Training stopped; once the cause is fixed, continue with "
                            f"--resume (last checkpoint: {self.ckpt.latest_or_none()}), or set "
                            "eval.period=0"
                        ) from err.__cause__
                    if self.main and len(self._eval_times) == 1 and timed["n"]:
                        tqdm.write(
                            f"evaluation at iteration {iteration}: "
                            f"{duration(self._eval_times[0])}; "
                            + self._eta(iteration, timed["s"] / timed["n"], "mean so far")
                        )
                    window["t0"] = time.perf_counter()
                if cfg.checkpoint.period > 0 and iteration % cfg.checkpoint.period == 0:
                    self.save_checkpoint(iteration)
                stopping = sigs.signum > 0 if self.world == 1 else stop_flag > 0
                if stopping:
                    path = self.save_checkpoint(iteration)
                    bar.close()
                    raise TrainingInterrupted(sigs.signum or signal.SIGTERM, iteration, path)
                if kill_at and iteration == kill_at:
                    bar.close()
                    os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        return self._finish(iteration, last_summary)

    def _hparams_shown(self) -> dict[str, Any]:
        """HParams values as the run used them: the per-conv dilation rates the backbone was
        built with (the config's ``{}`` means "the variant's default")."""
        return {
            "model.backbone.dilations": json.dumps(resolved_dilations(self.cfg), sort_keys=True)
        }

    def _check_finite(self, iteration: int, names: list[str], vals: list[float]) -> None:
        bad = [(n, v) for n, v in zip(names, vals) if not math.isfinite(v)]
        if not bad:
            return
        name, value = bad[0]
        others = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, vals) if n != name)
        latest = self.ckpt.latest_or_none()
        raise NonFiniteLossError(
            f"iteration {iteration}: {name} is {value} ({others}). Training stopped; no "
            f"checkpoint was written from this state. Last good checkpoint: "
            f"{latest if latest else 'none'}. Try a lower solver.lr, a longer warm-up or "
            "solver.clip_grad_norm."
        )

    def _log_window(self, window: dict, iteration: int, lr: float, imgs: int, bar) -> None:
        n = max(1, window["n"])
        elapsed = time.perf_counter() - window["t0"]
        values = {f"loss/{k}": v / n for k, v in window["loss"].items()}
        values["loss/total"] = sum(window["loss"].values()) / n
        values["lr"] = lr
        values["img_per_s"] = imgs * n / max(elapsed, 1e-9)
        values["data_time"] = window["data"] / n
        values["compute_time"] = window["compute"] / n
        values["memory_mb"] = memory_mb(self.device)
        if self.main:
            self.logger.scalars({f"train/{k}": v for k, v in values.items()}, iteration)
            self.logger.record("train", iteration, values)
            if self.cfg.log.progress:
                bar.set_postfix_str(
                    f"loss={values['loss/total']:.3f} lr={lr:.2e} {values['img_per_s']:.1f} img/s",
                    refresh=False,
                )
        window.update(n=0, loss={}, data=0.0, compute=0.0, t0=time.perf_counter())

    def _finish(self, iteration: int, last_summary: dict) -> dict:
        """Last checkpoint, ``model_final.pth``, then the final evaluation (a val image that
        breaks it cannot cost the trained model)."""
        cfg = self.cfg
        periodic = cfg.checkpoint.period > 0 and iteration % cfg.checkpoint.period == 0
        if not periodic and (iteration > self.start_iter or self.ckpt.latest_or_none() is None):
            self.save_checkpoint(iteration)
        final = self.output_dir / "model_final.pth"
        if self.main:
            self._save_model(final.name, iteration)
        du.barrier()
        summary = last_summary
        if cfg.eval.final and self.val_ds is not None:
            try:
                summary = self.evaluate(iteration, final=True)
            except EvaluationFailed as err:
                raise EvaluationFailed(
                    f"final {err}. The trained model is saved as {final}; once the cause is "
                    f"fixed, rerun the evaluation with `smalldet evaluate --config "
                    f"{self.output_dir / 'config.yaml'} --checkpoint {final}`"
                ) from err.__cause__
        if self.main:
            self.logger.hparams(cfg.to_dict(), summary, shown=self._hparams_shown())
            self.logger.record("final", iteration, summary)
            report = getattr(self, "last_report", None)
            if report is not None:
                print(f"\nSize-stratified evaluation at iteration {iteration}:")
                print(report.markdown())
            total = time.perf_counter() - self._t_start
            evals = sum(self._eval_times)
            print(
                f"done in {duration(total)}"
                + (
                    f" ({duration(evals)} of it in {len(self._eval_times)} evaluations)"
                    if evals
                    else ""
                )
            )
            self._print_next_steps(iteration)
        dump = os.environ.get("SMALLDET_DUMP_RANK_WEIGHTS")
        if dump:  # test hook: every rank writes the weights it holds
            Path(dump).mkdir(parents=True, exist_ok=True)
            atomic_save(unwrap(self.model).state_dict(), Path(dump) / f"rank{self.rank}.pth")
        du.barrier()
        return {**summary, "iteration": iteration, "output_dir": str(self.output_dir)}


def train(
    cfg,
    output_dir=None,
    resume: bool = False,
    overwrite: bool = False,
    threads: int | None = None,
) -> dict:
    """Train ``cfg`` into ``output_dir`` (default ``cfg.output_dir``); returns final metrics.

    ``resume`` continues the run there (or, if it finished, returns its final metrics and
    changes nothing); ``overwrite`` moves another run's files aside into
    ``<dir>/.overwritten-<time>/`` first (without either, such a directory is refused).
    ``threads``: torch threads (default: ``$OMP_NUM_THREADS``, else the CPUs available).
    """
    return Trainer(cfg, output_dir, resume, overwrite, threads).run()
