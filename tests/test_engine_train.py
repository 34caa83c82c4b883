"""End-to-end training runs on a tiny config (64 px synthetic images, R18 DC5 with GN, CPU).

- a run SIGKILLed mid-way and resumed ends bit-identical to an uninterrupted run;
- a non-finite loss stops the run naming iteration and component, keeping the last checkpoint;
- SIGTERM writes a checkpoint and exits with 143;
- the TensorBoard event files hold the losses, the lr, per-size-bin eval scalars and images,
  the Custom Scalars layout and an HParams entry named after the run with its real dilations;
- every evaluation leaves its detections in the run directory, and the ``smalldet evaluate``
  and ``smalldet compare`` commands the run prints work as printed;
- ``model_final.pth`` (a model file with the fingerprint) and a full training checkpoint give
  the same predictions;
- two short runs of the demo's config end with identical weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detector.config import load_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tools" / "train.py"


def test_sigkill_then_resume_is_bit_identical(tmp_path, tiny_cache, tiny_config, run_train):
    cfg = tiny_config(tmp_path / "tiny.yaml", tiny_cache)
    a = run_train(cfg, tmp_path / "a")
    assert a.returncode == 0, a.stderr[-3000:]

    b = run_train(cfg, tmp_path / "b", env={"SMALLDET_KILL_AT_ITER": "5"})
    assert b.returncode == -signal.SIGKILL, b.stderr[-3000:]
    assert not (tmp_path / "b" / "model_final.pth").exists()
    assert (tmp_path / "b" / "last_checkpoint").read_text().strip() == "model_0000004.pth"

    b2 = run_train(cfg, tmp_path / "b", "--resume")
    assert b2.returncode == 0, b2.stderr[-3000:]
    assert "resumed from" in b2.stdout and "at iteration 4" in b2.stdout

    # metrics.jsonl: the rows the killed run wrote after its checkpoint were dropped on resume
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if r["type"] == "train"] == [2, 4, 6]

    # model_final.pth is a smalldet-model file: the weights plus the config fingerprint
    fa = torch.load(tmp_path / "a" / "model_final.pth", weights_only=True)
    fb = torch.load(tmp_path / "b" / "model_final.pth", weights_only=True)
    assert fa["format"] == "smalldet-model" and fa["fingerprint"] == fb["fingerprint"]
    wa, wb = fa["model"], fb["model"]
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    # the optimizer state matches too
    ca = torch.load(tmp_path / "a" / "model_0000006.pth", weights_only=True)
    cb = torch.load(tmp_path / "b" / "model_0000006.pth", weights_only=True)
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiled_run_killed_and_resumed_is_bit_identical(
    tmp_path, tiny_cache, tiny_config, run_train
):
    # data.tiles: 48 px tiles from 32 px windows (scale 1.5) of the 64 px images; the resumed
    # run must cut the same tiles for the batches after its checkpoint
    tiles = {"enabled": True, "size": 48, "scale": 1.5, "positive_fraction": 0.5}
    extra = {"data": {"tiles": tiles}, "solver": {"max_iter": 4}}
    cfg = tiny_config(tmp_path / "tiles.yaml", tiny_cache, extra)
    a = run_train(cfg, tmp_path / "a")
    assert a.returncode == 0, a.stderr[-3000:]
    # the run's own config builds the tiled training set (the trainer calls build_dataset)
    from detector.data import RandomTile, build_dataset

    first = build_dataset(load_config(tmp_path / "a" / "config.yaml"), "train").transforms
    assert isinstance(first.transforms[0], RandomTile) and first.transforms[0].window == 32

    b = run_train(cfg, tmp_path / "b", env={"SMALLDET_KILL_AT_ITER": "3"})
    assert b.returncode == -signal.SIGKILL, b.stderr[-3000:]
    assert (tmp_path / "b" / "last_checkpoint").read_text().strip() == "model_0000002.pth"
    b2 = run_train(cfg, tmp_path / "b", "--resume")
    assert b2.returncode == 0, b2.stderr[-3000:]
    assert "at iteration 2" in b2.stdout

    wa = torch.load(tmp_path / "a" / "model_final.pth", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "model_final.pth", weights_only=True)["model"]
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert wa.keys() == wb.keys() and not different, different[:3]


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path, tiny_cache, tiny_config, run_train
):
    # a real blow-up: from iteration 5 the lr is multiplied by 1e30
    extra = {
        "solver": {"optimizer": "sgd", "max_iter": 10, "steps": [4], "gamma": 1.0e30},
        "checkpoint": {"period": 4},
    }
    cfg = tiny_config(tmp_path / "nan.yaml", tiny_cache, extra)
    out = tmp_path / "run"
    proc = run_train(cfg, out)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    m = re.search(r"iteration (\d+): (loss_\w+) is (nan|inf|-inf)", proc.stderr)
    assert m, proc.stderr[-3000:]
    failed_at = int(m.group(1))
    assert failed_at > 4
    assert "Last good checkpoint" in proc.stderr and "model_0000004.pth" in proc.stderr
    assert not (out / "model_final.pth").exists()
    ckpts = sorted(p.name for p in out.glob("model_*.pth"))
    assert ckpts == ["model_0000004.pth"]
    state = torch.load(out / "model_0000004.pth", weights_only=True)
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_sigterm_saves_a_checkpoint(tmp_path, tiny_cache, tiny_config):
    cfg = tiny_config(
        tmp_path / "t.yaml",
        tiny_cache,
        {"solver": {"max_iter": 200}, "checkpoint": {"period": 0}, "log": {"period": 1}},
    )
    out = tmp_path / "run"
    env = {"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    import os

    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), "--config", str(cfg), "--output", str(out)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM" in err
    ckpt = (out / "last_checkpoint").read_text().strip()
    state = torch.load(out / ckpt, weights_only=True)
    assert 1 <= state["iteration"] < 200


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, tiny_cache, tiny_config):
    """A 4-iteration run evaluated at 2 and at the end: ``(run dir, final metrics, stdout)``."""
    from detector.engine.trainer import train

    root = tmp_path_factory.mktemp("evaluated")
    path = tiny_config(
        root / "tb.yaml",
        tiny_cache,
        {
            "deterministic": False,
            # 2 micro-batches of 1 image per iteration, with gradient clipping
            "solver": {"max_iter": 4, "accumulate": 2, "clip_grad_norm": 5.0},
            "eval": {"period": 2, "final": True, "vis_images": 2},
            "checkpoint": {"period": 0, "best_metric": "AP_small"},
        },
    )
    out = root / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        final = train(load_config(path), out, threads=1)
    return out, final, printed.getvalue()


def test_tensorboard_events_and_final_checkpoint_forms(evaluated_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    from detector.engine.inference import run_inference

    out, final, _ = evaluated_run
    assert final["iteration"] == 4 and "AP_small" in final

    # the events sit in tb/<run name>/: TensorBoard lists the run (and its HParams) as "run"
    assert [p.name for p in (out / "tb").iterdir()] == ["run"]
    acc = EventAccumulator(str(out / "tb" / "run"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in (
        "train/loss/total",
        "train/loss/loss_classifier",
        "train/lr",
        "train/img_per_s",
        "train/data_time",
        "train/compute_time",
        "train/memory_mb",
    ):
        assert tag in scalars, sorted(scalars)
    assert "eval/AP/small" in scalars and any(t.startswith("eval/AR@100/") for t in scalars)
    assert [e.step for e in acc.Scalars("eval/AP/small")] == [2, 4]
    assert len(acc.Scalars("train/loss/total")) == 2
    images = set(acc.Tags()["images"])
    assert {"val_images/0", "val_images/1"} <= images
    assert "eval/pr_curves_iou50" in images  # per-size PR curves, as a figure
    assert "hparam/AP_small" in scalars  # the HParams metrics of the run
    assert acc.Tags()["tensors"] == ["custom_scalars__config__"]  # one chart per metric
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(out / "tb"))
    mux.Reload()
    ((run, contents),) = mux.PluginRunToTagToContent("hparams").items()
    infos = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in contents.values()]
    (start,) = [i.session_start_info for i in infos if i.HasField("session_start_info")]
    shown = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert run == "run" and shown["model.variant"] == "dc5"
    # R18 DC5: layer4's two blocks, two 3x3 convs each, at rate 2 (the config says {})
    assert json.loads(shown["model.backbone.dilations"]) == {"layer4": [2, 2, 2, 2]}

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["type"] == "eval"]
    assert [r["iteration"] for r in evals] == [2, 4]
    assert evals[-1]["num_images"] == evals[-1]["num_unique_images"] == 4
    assert (out / "model_best.pth").exists() and (out / "config.yaml").exists()
    # every evaluation left its detections in the run directory
    for name, row in zip(("results_val_0000002.json", "results_val.json"), evals):
        assert len(json.loads((out / name).read_text())) == row["num_results"]

    # tools/evaluate.py --checkpoint: the bare state dict and a training checkpoint agree
    saved = load_config(out / "config.yaml")
    r_final, gt = run_inference(saved, out / "model_final.pth")
    r_full, _ = run_inference(saved, out / "model_0000004.pth")
    assert r_final == r_full and gt.endswith(".json")


def _printed(stdout: str, command: str) -> list[str]:
    """The one printed ``smalldet <command> ...`` line, as argv."""
    lines = [ln for ln in stdout.splitlines() if re.search(rf"smalldet\S* {command} ", ln)]
    assert len(lines) == 1, stdout[-3000:]
    return shlex.split(lines[0])


def test_printed_commands_work_as_printed(evaluated_run):
    out, _, stdout = evaluated_run
    # the tree under test, also where it is not the installed one (a copy of the checkout)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    evaluate = _printed(stdout, "evaluate")
    gt = Path(evaluate[evaluate.index("--gt") + 1])
    assert gt.name == "annotations.json" and gt.is_file()  # the real val set, not a guess
    assert evaluate[evaluate.index("--results") + 1] == str(out / "results_val.json")
    proc = subprocess.run(evaluate, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [ln for ln in stdout.splitlines() if ln.startswith("| all |")]
    assert table and table[0] in proc.stdout.splitlines()  # the very table the run printed

    compare = _printed(stdout, "compare")
    files = [a for a in compare if a.endswith(".json") and a != str(gt)]
    assert files == [str(out / "results_val_0000002.json"), str(out / "results_val.json")]
    proc = subprocess.run(
        [*compare, "--n", "50"], capture_output=True, text=True, timeout=240, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iter4 − iter2 [95% CI]" in proc.stdout
    # 64 px images hold no object above 96 px: said as evaluate says it, not as NaN
    assert re.search(r"^\| AP_large \| no objects \|", proc.stdout, re.M)
    assert "nan" not in proc.stdout

    tensorboard = [ln.strip() for ln in stdout.splitlines() if "--logdir" in ln]
    assert tensorboard and tensorboard[-1].endswith(f"--logdir {out / 'tb'}")
    assert Path(shlex.split(tensorboard[-1])[0]).name == "tensorboard"


def test_two_short_runs_of_the_demo_config_end_with_identical_weights(tmp_path, tiny_cache):
    """The demo as configured (AdamW, GN, not `deterministic`, one loader worker), shrunk to two
    iterations of two tiny images: two runs agree bit for bit, and both moved off the init."""
    from detector.engine import distributed as du
    from detector.engine.trainer import train
    from detector.models import build_detector

    small = [
        f"data.builtin.cache_dir={tiny_cache}",
        "data.builtin.num_train=8",
        "data.builtin.num_val=0",
        "data.builtin.image_size=64",
        "data.transforms.train_scales=[128]",
        "data.transforms.crop_size=96",
        "data.transforms.test_scale=128",
        "solver.max_iter=2",
        "solver.ims_per_batch=2",
        "solver.warmup_iters=1",
        "checkpoint.period=0",
        "eval.period=0",
        "eval.final=false",
        "log.progress=false",
        "log.tensorboard=false",
    ]
    cfg = load_config(ROOT / "configs" / "demo.yaml", small)
    assert not cfg.deterministic and cfg.data.num_workers == 1 and cfg.solver.optimizer == "adamw"
    threads = torch.get_num_threads()
    weights = {}
    for name in ("a", "b"):
        with contextlib.redirect_stdout(io.StringIO()):
            train(cfg, tmp_path / name, threads=1)
        weights[name] = torch.load(tmp_path / name / "model_final.pth", weights_only=True)
    assert torch.get_num_threads() == threads  # the run gave back the thread count it set
    a, b = weights["a"]["model"], weights["b"]["model"]
    assert weights["a"]["iteration"] == 2 and a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    du.seed_all(cfg.seed)  # the trainer's init: the same weights before the first step
    init = build_detector(cfg, num_classes=5).state_dict()
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], init[k])]
    assert len(moved) > len(a) // 2, f"only {len(moved)} of {len(a)} tensors were trained"
