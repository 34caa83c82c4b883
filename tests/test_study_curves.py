"""Learning curves on one tiny real run (64 px synthetic images, CPU, 6 iterations, a checkpoint
every 2 kept): one point per checkpoint, the last one exactly ``smalldet evaluate``'s number for
``model_final.pth``, cached so a second call runs no model, a rewritten checkpoint rescored and a
corrupt one reported; ``smalldet curve`` prints, writes JSON and a PNG; the study report gets a
"Learning curves" section without scoring anything itself.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from detector.cli.curve import main as curve_main
from detector.cli.evaluate import main as evaluate_main
from detector.config import load_config
from detector.study import load_study, write_report
from detector.study.curves import learning_curve, read_curve

pytestmark = pytest.mark.slow

METRICS = ("AP", "AP50", "AR@100")


def _no_inference(*args, **kwargs):
    raise AssertionError("a cached or recorded point must not run the model")


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_cache, tiny_config, run_train):
    """A study of two variants: ``a`` trained for real (checkpoints at 2, 4, 6, all kept) and
    scored once by learning_curve; ``b`` only the trainer's eval rows in its metrics.jsonl."""
    root = tmp_path_factory.mktemp("curves")
    cfg = tiny_config(root / "tiny.yaml", tiny_cache, {"checkpoint": {"keep_last": 0}})
    data = {
        "name": "curves",
        "output": str(root / "study"),
        "baseline": "a",
        "seeds": [0],
        "variants": {"a": "tiny.yaml", "b": "tiny.yaml"},
        "bootstrap": 0,
    }
    (root / "study.yaml").write_text(yaml.safe_dump(data))
    spec = load_study(root / "study.yaml")
    run_a, run_b = (r.run_dir for r in spec.runs())
    proc = run_train(cfg, run_a)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_b.mkdir(parents=True)
    rows = [
        {"type": "train", "iteration": 2, "img_per_s": 3.0},
        {"type": "eval", "iteration": 2, "AP": 0.1, "AP50": 0.3, "AP_small": 0.05, "eval_time": 1},
        {"type": "eval", "iteration": 6, "AP": 0.2, "AP50": 0.4, "AP_small": 0.1, "eval_time": 1},
    ]
    (run_b / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    points = learning_curve(run_a, metrics=METRICS)
    return {"root": root, "spec": spec, "a": run_a, "b": run_b, "points": points}


def test_one_point_per_checkpoint_equal_to_evaluate_then_cached(study, monkeypatch, capsys):
    run, points = study["a"], study["points"]
    assert sorted(p.name for p in run.glob("model_*.pth")) == [
        "model_0000002.pth",
        "model_0000004.pth",
        "model_0000006.pth",
        "model_final.pth",
    ]
    assert [p["iteration"] for p in points] == [2, 4, 6]
    assert {p["source"] for p in points} == {"evaluated"}
    assert points[-1]["checkpoint"] == "model_final.pth"  # the run's end, kept whatever prunes
    assert sorted(p.name for p in (run / "curve").iterdir()) == [
        "eval_0000002.json",
        "eval_0000004.json",
        "eval_0000006.json",
    ]

    # the last point is what `smalldet evaluate` says about model_final.pth with the run's
    # own eval settings: the same numbers, exactly
    cfg = load_config(run / "config.yaml")
    out = study["root"] / "final_eval.json"
    rc = evaluate_main(
        [
            *("--config", str(run / "config.yaml"), "--checkpoint", str(run / "model_final.pth")),
            *("--bins", str(cfg.eval.bins), "--backend", cfg.eval.backend, "--json", str(out)),
            *("--max-dets", ",".join(str(d) for d in cfg.eval.max_dets)),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    ref = json.loads(out.read_text())
    cached = json.loads((run / "curve" / "eval_0000006.json").read_text())
    assert cached["num_results"] == len(
        json.loads((out.parent / "final_eval_results.json").read_text())
    )
    assert cached["summary"] == {k: ref[k] for k in cached["summary"]}
    assert all(points[-1][m] == ref[m] for m in METRICS)

    # a second call, and the report's reader, run no model
    monkeypatch.setattr("detector.engine.inference.run_inference", _no_inference)
    again = learning_curve(run, metrics=METRICS)
    assert {p["source"] for p in again} == {"cache"}
    strip = [{k: p[k] for k in ("iteration", *METRICS)} for p in points]
    assert [{k: p[k] for k in ("iteration", *METRICS)} for p in again] == strip
    assert [{k: p[k] for k in ("iteration", *METRICS)} for p in read_curve(run)] == strip


def test_rewritten_checkpoint_rescored_corrupt_one_reported(study, tmp_path, monkeypatch):
    from detector.engine import inference

    run = tmp_path / "copy"
    shutil.copytree(study["a"], run)  # copy2 keeps sizes and mtimes: the cache still holds
    calls = []
    real = inference.run_inference

    def counting(cfg, ckpt, *args, **kwargs):
        calls.append(Path(ckpt).name)
        return real(cfg, ckpt, *args, **kwargs)

    monkeypatch.setattr("detector.engine.inference.run_inference", counting)
    st = (run / "model_0000004.pth").stat()
    os.utime(run / "model_0000004.pth", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    whole = (run / "model_0000002.pth").read_bytes()
    (run / "model_0000003.pth").write_bytes(whole[: len(whole) // 2])  # a truncated copy

    points = learning_curve(run, metrics=METRICS)
    assert sorted(calls) == ["model_0000003.pth", "model_0000004.pth"]
    by_it = {p["iteration"]: p for p in points}
    assert [p["iteration"] for p in points] == [2, 3, 4, 6]
    assert by_it[3]["source"] == "error" and "corrupt or truncated" in by_it[3]["error"]
    assert by_it[3]["AP"] is None
    assert not (run / "curve" / "eval_0000003.json").exists()  # errors are not cached
    assert by_it[4]["source"] == "evaluated" and by_it[2]["source"] == by_it[6]["source"] == "cache"
    same = {p["iteration"]: p["AP"] for p in study["points"]}
    assert by_it[4]["AP"] == same[4]  # same weights, same number


def test_curve_cli_table_json_and_png(study, monkeypatch, capsys):
    monkeypatch.setattr("detector.engine.inference.run_inference", _no_inference)
    root = study["root"]
    png, js = root / "cli" / "curves.png", root / "cli" / "curves.json"
    rc = curve_main(
        [str(study["a"]), str(study["b"]), "--metric", "AP", "--metric", "AP50"]
        + ["--label", "a", "--label", "b", "--json", str(js), "--plot", str(png)]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = captured.out
    assert "## AP (%)" in out and "## AP50 (%)" in out and "| iteration | a | b |" in out
    ap = {p["iteration"]: p["AP"] for p in study["points"]}
    assert f"| 4 | {100 * ap[4]:.1f} | – |" in out  # b has no point at 4
    assert f"| 6 | {100 * ap[6]:.1f} | 20.0 |" in out
    assert png.stat().st_size > 1000
    data = json.loads(js.read_text())
    assert data["metrics"] == ["AP", "AP50"]
    assert [p["iteration"] for p in data["runs"][1]["points"]] == [2, 6]
    assert {p["source"] for p in data["runs"][1]["points"]} == {"metrics"}

    # default labels and metrics: the shortest distinct path tails, AP, AP50, the smallest bin
    assert curve_main([str(study["a"]), str(study["b"])]) == 0
    out = capsys.readouterr().out
    assert "| iteration | a/seed0 | b/seed0 |" in out and "## AP_small (%)" in out

    # a missing directory, one without checkpoints, a metric no run has: one error line each
    empty = root / "empty"
    empty.mkdir()
    for argv, words in (
        ([str(root / "nope")], "no such run directory"),
        ([str(empty)], "no checkpoints"),
        ([str(study["b"]), "--metric", "AP_smal"], "did you mean 'AP_small'"),
    ):
        assert curve_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, err


def test_report_learning_curves_section(study, monkeypatch):
    monkeypatch.setattr("detector.engine.inference.run_inference", _no_inference)
    agg = write_report(study["spec"], tensorboard=False)
    out = Path(study["spec"].output)
    md = (out / "report.md").read_text()
    lc = agg["learning_curves"]
    assert lc["metrics"] == ["AP", "AP50", "AP_small"]
    assert [r["iteration"] for r in lc["variants"]["a"]["points"]] == [2, 4, 6]
    assert [r["iteration"] for r in lc["variants"]["b"]["points"]] == [2, 6]
    assert "## Learning curves" in md and "**AP_small**" in md
    assert "| iteration | a | b |" in md and "| 6 |" in md and " 20.0 |" in md
    assert "| 4 |" in md and md.split("| 4 |")[1].split("\n")[0].endswith("| – |")
    assert (out / "learning_curves.png").stat().st_size > 1000
    assert "![learning_curves.png](learning_curves.png)" in md
