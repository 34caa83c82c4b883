"""``smalldet COMMAND ...``: the dispatcher and the one error policy of every command.

The dispatcher is a plain table: ``COMMANDS[name] = (module, one-line help)``. ``smalldet NAME
ARGS`` imports the module only then (so ``smalldet --help`` needs no torch) and calls its
``main(ARGS, prog="smalldet NAME")``. Adding a command is one line here plus its module.

Error policy (:func:`guarded`). Every command's ``main`` runs its body through it, so that a
``tools/*.py`` shim and the console command behave alike:

- a :class:`~detector.utils.errors.SmalldetError` (a problem the user can fix) prints
  ``error: <message>`` on stderr and returns the command's error code (documented in each
  command module: 1 for ``train``, 2 for the others);
- an ``OSError`` about a named path (missing file, permission denied, is a directory) or a full
  disk prints one line naming the path, with the same code;
- Ctrl-C (``KeyboardInterrupt``) prints one line and returns 130 (128 + SIGINT);
- anything else is a bug and keeps its traceback;
- bad flags are argparse's business: usage plus message, exit 2.
"""

from __future__ import annotations

import errno
import importlib
import os
import select
import sys
from collections.abc import Callable

from detector.utils.errors import SmalldetError
from detector.utils.suggest import suggest

# name -> (module holding main(argv, prog), one-line help); the order of `smalldet --help`.
# One line per command, kept as a table:
# fmt: off
COMMANDS: dict[str, tuple[str, str]] = {
    "train":                ("detector.cli.train", "train a detector (or resume a run)"),
    "evaluate":             ("detector.cli.evaluate", "size-stratified COCO evaluation of a results file or a checkpoint"),
    "predict":              ("detector.cli.predict", "predict images (whole or sliced into tiles) with a checkpoint into one COCO results file"),
    "compare":              ("detector.cli.compare", "compare runs per size bin with paired bootstrap CIs"),
    "study":                ("detector.cli.study", "train and evaluate every variant and seed of a study, then report"),
    "curve":                ("detector.cli.curve", "learning curves: AP at every kept checkpoint of training runs"),
    "info":                 ("detector.cli.info", "a model's parameters, FLOPs, stride, receptive field and HDC verdict"),
    "analyze-dilation":     ("detector.cli.analyze_dilation", "receptive field and gridding holes of a stack of dilated convs"),
    "dataset-stats":        ("detector.cli.dataset_stats", "objects per size bin and class of a COCO dataset"),
    "convert":              ("detector.cli.convert", "labels in YOLO, VOC, VisDrone, DOTA, TinyPerson or AI-TOD format to COCO JSON (or to YOLO)"),
    "anchor-coverage":      ("detector.cli.anchor_coverage", "how well each config's anchors cover a dataset's boxes, per size bin"),
    "make-builtin-dataset": ("detector.cli.make_builtin_dataset", "generate (or find in the cache) the built-in synthetic dataset"),
}
# fmt: on

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
BROKEN_PIPE = 141  # 128 + SIGPIPE: what `cat | head` reports for cat
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class UsageError(SmalldetError):
    """A flag value the command cannot use (a bin preset, a metric name); the message names it."""


def check_bins(value: str, flag: str = "--bins") -> str:
    """A size-bin preset or edge list given on the command line, checked before any work."""
    from detector.utils.bins import get_bins

    try:
        get_bins(value)
    except ValueError as err:
        raise UsageError(f"{flag} {value}: {err}") from None
    return value


def _os_error_line(err: OSError) -> str | None:
    """One line for an OSError the user can act on, or None when it looks like a bug."""
    reason = err.strerror or str(err)
    if err.filename is not None:
        where = str(err.filename)
        if err.filename2 is not None:
            where += f" -> {err.filename2}"
        return f"{where}: {reason}"
    if err.errno in _DISK_FULL:
        return f"{reason} (free some space, or write the output elsewhere)"
    return None


def _stdout_closed() -> bool:
    """Whether the reader of stdout is gone, which is what a BrokenPipeError from ``print``
    means (on Linux, poll reports POLLERR on a pipe with no reader left)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real stdout (captured, closed)
        return False


def guarded(body: Callable[[], int | None], error_code: int) -> int:
    """Run a command body under the error policy above; returns its exit code."""
    try:
        return int(body() or 0)
    except SmalldetError as err:
        print(f"error: {err}", file=sys.stderr)
        return error_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a pipe of the program's own (a socket, a child): a bug, keep the traceback
        # the reader went away (`smalldet study --dry-run | head`): stop quietly, as `cat`
        # does; stdout goes to /dev/null so the interpreter's last flush cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except OSError as err:
        line = _os_error_line(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return error_code


def usage() -> str:
    width = max(len(name) for name in COMMANDS) + 2
    lines = [
        "usage: smalldet COMMAND [FLAGS ...]   (smalldet COMMAND --help: that command's flags)",
        "",
        "Small-object detection experiments: dilated Faster R-CNN, size-stratified evaluation.",
        "",
        "commands:",
        *(f"  {name:<{width}}{text}" for name, (_, text) in COMMANDS.items()),
        "",
        "tools/*.py run the same commands with the same flags (info: tools/model_info.py).",
    ]
    return "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("smalldet")
    except PackageNotFoundError:  # run from a source tree without an install
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``smalldet`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if name in ("-h", "--help", "help"):
        if name == "help" and rest:  # smalldet help train == smalldet train --help
            return main([rest[0], "--help"])
        print(usage())
        return 0
    if name == "--version":
        print(f"smalldet {_version()}")
        return 0
    if name not in COMMANDS:
        if name.startswith("-"):  # flags belong after the command: smalldet train --config ...
            line = f"unknown option {name!r}: the command comes first (smalldet --help lists them)"
        else:
            line = f"unknown command {name!r}{suggest(name, COMMANDS, 'commands')}"
        print(f"error: {line}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest, prog=f"smalldet {name}")


if __name__ == "__main__":  # python -m detector.cli.main, e.g. under torchrun -m
    sys.exit(main())
