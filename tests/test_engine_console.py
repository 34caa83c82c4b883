"""What a run tells its user, without training: thread choice, durations, commands and paths
that work as printed, where TensorBoard events go (and so the run's name there), the Custom
Scalars layout, which files count as a run's, and how a finished run is recognised."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from detector.engine.rundir import (
    final_row,
    results_file,
    run_files,
    shown_command,
    shown_path,
    tb_events_dir,
)
from detector.engine.trainer import choose_threads, duration


def test_threads_come_from_the_flag_then_the_environment_then_the_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(5)[0] == 5 and "--threads 5" in choose_threads(5)[1]
    assert choose_threads(None) == (3, "OMP_NUM_THREADS=3; --threads N to change")
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # set but empty: ignored, as OpenMP does
    assert choose_threads(None)[0] == 6
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert choose_threads(None)[0] == 6
    # two ranks on this host share its 6 CPUs
    assert choose_threads(None, world_size=2)[0] == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert choose_threads(None, world_size=8)[0] == 1  # 6 // 4


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (0.4, 42, 60, 185, 3600, 3725)] == [
        "0 s",
        "42 s",
        "1 min 00 s",
        "3 min 05 s",
        "1 h 00 min",
        "1 h 02 min",
    ]


def test_paths_are_shown_relative_below_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "runs" / "demo") == "runs/demo"
    assert shown_path("runs/demo") == "runs/demo"
    assert shown_path("/elsewhere/gt.json") == "/elsewhere/gt.json"
    assert shown_path(tmp_path / "my runs" / "a b.json") == "'my runs/a b.json'"


def test_console_scripts_are_shown_as_they_run(tmp_path, monkeypatch):
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    for name in ("python", "smalldet"):
        (venv / name).write_text("#!/bin/sh\n")
        (venv / name).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not active
    assert shown_command("smalldet") == ".venv/bin/smalldet"
    monkeypatch.setenv("PATH", f"{venv}:/usr/bin:/bin")  # it is
    assert shown_command("smalldet") == "smalldet"
    # not installed next to this Python: run the module with this Python
    assert shown_command("tensorboard") == ".venv/bin/python -m tensorboard.main"
    monkeypatch.chdir("/")
    assert shown_command("smalldet") == "smalldet"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert shlex.split(shown_command("smalldet")) == [str(venv / "smalldet")]


def test_tensorboard_events_go_to_a_folder_named_after_the_run(tmp_path):
    assert tb_events_dir(tmp_path / "demo") == tmp_path / "demo" / "tb" / "demo"
    # a study's runs/<variant>/seed<k>: the variant names it too
    run = tmp_path / "study" / "runs" / "dc5" / "seed1"
    assert tb_events_dir(run) == run / "tb" / "dc5_seed1"
    # an older run with its events directly in tb/ keeps writing there on resume
    old = tmp_path / "old"
    (old / "tb").mkdir(parents=True)
    (old / "tb" / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    assert tb_events_dir(old) == old / "tb"
    # a moved or renamed run keeps its one events folder
    moved = tmp_path / "renamed"
    (moved / "tb" / "before").mkdir(parents=True)
    (moved / "tb" / "before" / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    assert tb_events_dir(moved) == moved / "tb" / "before"


def _layout(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(tb_events_dir(run_dir)))
    acc.Reload()
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(event.tensor_proto).item())
    return {c.title: {ch.title: list(ch.multiline.tag) for ch in c.chart} for c in layout.category}


def test_custom_scalars_put_each_metrics_bins_in_one_chart(tmp_path):
    pytest.importorskip("tensorboard")
    from detector.engine.tb import RunLogger

    logger = RunLogger(tmp_path / "run", enabled=True, tensorboard=True)
    logger.layout(["all", "small", "medium"], [1, 100])
    logger.close()
    charts = _layout(tmp_path / "run")
    assert charts["eval: each metric by size bin"] == {
        "AP by size bin": ["^eval/AP/"],
        "AP50 by size bin": ["^eval/AP50/"],
        "AP75 by size bin": ["^eval/AP75/"],
        "AR@1 by size bin": ["^eval/AR@1/"],
        "AR@100 by size bin": ["^eval/AR@100/"],
    }
    assert charts["eval: TIDE errors (dAP50) by type"]["small: dAP50 by error type"] == [
        "^eval/errors_dAP50/small/"
    ]
    assert charts["train"]["losses"] == ["^train/loss/"]
    # other IoU thresholds: a chart for each AP<t> the evaluation reports, none that stays empty
    logger = RunLogger(tmp_path / "loose", enabled=True, tensorboard=True)
    logger.layout(["all"], [100], iou_thrs=[0.25, 0.5])
    logger.close()
    assert list(_layout(tmp_path / "loose")["eval: each metric by size bin"]) == [
        "AP by size bin",
        "AP25 by size bin",
        "AP50 by size bin",
        "AR@100 by size bin",
    ]


def test_detections_files_are_a_runs_files(tmp_path):
    assert results_file(tmp_path, 400, final=False) == tmp_path / "results_val_0000400.json"
    assert results_file(tmp_path, 800, final=True) == tmp_path / "results_val.json"
    for name in ("results_val_0000400.json", "results_val.json", "results_test.json", "notes.md"):
        (tmp_path / name).write_text("[]")
    # --overwrite moves them aside with the rest; a file of the user's stays
    assert [p.name for p in run_files(tmp_path)] == [
        "results_val.json",
        "results_val_0000400.json",
    ]


def test_a_run_is_finished_once_it_wrote_its_final_row(tmp_path):
    assert final_row(tmp_path) == {}
    rows = [
        {"type": "train", "iteration": 4},
        {"type": "final", "iteration": 4, "AP": 0.1},
        {"type": "resume", "iteration": 4},
        {"type": "final", "iteration": 6, "AP": 0.2},
    ]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"type": "final", "iter'  # cut by a kill
    Path(tmp_path / "metrics.jsonl").write_text(text)
    assert final_row(tmp_path) == {"type": "final", "iteration": 6, "AP": 0.2}
