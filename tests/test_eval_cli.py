"""`smalldet evaluate` / `smalldet compare` (= tools/evaluate.py, tools/compare.py), bootstrap,
plots and TensorBoard."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from detector.cli.compare import main as compare_main
from detector.cli.evaluate import main as evaluate_main
from detector.evaluation import evaluate
from detector.evaluation.bootstrap import paired_bootstrap, parse_metric_key
from detector.evaluation.synthetic import make_dataset


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    gt, res = make_dataset(60, seed=1, n_cats=3, dets_per_image=30)
    worse = [r for i, r in enumerate(res) if i % 3]
    (tmp / "gt.json").write_text(json.dumps(gt))
    (tmp / "a.json").write_text(json.dumps(res))
    (tmp / "b.json").write_text(json.dumps(worse))
    return tmp


def test_evaluate_cli_json_plots(files, capsys):
    out = files / "out"
    rc = evaluate_main(
        [
            "--gt",
            str(files / "gt.json"),
            "--results",
            str(files / "a.json"),
            "--bins",
            "aitod",
            "--max-dets",
            "1,10,100,300",
            "--json",
            str(out / "r.json"),
            "--plots",
            str(out / "plots"),
        ]
    )
    assert rc == 0
    assert "| verytiny |" in capsys.readouterr().out
    d = json.loads((out / "r.json").read_text())
    for key in ("AP", "AP50", "AP75", "AP_tiny", "AR_tiny@100", "AR@300", "errors", "bins"):
        assert key in d
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "errors.png",
        "pr_iou50.png",
        "pr_iou75.png",
        "recall_vs_iou.png",
    ]


def test_evaluate_cli_bad_input_exit_code(files, capsys):
    bad = files / "bad.json"
    bad.write_text(
        json.dumps([{"image_id": 12345, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
    )
    assert evaluate_main(["--gt", str(files / "gt.json"), "--results", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "image_id 12345" in err
    assert (
        evaluate_main(["--gt", str(files / "gt.json"), "--results", str(bad), "--bins", "0,8,4"])
        == 2
    )
    assert capsys.readouterr().err.startswith("error: --bins 0,8,4: ")  # names the flag


def test_evaluate_cli_model_branch(files, monkeypatch, capsys):
    pytest.importorskip("detector.engine.distributed")  # the real package, loaded before the fake
    res = json.loads((files / "a.json").read_text())
    calls = {}

    def run_inference(cfg, ckpt, images=None, ann=None, slicing=None):
        calls["args"] = (ckpt, images, ann)
        calls["slicing"] = slicing
        return res, str(files / "gt.json")

    mod = types.ModuleType("detector.engine.inference")
    mod.run_inference = run_inference
    monkeypatch.setitem(sys.modules, "detector.engine.inference", mod)
    monkeypatch.setattr("detector.cli.evaluate.load_cfg", lambda path, opts: {"device": "cpu"})
    out = files / "model" / "eval.json"
    ckpt = files / "m.pt"  # only its existence is checked before the (fake) inference
    ckpt.write_bytes(b"")
    rc = evaluate_main(
        ["--config", "c.yaml", "--checkpoint", str(ckpt), "--json", str(out), "--no-errors"]
    )
    assert rc == 0 and calls["args"] == (str(ckpt), None, None)
    assert calls["slicing"] is None  # whole images unless --slice is given
    assert len(json.loads((files / "model" / "eval_results.json").read_text())) == len(res)
    assert json.loads(out.read_text())["AP"] == pytest.approx(
        evaluate(files / "gt.json", res).summary["AP"]
    )


def test_compare_cli_and_paired_bootstrap(files, capsys):
    out = files / "cmp.json"
    rc = compare_main(
        [
            "--gt",
            str(files / "gt.json"),
            str(files / "a.json"),
            str(files / "b.json"),
            "--n",
            "30",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "AP_small" in text and "b − a" in text
    d = json.loads(out.read_text())
    assert set(d["metrics"]["AP"]) == {"a", "b"}
    res = paired_bootstrap(
        files / "gt.json", files / "a.json", files / "b.json", ["AP", "AR_small@100"], n=30
    )
    delta, lo, hi = res["AP"]
    assert lo <= hi
    a = evaluate(files / "gt.json", files / "a.json", errors=False).summary["AP"]
    b = evaluate(files / "gt.json", files / "b.json", errors=False).summary["AP"]
    assert delta == pytest.approx(b - a, abs=1e-12)
    # same run twice: the paired delta is exactly zero in every resample
    same = paired_bootstrap(files / "gt.json", files / "a.json", files / "a.json", ["AP"], n=10)
    assert same["AP"] == (0.0, 0.0, 0.0)
    # seeded: identical output on a rerun
    assert paired_bootstrap(
        files / "gt.json", files / "a.json", files / "b.json", ["AP"], n=10
    ) == paired_bootstrap(files / "gt.json", files / "a.json", files / "b.json", ["AP"], n=10)


def test_metric_keys():
    names, md = ["all", "small", "extremely_small"], (1, 10, 100)
    assert parse_metric_key("AP", names, md) == ("AP", "all", None)
    assert parse_metric_key("AP50_small", names, md) == ("AP50", "small", None)
    assert parse_metric_key("AR_extremely_small@10", names, md) == ("AR", "extremely_small", 10)
    for bad in ("AP_huge", "AR@7", "XX"):
        with pytest.raises(ValueError):
            parse_metric_key(bad, names, md)


def test_tensorboard_log_report(files):
    from detector.evaluation.tensorboard import log_report

    class Writer:
        def __init__(self):
            self.scalars, self.figures = {}, []

        def add_scalar(self, tag, v, step):
            self.scalars[tag] = (v, step)

        def add_figure(self, tag, fig, step, close=True):
            self.figures.append(tag)

        def flush(self):
            pass

    r = evaluate(files / "gt.json", files / "a.json", bins="coco")
    w = Writer()
    log_report(w, r, step=3)
    assert w.scalars["eval/AP/small"] == (r.summary["AP_small"], 3)
    assert "eval/AP50/all" in w.scalars and "eval/AR@100/large" in w.scalars
    assert any(t.startswith("eval/errors_dAP50/small/") for t in w.scalars)
    assert w.figures == ["eval/pr_curves_iou50", "eval/recall_vs_iou", "eval/errors"]
    p = r.pr_curve("all")
    assert p is not None and np.all(np.diff(p[1]) <= 1e-12)
