"""The study runner for real, with a cheap fake training/evaluation command: skip finished runs,
resume interrupted ones, isolate failures, time out, one run per GPU slot, settings changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from detector.study import StudyRunner, load_study, run_state, write_report

ROOT = Path(__file__).resolve().parents[1]

# Fake train/eval: logs each call to <run_dir>/calls.jsonl; behaviour is chosen by the variant
# name: "crash" fails training, "badeval" fails evaluation, "slow" sleeps 3 s.
FAKE = r"""
import json, os, sys, time
from pathlib import Path
phase, run_dir, variant, seed = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
resume = "--resume" in sys.argv
run_dir.mkdir(parents=True, exist_ok=True)
call = {"phase": phase, "resume": resume, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "omp": os.environ.get("OMP_NUM_THREADS"), "start": time.time(),
        "overrides": [a for a in sys.argv[5:] if "=" in a]}
if variant == "slow":
    time.sleep(3)
if variant.startswith("pause"):
    time.sleep(0.4)
call["end"] = time.time()
with open(run_dir / "calls.jsonl", "a") as f:
    f.write(json.dumps(call) + "\n")
if phase == "train":
    (run_dir / "last_checkpoint").write_text("model_0000001.pth")
    if variant == "crash":
        print("RuntimeError: fake CUDA out of memory in", variant, file=sys.stderr)
        sys.exit(1)
    (run_dir / "model_final.pth").write_text("x")
    with open(run_dir / "metrics.jsonl", "a") as f:
        for i in range(3):
            f.write(json.dumps({"type": "train", "iteration": i, "img_per_s": 10.0 + i + seed,
                                "memory_mb": 100.0 + i}) + "\n")
else:
    if variant == "badeval":
        print("evaluation exploded", file=sys.stderr)
        sys.exit(3)
    ap = 0.3 + 0.01 * seed + (0.05 if variant != "a" else 0.0)
    summary = {"AP": ap, "AP50": ap + 0.2, "AP75": ap - 0.1, "AR@100": ap + 0.1,
               "AP_small": ap - 0.1, "AP50_small": ap, "AP75_small": ap - 0.2,
               "AR_small@100": ap}
    (run_dir / "results_val.json").write_text("[]")
    (run_dir / "study_eval.json").write_text(json.dumps({
        "summary": summary, "eval": {}, "gt_path": None, "num_images": 4,
        "inference_s_per_img": 0.5, "peak_memory": {"rss_mb": 50.0},
        "model_info": {"params": 1.5e6, "flops": 2e9, "output_stride": 16,
                       "receptive_field": 435}, "device": "cpu"}))
"""


def _study(tmp_path: Path, variants: list[str], **extra) -> Path:
    (tmp_path / "fake.py").write_text(FAKE)
    (tmp_path / "c.yaml").write_text("solver:\n  max_iter: 2\n")
    data = {
        "name": "t",
        "output": str(tmp_path / "out"),
        "seeds": [0, 1],
        "common": ["solver.lr=0.01"],
        "variants": {v: {"config": "c.yaml"} for v in variants},
        "command": [
            "{python}",
            str(tmp_path / "fake.py"),
            "train",
            "{run_dir}",
            "{variant}",
            "{seed}",
            "{resume}",
            "{overrides}",
        ],
        "eval_command": [
            "{python}",
            str(tmp_path / "fake.py"),
            "eval",
            "{run_dir}",
            "{variant}",
            "{seed}",
        ],
        "bootstrap": 0,
        **extra,
    }
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _calls(run_dir: Path) -> list[dict]:
    f = Path(run_dir) / "calls.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def test_runs_then_skips_finished(tmp_path):
    spec = load_study(_study(tmp_path, ["a", "b"]))
    out = StudyRunner(spec, echo=None).run_all()
    assert [o.status for o in out] == ["ok"] * 4
    for r in spec.runs():
        calls = _calls(r.run_dir)
        assert [c["phase"] for c in calls] == ["train", "eval"]
        assert not calls[0]["resume"]
        assert (
            f"seed={r.seed}" in calls[0]["overrides"] and "solver.lr=0.01" in calls[0]["overrides"]
        )
        assert run_state(r.run_dir) == "finished"
        assert json.loads((r.run_dir / "study_status.json").read_text())["status"] == "ok"
    again = StudyRunner(spec, echo=None).run_all()
    assert [o.status for o in again] == ["skipped"] * 4
    assert all(len(_calls(r.run_dir)) == 2 for r in spec.runs())


def test_only_and_seeds_select_the_runs(tmp_path):
    spec = load_study(_study(tmp_path, ["a", "b"]))
    out = StudyRunner(spec, echo=None, only=["b"], seeds=[1]).run_all()
    assert [o.run.key for o in out] == ["b/seed1"]
    ran = {r.key for r in spec.runs() if _calls(r.run_dir)}
    assert ran == {"b/seed1"}
    # the command line refuses a seed the study does not have, before anything runs
    proc = subprocess.run(
        [sys.executable, "-m", "detector.cli.main", "study", str(tmp_path / "study.yaml")]
        + ["--seeds", "7", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "--seeds: unknown seeds [7]; the study has [0, 1]" in proc.stderr


def test_interrupted_resumes_and_trained_only_evaluates(tmp_path):
    spec = load_study(_study(tmp_path, ["a"]))
    r0, r1 = spec.runs()
    r0.run_dir.mkdir(parents=True)
    (r0.run_dir / "last_checkpoint").write_text("model_0000100.pth")  # cut mid-training
    r1.run_dir.mkdir(parents=True)
    (r1.run_dir / "model_final.pth").write_text("x")  # trained, eval never ran
    assert run_state(r0.run_dir) == "interrupted" and run_state(r1.run_dir) == "trained"
    out = StudyRunner(spec, echo=None).run_all()
    assert [o.status for o in out] == ["ok", "ok"]
    c0 = _calls(r0.run_dir)
    assert [c["phase"] for c in c0] == ["train", "eval"] and c0[0]["resume"]
    assert [c["phase"] for c in _calls(r1.run_dir)] == ["eval"]


def test_failure_is_isolated_reported_and_retried(tmp_path):
    spec = load_study(_study(tmp_path, ["a", "crash", "badeval"]))
    out = {o.run.key: o for o in StudyRunner(spec, echo=None).run_all()}
    assert out["a/seed0"].status == out["a/seed1"].status == "ok"
    crash = out["crash/seed0"]
    assert crash.status == "failed" and "training failed: exit code 1" in crash.message
    assert "fake CUDA out of memory" in crash.log_tail
    assert out["badeval/seed1"].status == "failed"
    assert "evaluation failed: exit code 3" in out["badeval/seed1"].message
    status = json.loads((crash.run.run_dir / "study_status.json").read_text())
    assert status["status"] == "failed" and status["phase"] == "train" and status["attempts"] == 1

    agg = write_report(spec, tensorboard=False, plots=False)
    md = (spec.output / "report.md").read_text()
    assert "crash/seed0 failed" in md and "fake CUDA out of memory" in md
    assert "badeval/seed1 failed" in md
    assert agg["table"]["a"]["seeds_done"] == [0, 1]

    # the study goes again: the crashed run resumes from its checkpoint, badeval only re-evals
    out2 = {o.run.key: o for o in StudyRunner(spec, echo=None).run_all()}
    assert out2["a/seed0"].status == "skipped"
    assert _calls(crash.run.run_dir)[-1]["resume"] is True
    assert [c["phase"] for c in _calls(out["badeval/seed0"].run.run_dir)] == [
        "train",
        "eval",
        "eval",
    ]
    status = json.loads((crash.run.run_dir / "study_status.json").read_text())
    assert status["attempts"] == 2


def test_timeout_fails_the_run(tmp_path):
    spec = load_study(_study(tmp_path, ["slow"], seeds=[0], timeout=0.5))
    t0 = time.time()
    (o,) = StudyRunner(spec, echo=None).run_all()
    assert o.status == "failed" and "timed out" in o.message
    assert time.time() - t0 < 3


def test_one_run_per_gpu_slot_in_parallel(tmp_path):
    spec = load_study(_study(tmp_path, ["pause", "pause2"], seeds=[0, 1], gpus=["3", "5"]))
    runner = StudyRunner(spec, echo=None)
    assert runner.parallel == 2
    out = runner.run_all()
    assert all(o.status == "ok" for o in out)
    calls = [c for r in spec.runs() for c in _calls(r.run_dir) if c["phase"] == "train"]
    assert {c["gpu"] for c in calls} == {"3", "5"}
    # at least two training runs overlapped in time
    calls.sort(key=lambda c: c["start"])
    assert any(b["start"] < a["end"] for a, b in zip(calls, calls[1:]))


def test_cpu_parallel_splits_threads(tmp_path):
    spec = load_study(_study(tmp_path, ["a"], seeds=[0, 1]))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = (
        "import sys; from detector.study import load_study, StudyRunner;"
        f"s = load_study({str(tmp_path / 'study.yaml')!r});"
        "sys.exit(any(o.status != 'ok' for o in StudyRunner(s, parallel=2, echo=None).run_all()))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    omp = {_calls(r.run_dir)[0]["omp"] for r in spec.runs()}
    assert omp == {str(max(1, (os.cpu_count() or 1) // 2))}


def test_changed_settings_are_refused_for_unfinished_runs(tmp_path):
    p = _study(tmp_path, ["a"], seeds=[0])
    spec = load_study(p)
    (run,) = spec.runs()
    StudyRunner(spec, echo=None).run_all()
    (run.run_dir / "study_eval.json").unlink()  # pretend the run is half done
    (run.run_dir / "model_final.pth").unlink()
    data = yaml.safe_load(p.read_text())
    data["common"] = ["solver.lr=0.5"]
    p.write_text(yaml.safe_dump(data))
    spec = load_study(p)
    (o,) = StudyRunner(spec, echo=None).run_all()
    assert o.status == "failed" and "settings changed" in o.message and "solver.lr" in o.message
    (o,) = StudyRunner(spec, echo=None, allow_changed=True).run_all()
    assert o.status == "ok"


def test_a_key_added_by_newer_code_at_its_default_is_not_a_change(tmp_path):
    """A run recorded before a config key existed (here: solver.lr missing from its recorded
    config) resumes when the key now holds its default, and is refused when it does not."""
    from detector.config.defaults import DEFAULTS

    p = _study(tmp_path, ["a"], seeds=[0], common=[])  # solver.lr at its default
    spec = load_study(p)
    (run,) = spec.runs()
    StudyRunner(spec, echo=None).run_all()
    (run.run_dir / "study_eval.json").unlink()  # half done: trained, not evaluated
    settings_path = run.run_dir / "study_run.json"
    recorded = json.loads(settings_path.read_text())
    del recorded["resolved"]["solver"]["lr"]  # as if the key did not exist when it was made
    recorded["config_hash"] = "0" * 16
    settings_path.write_text(json.dumps(recorded))
    (o,) = StudyRunner(spec, echo=None).run_all()
    assert o.status == "ok", o.message  # lr is at its default: nothing changed
    assert (
        json.loads(settings_path.read_text())["resolved"]["solver"]["lr"]
        == (DEFAULTS["solver"]["lr"])
    )

    (run.run_dir / "study_eval.json").unlink()
    recorded = json.loads(settings_path.read_text())
    del recorded["resolved"]["solver"]["lr"]
    recorded["config_hash"] = "0" * 16
    settings_path.write_text(json.dumps(recorded))
    data = yaml.safe_load(p.read_text())
    data["common"] = ["solver.lr=0.5"]  # not the default: a real change
    p.write_text(yaml.safe_dump(data))
    (o,) = StudyRunner(load_study(p), echo=None).run_all()
    assert o.status == "failed" and "solver.lr: None -> 0.5" in o.message


def test_cli_dry_run_and_exit_codes(tmp_path):
    p = _study(tmp_path, ["a", "crash"], seeds=[0])
    tool = [sys.executable, str(ROOT / "tools" / "study.py"), str(p)]
    dry = subprocess.run([*tool, "--dry-run"], capture_output=True, text=True, cwd=ROOT)
    assert dry.returncode == 0 and "a/seed0" in dry.stdout and "train" in dry.stdout
    run = subprocess.run([*tool, "--no-tensorboard"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed" in run.stdout
    assert (tmp_path / "out" / "report.md").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: {a: {config: nope.yaml}}\n")
    r = subprocess.run([*tool[:2], str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "not found" in r.stderr


def test_finished_run_with_other_settings_is_skipped_with_a_warning(tmp_path):
    p = _study(tmp_path, ["a"], seeds=[0])
    StudyRunner(load_study(p), echo=None).run_all()
    data = yaml.safe_load(p.read_text())
    data["common"] = ["solver.lr=0.5"]
    p.write_text(yaml.safe_dump(data))
    spec = load_study(p)
    said = []
    (o,) = StudyRunner(spec, echo=said.append).run_all()
    assert o.status == "skipped" and "other settings" in o.message and "solver.lr" in o.message
    assert any("WARNING" in s for s in said)
    write_report(spec, tensorboard=False, plots=False)
    md = (spec.output / "report.md").read_text()
    assert "runs made with other settings" in md and "solver.lr: 0.01 -> 0.5" in md


def test_a_run_locked_by_a_live_process_is_left_alone(tmp_path):
    import socket

    spec = load_study(_study(tmp_path, ["a"], seeds=[0]))
    (run,) = spec.runs()
    run.run_dir.mkdir(parents=True)
    lock = run.run_dir / ".study.lock"
    lock.write_text(f"{os.getppid()}@{socket.gethostname()}")  # alive
    (o,) = StudyRunner(spec, echo=None).run_all()
    assert o.status == "failed" and "another study process" in o.message
    assert not _calls(run.run_dir)
    lock.write_text(f"999999999@{socket.gethostname()}")  # dead: taken over
    (o,) = StudyRunner(spec, echo=None).run_all()
    assert o.status == "ok" and not lock.exists()


def test_model_facts_size_is_a_real_image_size():
    from detector.config import load_config
    from detector.study.worker import input_size

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "aerial_cars.yaml")
    # the KIT AIS val sizes: the per-axis medians would give 430 x 1284, which no image has
    sizes = [(430, 1764)] * 5 + [(547, 684)] * 4 + [(377, 1284)] * 4
    gt = {"images": [{"id": i, "height": h, "width": w} for i, (h, w) in enumerate(sizes)]}
    assert input_size(cfg, gt) == (377, 1284)
    cfg.data.transforms.test_scale = 754  # short side 377 -> 754, long side capped at 2000
    assert input_size(cfg, gt) == (587, 2000)
    cfg.data.transforms.max_size = 3000
    assert input_size(cfg, gt) == (754, 2568)


@pytest.mark.filterwarnings("ignore:HDC check failed")  # the dc5 default rates
def test_worker_eval_refuses_a_model_of_another_variant_in_one_line(tmp_path, monkeypatch, capsys):
    """The eval phase loads through load_trained_model: a c5 model_final.pth under a dc5 run
    fails with the checkpoint's one-line message (in study.log), not a traceback."""
    import types

    from detector.config import load_config
    from detector.engine.checkpoint import atomic_save, config_fingerprint, model_signature
    from detector.models import build_detector
    from detector.study import worker

    c5 = load_config(None, ["model.variant=c5"])
    model = build_detector(c5, num_classes=2)
    run_dir = tmp_path / "run"
    atomic_save(
        {
            "format": "smalldet-checkpoint",
            "model": model.state_dict(),
            "fingerprint": config_fingerprint(c5, 2),
            "signature": {**model_signature(c5), "num_classes": 2},
        },
        run_dir / "model_final.pth",
    )
    (tmp_path / "dc5.yaml").write_text("model:\n  variant: dc5\n")
    fake_val = types.SimpleNamespace(num_classes=2, ann_file=str(tmp_path / "val.json"))
    monkeypatch.setattr("detector.data.build_dataset", lambda cfg, split: fake_val)
    rc = worker.main(
        ["eval", "--config", str(tmp_path / "dc5.yaml"), "--output", str(run_dir), "device=cpu"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "different model config" in err and "variant: 'c5' vs 'dc5'" in err
    assert not (run_dir / "study_eval.json").exists()


def test_eval_phase_reuses_the_trainers_final_detections_only_when_they_are_that_models(
    tmp_path,
):
    """The trainer's final evaluation already wrote the detections of model_final.pth: the
    study's eval phase takes them (no second inference pass) when every link holds, and
    falls back to its own inference when any one breaks."""
    from detector.config import load_config, save_config
    from detector.study.worker import trainer_results

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = load_config(None, [])
    trained = load_config(None, ["model.num_classes=2"])  # the trainer fills it from the data
    save_config(trained, run_dir / "config.yaml")
    (run_dir / "model_final.pth").write_bytes(b"weights")
    dets = [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9}] * 3
    (run_dir / "results_val.json").write_text(json.dumps(dets))
    rows = [
        {"type": "eval", "iteration": 5, "num_results": 4, "eval_time": 9.0},  # a mid-run eval
        {"type": "eval", "iteration": 10, "num_results": 3, "eval_time": 7.5},
        {"type": "final", "iteration": 10},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert trainer_results(run_dir, cfg) == (dets, 7.5)

    # a test-time setting changed since training: these detections are not the eval's
    assert trainer_results(run_dir, load_config(None, ["model.roi.score_thresh=0.5"])) is None
    # detections older than the weights (the weights were rewritten after that evaluation)
    old = (run_dir / "model_final.pth").stat().st_mtime_ns - 10**9
    os.utime(run_dir / "results_val.json", ns=(old, old))
    assert trainer_results(run_dir, cfg) is None
    os.utime(run_dir / "results_val.json")
    assert trainer_results(run_dir, cfg) == (dets, 7.5)
    # a count that disagrees with the final evaluation's row
    (run_dir / "results_val.json").write_text(json.dumps(dets[:2]))
    assert trainer_results(run_dir, cfg) is None
    (run_dir / "results_val.json").write_text(json.dumps(dets))
    # no eval row at the final iteration (eval.final: false): nothing to reuse
    rows[1]["iteration"] = 9
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert trainer_results(run_dir, cfg) is None
    # no final row: the run has not finished
    (run_dir / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert trainer_results(run_dir, cfg) is None
