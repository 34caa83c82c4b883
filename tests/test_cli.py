"""The ``smalldet`` console command: dispatcher, per-command help, the one error policy, the
tools/*.py shims, and no ``sys.path`` edits anywhere in the repository."""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from detector.cli.main import COMMANDS, INTERRUPTED, guarded, main
from detector.utils.errors import SmalldetError

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = Path(sys.executable).with_name("smalldet")
# tools/<script>.py -> the command it is a shim for
SHIMS = {
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "convert": "convert",
    "compare": "compare",
    "study": "study",
    "model_info": "info",
    "analyze_dilation": "analyze-dilation",
    "dataset_stats": "dataset-stats",
    "anchor_coverage": "anchor-coverage",
    "make_builtin_dataset": "make-builtin-dataset",
}


def _console() -> list[str]:
    if not CONSOLE.exists():
        pytest.skip(f"{CONSOLE} not installed: pip install -e . (pyproject [project.scripts])")
    return [str(CONSOLE)]


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_console(), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------ dispatcher


def test_help_lists_every_command_with_its_one_line_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, text) in COMMANDS.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(text)}$", out, re.M), name
    for required in ("train", "evaluate", "compare", "study", "info", "analyze-dilation"):
        assert required in COMMANDS
    assert {"dataset-stats", "anchor-coverage"} <= set(COMMANDS)


def test_console_script_help():
    proc = _run("--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in COMMANDS)


def test_help_imports_no_command_module():
    """``smalldet --help`` stays instant: command modules (and torch) load only when run."""
    code = (
        "import sys, contextlib, io; from detector.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('detector.cli.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "['detector.cli.main']", proc.stdout + proc.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_help_shows_its_flags(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: smalldet {name}") and "--help" in out
    doc = importlib.import_module(COMMANDS[name][0]).__doc__
    assert "Exit codes" in doc, f"{COMMANDS[name][0]}: document the exit codes in its docstring"


def test_help_command_is_command_help(capsys):
    with pytest.raises(SystemExit):
        main(["help", "compare"])
    assert capsys.readouterr().out.startswith("usage: smalldet compare")


@pytest.mark.parametrize("typo, closest", [("trian", "train"), ("evalute", "evaluate")])
def test_unknown_command_suggests_the_closest(typo, closest, capsys):
    assert main([typo]) == 2
    err = capsys.readouterr().err
    assert f"unknown command {typo!r}" in err and f"did you mean {closest!r}" in err
    assert len(_lines(err)) == 1


def test_no_command_prints_usage_and_fails(capsys):
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().err


# ---------------------------------------------------------------------------- error policy


def test_policy_user_error_is_one_line_with_the_command_code(capsys):
    def body():
        raise SmalldetError("config x.yaml: unknown key 'solver.lrr'; did you mean 'lr'?")

    assert guarded(body, 7) == 7
    assert (
        capsys.readouterr().err
        == "error: config x.yaml: unknown key 'solver.lrr'; did you mean 'lr'?\n"
    )


def test_policy_os_error_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nope" / "gt.json"
    assert guarded(missing.read_text, 2) == 2
    err = capsys.readouterr().err
    assert _lines(err) == [f"error: {missing}: No such file or directory"]

    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device")

    assert guarded(disk_full, 1) == 1
    assert _lines(capsys.readouterr().err)[0].startswith("error: No space left on device")


def test_policy_ctrl_c_is_one_line_and_130(capsys):
    def body():
        raise KeyboardInterrupt

    assert guarded(body, 2) == INTERRUPTED == 130
    assert _lines(capsys.readouterr().err) == ["error: interrupted"]


def test_policy_keeps_the_traceback_of_a_bug():
    def bug():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        guarded(bug, 2)

    def broken_pipe():
        raise OSError(errno.EPIPE, "Broken pipe")

    with pytest.raises(OSError):  # an OSError naming no path is not the user's
        guarded(broken_pipe, 2)


# ---------------------------------------------------------------- commands, end to end


@pytest.mark.parametrize(
    "override, key", [("eval.bins=cocoo", "eval.bins"), ("eval.binz=coco", "eval.binz")]
)
def test_train_config_error_is_one_line_naming_the_key(override, key):
    from detector.config import ConfigError, load_config

    try:  # never start the demo training if the loader does not reject the value yet
        load_config(ROOT / "configs" / "demo.yaml", [override])
    except ConfigError:
        pass
    else:
        pytest.skip(f"the config loader does not reject {override!r} yet")
    proc = _run("train", "--config", "configs/demo.yaml", override)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], proc.stderr


@pytest.mark.slow  # a subprocess that loads torch before it checks the path: ~20 s under load
def test_evaluate_missing_checkpoint_is_one_line(tmp_path):
    missing = tmp_path / "model_final.pth"
    proc = _run("evaluate", "--config", "configs/demo.yaml", "--checkpoint", str(missing))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert _lines(proc.stderr) == [f"error: checkpoint not found: {missing}"]


def test_evaluate_flag_errors(capsys, tmp_path):
    from detector.cli import evaluate

    with pytest.raises(SystemExit) as exc:  # argparse: usage + message, exit 2
        evaluate.main(["--config", "c.yaml"])
    assert (
        exc.value.code == 2 and "--config and --checkpoint go together" in capsys.readouterr().err
    )
    gt = tmp_path / "gt.json"
    gt.write_text('{"images": [], "annotations": [], "categories": []}')
    args = ["--gt", str(gt), "--results", str(gt)]
    assert evaluate.main([*args, "--iou-thrs", "0.5,2"]) == 2
    assert _lines(capsys.readouterr().err) == [
        "error: --iou-thrs 0.5,2: give comma-separated values in (0, 1], e.g. 0.5,0.75"
    ]
    assert evaluate.main([*args, "--max-dets", "ten"]) == 2
    assert capsys.readouterr().err.startswith("error: --max-dets ten: ")


# ---------------------------------------------------------------------------------- shims


def _load_shim(script: str):
    spec = importlib.util.spec_from_file_location(f"shim_{script}", ROOT / "tools" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tool_is_a_shim_over_its_command():
    assert {p.stem for p in (ROOT / "tools").glob("*.py")} == set(SHIMS)
    for script, name in SHIMS.items():
        assert name in COMMANDS
        command = importlib.import_module(COMMANDS[name][0])
        assert _load_shim(script).main is command.main, script


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text))


@pytest.mark.parametrize("script", ["analyze_dilation", "evaluate"])
def test_shim_and_console_command_take_the_same_flags(script):
    tool = subprocess.run(
        [sys.executable, str(ROOT / "tools" / f"{script}.py"), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    console = _run(SHIMS[script], "--help", timeout=60)
    assert tool.returncode == console.returncode == 0, tool.stderr + console.stderr
    assert _flags(tool.stdout) == _flags(console.stdout) and "--help" in _flags(tool.stdout)


# ------------------------------------------------------------------------ no sys.path edits

_TEXT = {".py", ".md", ".sh", ".txt", ".toml", ".cfg", ".ini", ".yaml", ".yml", ""}
_SKIP = {".git", ".venv", "runs", ".cache", ".pytest_cache", ".ruff_cache", "__pycache__"}


def test_no_sys_path_edits_anywhere():
    """The package is installed (editable): scripts, tests and benchmarks import it as is."""
    pattern = re.compile(r"sys\.path\.(insert|append)\b")
    offenders = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIP and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if path.suffix not in _TEXT or path.stat().st_size > 2_000_000:
                continue
            text = path.read_text(errors="ignore")
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, f"sys.path edits (import the installed package instead): {offenders}"


# ------------------------------------------------------ nothing lands in the current folder


def test_dataset_stats_writes_only_what_it_is_asked_to(tmp_path, monkeypatch, capsys):
    from detector.cli import dataset_stats
    from detector.data import generate_dataset

    _, ann = generate_dataset(tmp_path / "data", 2, 64, seed=1)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    assert dataset_stats.main(["--ann", str(ann)]) == 0
    assert "objects per image" in capsys.readouterr().out
    assert list(here.iterdir()) == []  # no size_histogram.png dropped here unasked
    stats = tmp_path / "out" / "stats.json"
    assert dataset_stats.main(["--ann", str(ann), "--json", str(stats)]) == 0
    assert stats.is_file() and list(here.iterdir()) == []  # asked for: written where told


def test_evaluate_checkpoint_writes_its_detections_next_to_the_checkpoint(
    tmp_path, monkeypatch, capsys
):
    import json
    import types

    pytest.importorskip("detector.engine.distributed")  # the real package, before the fake
    from detector.cli import evaluate

    gt = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [4, 4, 10, 10],
                "area": 100,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    dets = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.9}]
    fake = types.ModuleType("detector.engine.inference")
    fake.run_inference = lambda cfg, ckpt, images=None, ann=None, **kw: (
        dets,
        str(tmp_path / "gt.json"),
    )
    monkeypatch.setitem(sys.modules, "detector.engine.inference", fake)
    monkeypatch.setattr(evaluate, "load_cfg", lambda path, opts: {"device": "cpu"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model_final.pth").write_bytes(b"")  # only its existence is checked
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    args = ["--config", "c.yaml", "--checkpoint", str(run_dir / "model_final.pth"), "--no-errors"]
    assert evaluate.main(args) == 0
    assert list(here.iterdir()) == []
    assert json.loads((run_dir / "model_final_results_val.json").read_text()) == dets
    assert evaluate.main([*args, "--data", str(tmp_path / "images")]) == 0
    assert (run_dir / "model_final_results_images.json").is_file()
    assert list(here.iterdir()) == []


def test_compare_says_no_objects_for_an_empty_bin(tmp_path, capsys):
    import json

    from detector.cli import compare

    # two images with one 10 px object each: the medium and large bins hold nothing
    gt = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in (1, 2)],
        "annotations": [
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "bbox": [4, 4, 10, 10],
                "area": 100,
                "iscrowd": 0,
            }
            for i in (1, 2)
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    hit = [{"image_id": i, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.9} for i in (1, 2)]
    (tmp_path / "a.json").write_text(json.dumps(hit[:1]))  # finds one of the two
    (tmp_path / "b.json").write_text(json.dumps(hit))  # finds both
    out = tmp_path / "cmp.json"
    argv = [str(tmp_path / n) for n in ("a.json", "b.json")]
    assert (
        compare.main(["--gt", str(tmp_path / "gt.json"), *argv, "--n", "20", "--json", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    assert "nan" not in text
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in text.splitlines()
        if line.startswith("| AP")
    }
    assert rows["AP_medium"] == "| AP_medium | no objects |  |  |"
    assert rows["AP_large"] == "| AP_large | no objects |  |  |"
    # a finds one of two objects at precision 1: 51 of the 101 recall points, AP 50.5; b 100
    assert "| AP_small | 50.5 [" in rows["AP_small"] and "| 100.0 [" in rows["AP_small"]
    saved = json.loads(out.read_text())["metrics"]
    assert saved["AP_large"]["a"] == {
        "status": "no objects",
        "value": None,
        "ci": [None, None],
    }
    assert "status" not in saved["AP_small"]["a"]


def test_train_refuses_zero_threads(capsys):
    from detector.cli import train

    with pytest.raises(SystemExit) as exc:
        train.main(["--config", "configs/demo.yaml", "--threads", "0"])
    assert exc.value.code == 2 and "--threads must be at least 1" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`smalldet ... | head` must not end in a BrokenPipeError traceback: the command stops
    with 141 (128 + SIGPIPE, what a shell reports for `cat` in `cat | head`) and says nothing."""
    proc = subprocess.Popen(
        [*_console(), "study", "studies/aerial_cars_matchers.yaml", "--dry-run"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the command writes its first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
