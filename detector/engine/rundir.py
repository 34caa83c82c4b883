"""One run per directory: claiming it, locking it, and what a resume may change.

Claiming (rank 0, at the start of every training):

- the directory is created; an unwritable path, a read-only disk or a full one is a
  :class:`RunDirError` naming the path and the fix;
- ``<dir>/.train.lock`` (``pid@host``) is taken and held for the whole run, so a second
  training into the same directory is refused naming the holder; a lock left by a dead
  process is taken over;
- temporary files a killed atomic write left behind (up to a whole checkpoint) are deleted;
- a directory holding another run's files (:data:`RUN_FILES`, ``model_<iter>.pth``,
  ``results_val_<iter>.json``) is refused unless resuming. With ``overwrite`` those files are
  **moved aside** into ``<dir>/.overwritten-<YYYYmmdd-HHMMSS>/``, not deleted: a finished
  model is never destroyed by a typo, and deleting that folder is one command once it is not
  needed. Other files (notes, a study's own files) are left where they are.

Resuming with changed settings (:func:`resume_changes`): a change either takes effect, and
``config.yaml`` then records it, or it is refused. Keys that shape the model are refused by
the checkpoint fingerprint; :data:`RESUME_REFUSED` lists those that cannot take effect
mid-run (the optimizer's kind and parameter groups, the batch layout, the seed and the
training images or their order: the saved data position would point into a different
sequence); :data:`RESUME_SCHEDULE` keys (lr, momentum, weight decay, the schedule, its length)
are applied by rebuilding the optimizer's hyper-parameters and the scheduler from the new
values; everything else (``eval.*``, ``log.*``, ``checkpoint.*``, transforms, RPN/ROI
sampling, ``solver.clip_grad_norm``, the device ...) is read afresh and applies from the
resumed iteration.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

from detector.utils.dotted import diff_dotted, flatten
from detector.utils.errors import SmalldetError
from detector.utils.files import read_jsonl, remove_stale_temps
from detector.utils.lock import lock_holder, release_lock, take_lock

from .checkpoint import CKPT_RE

LOCK_NAME = ".train.lock"
ASIDE_PREFIX = ".overwritten-"
RESULTS_FINAL = "results_val.json"  # the final evaluation's detections (COCO results)
RESULTS_RE = re.compile(r"^results_val_(\d{7})\.json$")  # those of a mid-run evaluation
# what a training writes into its directory (besides model_<iter>.pth, results_val_<iter>.json)
RUN_FILES = (
    "model_final.pth",
    "model_best.pth",
    "metrics.jsonl",
    "config.yaml",
    "last_checkpoint",
    RESULTS_FINAL,
    "tb",
)

_FIXES = {
    errno.ENOSPC: "free space on that disk, or train into another --output",
    errno.EDQUOT: "free space within your disk quota, or train into another --output",
    errno.EACCES: "make it writable (chmod/chown), or train into another --output",
    errno.EPERM: "make it writable (chmod/chown), or train into another --output",
    errno.EROFS: "that file system is read-only: train into an --output on a writable disk",
    errno.ENOTDIR: "part of that path is a file, not a folder: choose another --output",
    errno.EEXIST: "that path is a file, not a folder: choose another --output",
}
DISK_ERRNOS = frozenset(_FIXES)


class RunDirError(SmalldetError, RuntimeError):
    """The run directory cannot be used: another run's files, in use, unwritable or full."""


def describe_os_error(err: OSError, path, doing: str) -> str:
    """``"<doing> <path>: <reason> (ENOSPC). Fix: ..."`` for a disk or permission error."""
    code = errno.errorcode.get(err.errno or 0, "error")
    fix = _FIXES.get(err.errno, "check the path and the disk, or train into another --output")
    return f"{doing} {path}: {err.strerror or err} ({code}). Fix: {fix}"


def is_disk_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in DISK_ERRNOS


def run_files(directory: str | Path) -> list[Path]:
    """The entries of ``directory`` that a training wrote (sorted by name)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.name in RUN_FILES or CKPT_RE.match(p.name) or RESULTS_RE.match(p.name)
    )


def results_file(directory: str | Path, iteration: int, final: bool) -> Path:
    """Where an evaluation's detections go: ``results_val.json`` for the final one (the name a
    study uses too), ``results_val_<iter>.json`` for a mid-run one."""
    name = RESULTS_FINAL if final else f"results_val_{int(iteration):07d}.json"
    return Path(directory) / name


def final_row(directory: str | Path) -> dict:
    """The last ``final`` row of ``metrics.jsonl``: written once the run ended and its final
    evaluation (if any) is done, so a run without one has not finished. ``{}`` if none."""
    rows = read_jsonl(Path(directory) / "metrics.jsonl")
    finals = [r for r in rows if isinstance(r, dict) and r.get("type") == "final"]
    return finals[-1] if finals else {}


def tb_events_dir(directory: str | Path) -> Path:
    """The folder a run's TensorBoard events go to: ``<dir>/tb/<run name>/``.

    TensorBoard names a run after the folder of its event files, so events directly in
    ``tb/`` showed every run (and its HParams entry) as "tb". The name is the run directory's
    name, with its parent's for a study's ``<variant>/seed<k>`` (``dc5_seed0``). A run that
    already has events (an older run being resumed) keeps writing where they are.
    """
    tb = Path(directory) / "tb"
    if tb.is_dir():
        if any(p.name.startswith("events.") for p in tb.iterdir() if p.is_file()):
            return tb
        subs = [p for p in tb.iterdir() if p.is_dir() and any(p.glob("events.*"))]
        if len(subs) == 1:
            return subs[0]
    path = Path(os.path.abspath(directory))
    name = path.name or "run"
    if re.fullmatch(r"seed\d+", name) and path.parent.name:
        name = f"{path.parent.name}_{name}"
    return tb / name


# ------------------------------------------------------------------- commands it prints


def shown_path(path: str | Path) -> str:
    """``path`` as a shell argument that works from the current folder: relative when it lies
    below it (and that is not ``/``), absolute otherwise, quoted if needed."""
    p, cwd = Path(path), Path.cwd()
    if p.is_absolute() and cwd != Path(cwd.anchor) and p.is_relative_to(cwd):
        p = p.relative_to(cwd)
    return shlex.quote(str(p))


def shown_command(name: str) -> str:
    """A console script of this installation (``smalldet``, ``tensorboard``) as a command that
    works as printed: the bare name when it is the one on ``PATH`` (an active venv), else its
    path next to this Python (``.venv/bin/smalldet``), else ``python -m``."""
    exe = Path(sys.executable).with_name(name)
    if exe.is_file():
        found = shutil.which(name)
        if found and Path(found).resolve() == exe.resolve():
            return name
        shown = shown_path(exe)
        return shown if "/" in shown else f"./{shown}"
    module = {"smalldet": "detector.cli.main", "tensorboard": "tensorboard.main"}.get(name, name)
    return f"{shown_path(sys.executable)} -m {module}"


def move_aside(directory: Path, files: list[Path]) -> Path:
    """Move ``files`` into a new ``<directory>/.overwritten-<time>/`` (same disk: renames)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = directory / f"{ASIDE_PREFIX}{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = directory / f"{ASIDE_PREFIX}{stamp}-{n}"
    dest.mkdir()
    for f in files:
        os.replace(f, dest / f.name)
    return dest


def make_run_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(
            describe_os_error(err, directory, "cannot create the run directory")
        ) from None
    if not directory.is_dir():
        raise RunDirError(
            f"cannot create the run directory {directory}: it exists and is a file. "
            "Fix: choose another --output"
        )


def acquire_lock(directory: Path) -> Path:
    """Take ``<directory>/.train.lock`` or raise naming who holds it."""
    lock = directory / LOCK_NAME
    try:
        ok = take_lock(lock)
    except OSError as err:
        raise RunDirError(describe_os_error(err, lock, "cannot create the run lock")) from None
    if not ok:
        holder = lock_holder(lock) or "an unknown process"
        raise RunDirError(
            f"{directory} is in use: another training ({holder}) holds {lock}. Wait for it to "
            "finish or stop it, or train into another --output; if that process is gone (it "
            f"ran on another host), delete {lock}"
        )
    return lock


def claim_run_dir(directory: str | Path, resume: bool, overwrite: bool) -> tuple[Path, Path | None]:
    """Create and lock ``directory`` for one training; returns ``(lock, moved_aside_to)``.

    The lock is released again if the directory is refused.
    """
    directory = Path(directory)
    if resume and overwrite:
        raise RunDirError(
            f"{directory}: --resume continues the run there and --overwrite sets it aside; "
            "give one of them"
        )
    make_run_dir(directory)
    lock = acquire_lock(directory)
    try:
        remove_stale_temps(directory)
        found = run_files(directory)
        moved = None
        if found and not resume:
            names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found[:6])
            names += f" and {len(found) - 6} more" if len(found) > 6 else ""
            if not overwrite:
                raise RunDirError(
                    f"{directory} holds another run's files ({names}); refusing to mix runs. "
                    "Fix: continue that run with --resume, train into a new --output, or pass "
                    f"--overwrite to move its files aside into {directory}/{ASIDE_PREFIX}<time>/"
                )
            try:
                moved = move_aside(directory, found)
            except OSError as err:
                raise RunDirError(
                    describe_os_error(err, directory, "cannot move the old run's files aside in")
                ) from None
            print(f"--overwrite: the previous run's files ({names}) were moved to {moved}")
        return lock, moved
    except BaseException:
        release_lock(lock)
        raise


# ------------------------------------------------------------------------- resume changes

# key (or section) -> why a change cannot take effect in a resumed run
RESUME_REFUSED = {
    "seed": "the data order and the RNG streams of the run come from it",
    "solver.optimizer": "the saved optimizer state belongs to the old optimizer",
    "solver.no_decay_norm_bias": "the optimizer's parameter groups would change",
    "model.backbone.trainable_layers": "the optimizer's parameter groups would change",
    "model.backbone.norm": "the trained parameters would change",
    "model.backbone.weights": "initial weights are only used at the start of a run",
    "solver.ims_per_batch": "the data position and the meaning of an iteration would change",
    "solver.accumulate": "the data position and the meaning of an iteration would change",
    "data.source": "the training images would change",
    "data.train_images": "the training images would change",
    "data.train_ann": "the training images would change",
    "data.builtin.num_train": "the training images would change",
    "data.builtin.image_size": "the training images would change",
    "data.builtin.seed": "the training images would change",
    "data.keep_empty_train": "the training images would change",
    "data.aspect_ratio_grouping": "the order of the training images would change",
}
# applied on resume by rebuilding the optimizer hyper-parameters and the LR schedule
RESUME_SCHEDULE = (
    "solver.lr",
    "solver.momentum",
    "solver.betas",
    "solver.weight_decay",
    "solver.schedule",
    "solver.steps",
    "solver.gamma",
    "solver.warmup_iters",
    "solver.warmup_factor",
    "solver.min_lr_factor",
    "solver.max_iter",
    "solver.max_epochs",
)
RESUME_IGNORED = ("output_dir",)
_EQUIVALENT = {"model.backbone.norm": {frozenset({"bn", "syncbn"})}}


def _under(key: str, prefixes) -> str | None:
    for p in prefixes:
        if key == p or key.startswith(p + "."):
            return p
    return None


def resume_changes(old: dict, new: dict) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Split the changes from ``old`` (the checkpoint's config) to ``new`` into
    ``(refused, schedule, other)`` lists of ``(key, old, new)``.

    A key absent from ``old`` (added to the schema since) is never refused.
    """
    present = flatten(old)
    refused, schedule, other = [], [], []
    for key, a, b in diff_dotted(old, new, ignore=RESUME_IGNORED):
        group = _under(key, RESUME_REFUSED)
        equivalent = group in _EQUIVALENT and frozenset({a, b}) in _EQUIVALENT[group]
        if group and key in present and not equivalent:
            refused.append((key, a, b))
            continue
        if _under(key, RESUME_SCHEDULE):
            schedule.append((key, a, b))
        else:
            other.append((key, a, b))
    return refused, schedule, other


def format_changes(changes: list[tuple], limit: int = 12) -> str:
    text = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:limit])
    return text + (f"; and {len(changes) - limit} more" if len(changes) > limit else "")


def refuse_resume(directory, checkpoint, refused: list[tuple]) -> RunDirError:
    why = sorted({RESUME_REFUSED[_under(k, RESUME_REFUSED)] for k, _, _ in refused})
    return RunDirError(
        f"cannot --resume {directory} from {Path(checkpoint).name} with changed settings "
        f"({format_changes(refused)}): {'; '.join(why)}. Fix: set them back to the run's "
        f"values ({Path(directory) / 'config.yaml'}), or train a new run into another --output"
    )
