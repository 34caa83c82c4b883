"""Atomic file writes and JSON reading that name the file and the fix.

Every file the project writes (checkpoints, JSON, reports, configs) goes through
:func:`atomic_file`: a temporary file in the same folder, flushed, fsynced and renamed over the
target, then the folder fsynced. A crash leaves the old file or the new one, never half of one,
and the temporary file is removed on any error; one left by a killed process is named
``.<name>.<random>.tmp`` and :func:`remove_stale_temps` clears it on the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A file object whose content appears at ``path`` only once fully written and fsynced.

    ``mode`` is ``"wb"`` or ``"w"`` (UTF-8 text). The parent folder is created if needed.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        kwargs = {"encoding": "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(text: str, path: str | Path) -> Path:
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays, paths and anything else with a plain form."""
    for attr in ("item", "tolist"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            try:
                return fn()
            except (TypeError, ValueError):
                continue
    return str(obj)


def atomic_write_json(
    obj: Any, path: str | Path, indent: int | None = 1, sort_keys: bool = False
) -> Path:
    """``json.dump`` through :func:`atomic_file`; numpy values are written as plain numbers."""
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys, default=_json_default)
        f.write("\n")
    return Path(path)


def read_json(
    path: str | Path,
    what: str = "JSON file",
    error: type[Exception] = ValueError,
    fix: str = "",
) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file raises ``error`` naming it.

    ``what`` says what the file is for ("ground-truth file", "study status"), ``fix`` what to
    do when it is missing.
    """
    path = Path(path)
    if not path.is_file():
        more = f". Fix: {fix}" if fix else ""
        raise error(f"{path}: {what} not found{more}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise error(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno} ({what}): "
            f"{err.msg}. Fix: repair the file (`python -m json.tool FILE` shows the same "
            "position); a truncated write or a trailing comma are the usual causes."
        ) from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: {what} is not UTF-8 text ({err}). Fix: save it as UTF-8.") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what}: {err.strerror or err}") from None


def read_json_or(path: str | Path, default: Any = None) -> Any:
    """The parsed file, or ``default`` when it is missing or unreadable (status files)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines file (``metrics.jsonl``); a line cut by a crash is skipped, a
    missing file is []."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        continue
    except OSError:
        pass
    return rows


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete temporary files that a killed :func:`atomic_file` left in ``directory``.

    Call it only where no other process is writing (the trainer does, holding the run lock).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for p in directory.iterdir():
        if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
